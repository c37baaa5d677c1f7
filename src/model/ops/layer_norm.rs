//! LayerNorm over the last dimension (channels-last), `y = (x - mean) / sqrt(var + eps) * w + b`
//! per row, with one backward pass for input, weight and bias. candle's elementwise operations
//! run on one thread and a LayerNorm composed of them records a dozen of them per call.

use super::{contiguous_f32, sum_in_order};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Rows per parallel task (a task's partial sums of the weight gradients are summed in order).
const ROWS_PER_TASK: usize = 64;

/// LayerNorm of `x` `[..., C]` over its last dimension with `weight` and `bias` `[C]`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return composed(x, weight, bias, eps);
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNorm { eps },
    )
}

/// Gradients of the input, weight and bias of [`layer_norm`] of `x` with `weight`, from the
/// output's gradient `grad`, in one pass (the moments recomputed from `x`).
pub fn layer_norm_backward(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c) = (x.elem_count(), weight.elem_count());
    let packed = x.contiguous()?.apply_op3_no_bwd(
        &weight.contiguous()?,
        &grad.contiguous()?,
        &LayerNormGrad { eps },
    )?;
    Ok((
        packed.narrow(0, 0, n)?.reshape(x.shape())?,
        packed.narrow(0, n, c)?,
        packed.narrow(0, n + c, c)?,
    ))
}

/// Mean and `1 / sqrt(var + eps)` of one row (two passes, as PyTorch computes them).
#[inline]
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// One row's LayerNorm: `y = (x - mean) * rstd * w + b`.
#[inline]
pub(crate) fn normalize_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
    let (mean, rstd) = moments(x, eps);
    for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
        *y = (x - mean) * rstd * w + b;
    }
}

/// One row's backward: the input's gradient `gx` from the input `x` and the output's gradient
/// `g`, with `g * xhat` added to `sw` and `g` to `sb` (the weight's and bias's gradients).
#[inline]
pub(crate) fn backward_row(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    eps: f32,
    gx: &mut [f32],
    sw: &mut [f32],
    sb: &mut [f32],
) {
    // xhat = (x - mean) * rstd; gh = g * w;
    // gx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)); gw += g * xhat; gb += g.
    let (mean, rstd) = moments(x, eps);
    let (mut m1, mut m2) = (0f32, 0f32);
    for (((&x, &g), &w), (aw, ab)) in x.iter().zip(g).zip(w).zip(sw.iter_mut().zip(sb.iter_mut())) {
        let xhat = (x - mean) * rstd;
        let gh = g * w;
        m1 += gh;
        m2 += gh * xhat;
        *aw += g * xhat;
        *ab += g;
    }
    let inv_c = 1.0 / w.len() as f32;
    let (m1, m2) = (m1 * inv_c, m2 * inv_c);
    for (((gx, &x), &g), &w) in gx.iter_mut().zip(x).zip(g).zip(w) {
        let xhat = (x - mean) * rstd;
        *gx = rstd * (g * w - m1 - xhat * m2);
    }
}

/// LayerNorm of every row of `x` (rows of `w.len()` values) into `out`, in parallel.
pub(crate) fn normalize_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let c = w.len();
    out.par_chunks_mut(c * ROWS_PER_TASK)
        .zip(x.par_chunks(c * ROWS_PER_TASK))
        .for_each(|(out, x)| {
            crate::vectorized! {
                for (y, x) in out.chunks_mut(c).zip(x.chunks(c)) {
                    normalize_row(x, w, b, eps, y);
                }
            }
        });
}

/// LayerNorm's backward over the rows of `gx` (of `w.len()` values), in parallel: row `r`
/// becomes the input's gradient, from the input's row (of `x`, or `gx`'s own before it is
/// overwritten when `x` is `None`) and the output's gradient `grad_of(r)`, or zero where that is
/// `None` (a row the next layer dropped). Returns the weight's and bias's gradients, then with
/// `input_sums` the input gradient's column sums: `[2 * C]` or `[3 * C]`.
pub(crate) fn backward_rows<'g>(
    x: Option<&[f32]>,
    gx: &mut [f32],
    w: &[f32],
    eps: f32,
    grad_of: impl Fn(usize) -> Option<&'g [f32]> + Sync,
    input_sums: bool,
) -> Vec<f32> {
    let c = w.len();
    let len = if input_sums { 3 * c } else { 2 * c };
    let partials: Vec<Vec<f32>> = gx
        .par_chunks_mut(c * ROWS_PER_TASK)
        .enumerate()
        .map(|(t, rows)| {
            crate::vectorized! {
                let mut sums = vec![0f32; len];
                let mut scratch = Vec::new();
                for (i, gx) in rows.chunks_mut(c).enumerate() {
                    let r = t * ROWS_PER_TASK + i;
                    let Some(g) = grad_of(r) else {
                        gx.fill(0.0);
                        continue;
                    };
                    let input = match x {
                        Some(x) => &x[r * c..][..c],
                        None => {
                            scratch.clear();
                            scratch.extend_from_slice(gx);
                            &scratch[..]
                        }
                    };
                    let (sw, rest) = sums.split_at_mut(c);
                    let (sb, sx) = rest.split_at_mut(c);
                    backward_row(input, w, g, eps, gx, sw, sb);
                    sx.iter_mut().zip(gx.iter()).for_each(|(s, g)| *s += g);
                }
                sums
            }
        })
        .collect();
    sum_in_order(partials, len)
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm-last"
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
        let w = contiguous_f32(s2, l2)?;
        let b = contiguous_f32(s3, l3)?;
        let mut y = vec![0f32; x.len()];
        normalize_rows(x, w, b, self.eps, &mut y);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, gb) = layer_norm_backward(x, w, grad, self.eps)?;
        Ok((Some(gx), Some(gw), Some(gb)))
    }
}

/// (x, w, grad) to `[gx (numel), gw (C), gb (C)]` in one pass.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-last-grad"
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
        let w = contiguous_f32(s2, l2)?;
        let g = contiguous_f32(s3, l3)?;
        let c = w.len();
        let n = x.len();
        // Allocated with room for the sums: growing it afterwards would copy all of it.
        let mut packed = vec![0f32; n + 2 * c];
        let (gx, tail) = packed.split_at_mut(n);
        let grad_of = |r: usize| Some(&g[r * c..][..c]);
        let sums = backward_rows(Some(x), gx, w, self.eps, grad_of, false);
        tail.copy_from_slice(&sums);
        Ok((CpuStorage::F32(packed), Shape::from(n + 2 * c)))
    }
}

/// The same LayerNorm composed of candle operations: the path on other devices than the CPU.
pub fn composed(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred
        .broadcast_div(&(var + eps as f64)?.sqrt()?)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{check_gradients, max_abs_diff};
    use candle_core::{Device, Var};

    #[test]
    fn forward_matches_composed_ops() -> Result<()> {
        let x = ((Tensor::randn(0f32, 1.0, (3, 5, 7, 24), &Device::Cpu)? * 3.0)? + 1.0)?;
        let w = Tensor::randn(0f32, 1.0, 24, &Device::Cpu)?;
        let b = Tensor::randn(0f32, 1.0, 24, &Device::Cpu)?;
        let diff = max_abs_diff(&layer_norm(&x, &w, &b, 1e-6)?, &composed(&x, &w, &b, 1e-6)?)?;
        assert!(diff < 1e-4, "{diff}");
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        // Rows spanning several parallel tasks, so that partial sums are combined.
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 70, 6), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, 6, &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, 6, &dev)?)?;
        check_gradients(&[&x, &w, &b], |t| layer_norm(t[0], t[1], t[2], 1e-6))
    }
}
