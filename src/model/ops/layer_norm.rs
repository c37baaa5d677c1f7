//! LayerNorm over the last dimension (timm's `nn.LayerNorm` on tokens), with one backward pass
//! for input, weight and bias. candle's fast `layer_norm` has no backward; its differentiable
//! `layer_norm_slow` runs on other devices.

use super::{contiguous_f32, sum_in_order};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension; `weight` and `bias`
/// are `[C]`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return candle_nn::ops::layer_norm_slow(x, weight, bias, eps);
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNorm { eps },
    )
}

/// Rows per parallel task.
const ROWS: usize = 64;

struct LayerNorm {
    eps: f32,
}

/// Mean and `1 / sqrt(var + eps)` of one row.
#[inline]
fn stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm-last-dim"
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
        let c = w.len();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(c * ROWS)
            .zip(x.par_chunks(c * ROWS))
            .for_each(|(ys, xs)| {
                for (yr, xr) in ys.chunks_mut(c).zip(xs.chunks(c)) {
                    let (mean, rstd) = stats(xr, self.eps);
                    for (((yv, xv), wv), bv) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                        *yv = (xv - mean) * rstd * wv + bv;
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let w = weight.to_vec1::<f32>()?;
        let c = w.len();
        let mut gx = vec![0f32; xs.len()];
        // Per task: the partial sums of the weight's and the bias's gradients.
        let partials: Vec<Vec<f32>> = gx
            .par_chunks_mut(c * ROWS)
            .zip(xs.par_chunks(c * ROWS).zip(gs.par_chunks(c * ROWS)))
            .map(|(gxs, (xs, gs))| {
                let mut acc = vec![0f32; 2 * c];
                let mut xhat = vec![0f32; c];
                for ((gxr, xr), gr) in gxs.chunks_mut(c).zip(xs.chunks(c)).zip(gs.chunks(c)) {
                    let (mean, rstd) = stats(xr, self.eps);
                    let (mut sum_dxhat, mut sum_dxhat_xhat) = (0f32, 0f32);
                    for k in 0..c {
                        xhat[k] = (xr[k] - mean) * rstd;
                        let dxhat = gr[k] * w[k];
                        sum_dxhat += dxhat;
                        sum_dxhat_xhat += dxhat * xhat[k];
                        acc[k] += gr[k] * xhat[k];
                        acc[c + k] += gr[k];
                    }
                    let (m1, m2) = (sum_dxhat / c as f32, sum_dxhat_xhat / c as f32);
                    for k in 0..c {
                        gxr[k] = rstd * (gr[k] * w[k] - m1 - xhat[k] * m2);
                    }
                }
                acc
            })
            .collect();
        let acc = sum_in_order(partials, 2 * c);
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(gx, x.shape(), dev)?),
            Some(Tensor::from_slice(&acc[..c], c, dev)?),
            Some(Tensor::from_slice(&acc[c..], c, dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{check_gradients, max_abs_diff};
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0.5f32, 2.0, (3, 5, 24), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.5, 24, &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.5, 24, &dev)?)?;
        let ours = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-6)?;
        let want =
            candle_nn::ops::layer_norm_slow(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-6)?;
        assert!(max_abs_diff(&ours, &want)? < 1e-5);
        check_gradients(&[&x, &w, &b], |t| layer_norm(t[0], t[1], t[2], 1e-6))
    }
}
