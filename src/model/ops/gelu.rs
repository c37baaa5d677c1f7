//! The exact, erf-based GELU (`nn.GELU()`) fused with the bias before it ([`bias_gelu`], the
//! MLPs of ConvNeXt and ViT), in parallel, with its backward in one pass. candle's GELU runs on
//! one thread and its backward records ten elementwise operations.

use super::{contiguous_f32, exp_f32, map_rows, sum_in_order};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::f32::consts::FRAC_1_SQRT_2;

/// Rows per parallel task (a task's partial sums of the bias gradient are summed in order).
const ROWS_PER_TASK: usize = 64;

/// `gelu(x + bias)` with `bias` broadcast over the last dimension of `x`.
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.broadcast_add(bias)?.gelu_erf();
    }
    x.contiguous()?.apply_op2(&bias.contiguous()?, BiasGelu)
}

/// Gradients of `x` and `bias` of [`bias_gelu`] from the output's gradient `grad`, in one pass.
pub fn bias_gelu_backward(x: &Tensor, bias: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, c) = (x.elem_count(), bias.elem_count());
    let packed = x.contiguous()?.apply_op3_no_bwd(
        &bias.contiguous()?,
        &grad.contiguous()?,
        &BiasGeluGrad,
    )?;
    Ok((
        packed.narrow(0, 0, n)?.reshape(x.shape())?,
        packed.narrow(0, n, c)?,
    ))
}

/// erf as a rational function of `x` clamped to [-4, 4] (beyond, erf is ±1 in f32): Eigen's and
/// XLA's single-precision `erf`, within a few ulp of libm's, free of branches so that loops over
/// it vectorise (libm's scalar `erff` was 12 % of a ConvNeXt pass).
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const BETA: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ALPHA[1..].iter().fold(ALPHA[0], |acc, &a| acc * x2 + a);
    let q = BETA[1..].iter().fold(BETA[0], |acc, &b| acc * x2 + b);
    x * p / q
}

/// `gelu(z)`, erf-based.
#[inline(always)]
pub(crate) fn gelu_f32(z: f32) -> f32 {
    0.5 * z * (1.0 + erf_f32(z * FRAC_1_SQRT_2))
}

/// `d gelu / dz = Phi(z) + z * phi(z)`.
#[inline(always)]
pub(crate) fn gelu_grad(z: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    0.5 * (1.0 + erf_f32(z * FRAC_1_SQRT_2)) + z * INV_SQRT_2PI * exp_f32(-0.5 * z * z)
}

struct BiasGelu;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        let y = map_rows(
            x,
            b,
            #[inline(always)]
            |x, b| gelu_f32(x + b),
        );
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gb) = bias_gelu_backward(x, b, grad)?;
        Ok((Some(gx), Some(gb)))
    }
}

/// (x, bias, grad) to `[gx (numel), gbias (C)]` in one pass.
struct BiasGeluGrad;

impl candle_core::CustomOp3 for BiasGeluGrad {
    fn name(&self) -> &'static str {
        "bias-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1)?;
        let b = contiguous_f32(s2, l2)?;
        let g = contiguous_f32(s3, l3)?;
        let c = b.len();
        let n = x.len();
        // Allocated with room for the sums: growing it afterwards would copy all of it.
        let mut packed = vec![0f32; n + c];
        let (gx, tail) = packed.split_at_mut(n);
        let partials: Vec<Vec<f32>> = gx
            .par_chunks_mut(c * ROWS_PER_TASK)
            .zip(x.par_chunks(c * ROWS_PER_TASK))
            .zip(g.par_chunks(c * ROWS_PER_TASK))
            .map(|((gx, x), g)| {
                crate::vectorized! {
                    let mut sb = vec![0f32; c];
                    for ((gx, x), g) in gx.chunks_mut(c).zip(x.chunks(c)).zip(g.chunks(c)) {
                        for ((((gx, &x), &g), &b), s) in
                            gx.iter_mut().zip(x).zip(g).zip(b).zip(sb.iter_mut())
                        {
                            *gx = g * gelu_grad(x + b);
                            *s += *gx;
                        }
                    }
                    sb
                }
            })
            .collect();
        tail.copy_from_slice(&sum_in_order(partials, c));
        Ok((CpuStorage::F32(packed), Shape::from(n + c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{check_gradients, max_abs_diff};
    use candle_core::{Device, Var};

    #[test]
    fn erf_matches_libm_to_a_few_ulp() {
        for i in -6000..=6000 {
            let x = i as f32 * 1e-3;
            let (got, want) = (erf_f32(x), candle_core::cpu::erf::erf_f32(x));
            assert!(
                (got - want).abs() <= 4.0 * f32::EPSILON * want.abs().max(1e-3),
                "erf({x})"
            );
        }
    }

    #[test]
    fn forward_matches_candle() -> Result<()> {
        let x = (Tensor::randn(0f32, 1.0, (37, 40), &Device::Cpu)? * 3.0)?;
        let b = Tensor::randn(0f32, 1.0, 40, &Device::Cpu)?;
        let want = x.broadcast_add(&b)?.gelu_erf()?;
        assert!(max_abs_diff(&bias_gelu(&x, &b)?, &want)? < 1e-5);
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        // More rows than one task holds, so that partial bias sums are combined.
        let x = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (130, 8), &dev)? * 2.0)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, 8, &dev)?)?;
        check_gradients(&[&x, &b], |t| bias_gelu(t[0], t[1]))
    }
}
