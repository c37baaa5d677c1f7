//! Softmax over the last dimension (attention weights), optionally of scaled inputs (attention's
//! `1 / sqrt(d)`, fused), with its backward `dx = scale * y * (dy - sum(dy * y))` computed from
//! the result. candle's fast `softmax_last_dim` has no backward; its differentiable `softmax`
//! runs on other devices.

use super::{contiguous_f32, exp_f32};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Softmax of `x` over its last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    scaled_softmax_last_dim(x, 1.0)
}

/// Softmax of `x * scale` over the last dimension of `x` (`scale` > 0).
pub fn scaled_softmax_last_dim(x: &Tensor, scale: f32) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return candle_nn::ops::softmax(&(x * scale as f64)?, D::Minus1);
    }
    x.contiguous()?.apply_op1(Softmax { scale })
}

/// The gradient of the input of [`scaled_softmax_last_dim`] from its result `y` and the
/// result's gradient `grad`.
pub fn scaled_softmax_backward(y: &Tensor, grad: &Tensor, scale: f32) -> Result<Tensor> {
    y.contiguous()?
        .apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward { scale })
}

/// Softmax of `row * scale` in place (`scale` > 0); inline, for vectorised loops.
#[inline(always)]
pub(crate) fn softmax_row(row: &mut [f32], scale: f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) * scale;
    row.iter_mut().for_each(|v| *v = exp_f32(*v * scale - max));
    let inv = 1.0 / row.iter().sum::<f32>();
    row.iter_mut().for_each(|v| *v *= inv);
}

/// The gradient of a [`softmax_row`]'s input from its result `y` and, in `grad`, the result's
/// gradient, which it replaces: `scale * y * (dy - sum(dy * y))`. Inline, for vectorised loops.
#[inline(always)]
pub(crate) fn softmax_backward_row(grad: &mut [f32], y: &[f32], scale: f32) {
    let dot: f32 = y.iter().zip(grad.iter()).map(|(a, b)| a * b).sum();
    for (g, y) in grad.iter_mut().zip(y) {
        *g = scale * y * (*g - dot);
    }
}

/// Rows per parallel task.
const ROWS: usize = 32;

struct Softmax {
    scale: f32,
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let c = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let scale = self.scale;
        let mut y = x.to_vec();
        y.par_chunks_mut(c * ROWS).for_each(|rows| {
            crate::vectorized! {
                rows.chunks_mut(c).for_each(|row| softmax_row(row, scale));
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(scaled_softmax_backward(res, grad, self.scale)?))
    }
}

/// `scale * y * (dy - sum(dy * y))` per row, from the softmax result `y` and its gradient `dy`.
struct SoftmaxBackward {
    scale: f32,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "softmax-last-dim-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = contiguous_f32(s1, l1)?;
        let dy = contiguous_f32(s2, l2)?;
        let c = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let scale = self.scale;
        let mut dx = dy.to_vec();
        dx.par_chunks_mut(c * ROWS)
            .zip(y.par_chunks(c * ROWS))
            .for_each(|(dxs, ys)| {
                crate::vectorized! {
                    for (dxr, yr) in dxs.chunks_mut(c).zip(ys.chunks(c)) {
                        softmax_backward_row(dxr, yr, scale);
                    }
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
        let x = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (2, 3, 7, 9), &Device::Cpu)? * 3.0)?)?;
        let ours = softmax_last_dim(x.as_tensor())?;
        let want = candle_nn::ops::softmax(x.as_tensor(), D::Minus1)?;
        assert!(max_abs_diff(&ours, &want)? < 1e-6);
        check_gradients(&[&x], |t| softmax_last_dim(t[0]))
    }

    #[test]
    fn the_scaled_softmax_matches_candle_and_finite_differences() -> Result<()> {
        let x = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (2, 3, 7, 9), &Device::Cpu)? * 3.0)?)?;
        let ours = scaled_softmax_last_dim(x.as_tensor(), 0.125)?;
        let want = candle_nn::ops::softmax(&(x.as_tensor() * 0.125)?, D::Minus1)?;
        assert!(max_abs_diff(&ours, &want)? < 1e-6);
        check_gradients(&[&x], |t| scaled_softmax_last_dim(t[0], 0.125))
    }
}
