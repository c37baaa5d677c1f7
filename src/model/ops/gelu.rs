//! GELU with the exact erf form (`nn.GELU()`), in parallel, with its backward
//! `dy * (Φ(x) + x φ(x))` in one pass. candle's `gelu_erf` runs on one thread and differentiates
//! through about ten tensor operations; it runs on other devices.

use super::contiguous_f32;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x * Φ(x)`, Φ the standard normal distribution function.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(Gelu)
}

/// Elements per parallel task.
const CHUNK: usize = 8192;

/// Φ(x).
#[inline]
fn cdf(x: f32) -> f32 {
    0.5 * (1.0 + candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let mut y = x.to_vec();
        y.par_chunks_mut(CHUNK)
            .for_each(|c| c.iter_mut().for_each(|v| *v *= cdf(*v)));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2(&grad.contiguous()?, GeluBackward)?))
    }
}

/// `dy * (Φ(x) + x φ(x))` from the input `x` and the gradient `dy`.
struct GeluBackward;

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "gelu-erf-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1)?;
        let dy = contiguous_f32(s2, l2)?;
        let inv_sqrt_2pi = 0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
        let mut dx = dy.to_vec();
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(d, x)| {
                for (d, &x) in d.iter_mut().zip(x) {
                    *d *= cdf(x) + x * inv_sqrt_2pi * (-0.5 * x * x).exp();
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{check_gradients, max_abs_diff};
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_and_finite_differences() -> Result<()> {
        let x = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (4, 50), &Device::Cpu)? * 2.0)?)?;
        assert!(max_abs_diff(&gelu(x.as_tensor())?, &x.as_tensor().gelu_erf()?)? < 1e-6);
        check_gradients(&[&x], |t| gelu(t[0]))
    }
}
