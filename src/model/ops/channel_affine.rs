//! Per-channel bias and scale over the last dimension (Linear biases, ConvNeXt's and DINOv2's
//! layer scale), with backwards that reduce over the rows in parallel. candle's broadcast
//! backward sums those rows on one thread: 13 % of a ConvNeXt train step. Also the per-image
//! channel gate of squeeze-excite.

use super::{contiguous_f32, map_rows, sum_in_order};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows per parallel task of the column reductions (partial sums are added in order) and of
/// [`bias_rows`].
const ROWS_PER_TASK: usize = 256;

/// `x + bias`, `bias` `[C]` broadcast over the last dimension of `x`.
pub fn add_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.broadcast_add(bias);
    }
    x.contiguous()?.apply_op2(&bias.contiguous()?, BiasAdd)
}

/// The sums over the rows of `x` `[..., C]`: `[C]` (a bias's gradient), in parallel.
pub fn sum_rows(x: &Tensor) -> Result<Tensor> {
    let c = x.dim(candle_core::D::Minus1)?;
    if !x.device().is_cpu() {
        return x.reshape(((), c))?.sum(0);
    }
    x.contiguous()?.apply_op1_no_bwd(&ColumnSums)
}

/// `x * scale`, `scale` `[C]` broadcast over the last dimension of `x`.
pub fn scale_channels(x: &Tensor, scale: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.broadcast_mul(scale);
    }
    x.contiguous()?
        .apply_op2(&scale.contiguous()?, ChannelScale)
}

/// `x * gate` for channels-last `x` `[N, ..., C]` and a gate `[N, C]` per image and channel
/// (squeeze-excite's output).
pub fn gate_channels(x: &Tensor, gate: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let mut shape = vec![1; x.rank()];
        shape[0] = gate.dim(0)?;
        shape[x.rank() - 1] = gate.dim(1)?;
        return x.broadcast_mul(&gate.reshape(shape)?);
    }
    x.contiguous()?.apply_op2(&gate.contiguous()?, ChannelGate)
}

/// Gradients of `x` and `gate` of [`gate_channels`] from the output's gradient, in one pass.
pub fn gate_channels_backward(
    x: &Tensor,
    gate: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let n = x.elem_count();
    let packed = x.contiguous()?.apply_op3_no_bwd(
        &gate.contiguous()?,
        &grad.contiguous()?,
        &ChannelGateGrad,
    )?;
    Ok((
        packed.narrow(0, 0, n)?.reshape(x.shape())?,
        packed
            .narrow(0, n, gate.elem_count())?
            .reshape(gate.shape())?,
    ))
}

/// `out[r, c] = bias[c]`, plus `x[r, c]` when `x` is given, in parallel: the rows, of
/// `bias.len()` values, that a matrix product then accumulates onto (a Linear's output).
pub(crate) fn bias_rows(out: &mut [f32], x: Option<&[f32]>, bias: &[f32]) {
    let c = bias.len();
    out.par_chunks_mut(c * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(t, out)| match x {
            Some(x) => {
                crate::vectorized! {
                    let x = &x[t * c * ROWS_PER_TASK..][..out.len()];
                    for (o, x) in out.chunks_mut(c).zip(x.chunks(c)) {
                        for ((o, &x), &b) in o.iter_mut().zip(x).zip(bias) {
                            *o = x + b;
                        }
                    }
                }
            }
            None => out.chunks_mut(c).for_each(|o| o.copy_from_slice(bias)),
        });
}

/// The length of a layout's rows (its last dimension).
fn last_dim(l: &Layout) -> usize {
    *l.dims().last().unwrap_or(&1)
}

/// `sum over rows r of term(a[r, c], b[r, c])` for row-major `a` and `b` of rows of `c` values.
pub(crate) fn column_sums(
    a: &[f32],
    b: &[f32],
    c: usize,
    term: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    let partials = a
        .par_chunks(c * ROWS_PER_TASK)
        .zip(b.par_chunks(c * ROWS_PER_TASK))
        .map(|(a, b)| {
            crate::vectorized! {
                let mut sums = vec![0f32; c];
                for (a, b) in a.chunks(c).zip(b.chunks(c)) {
                    for ((s, &a), &b) in sums.iter_mut().zip(a).zip(b) {
                        *s += term(a, b);
                    }
                }
                sums
            }
        })
        .collect();
    sum_in_order(partials, c)
}

struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        Ok((
            CpuStorage::F32(map_rows(
                x,
                b,
                #[inline(always)]
                |x, b| x + b,
            )),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.contiguous()?), Some(sum_rows(grad)?)))
    }
}

/// The sums over the rows of a row-major tensor: `[C]`, C its last dimension.
struct ColumnSums;

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "column-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(s, l)?;
        let c = last_dim(l);
        Ok((
            CpuStorage::F32(column_sums(
                g,
                g,
                c,
                #[inline(always)]
                |g, _| g,
            )),
            Shape::from(c),
        ))
    }
}

struct ChannelScale;

impl CustomOp2 for ChannelScale {
    fn name(&self) -> &'static str {
        "channel-scale"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        Ok((
            CpuStorage::F32(map_rows(
                x,
                g,
                #[inline(always)]
                |x, g| x * g,
            )),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let gx = grad.apply_op2_no_bwd(scale, &ChannelScale)?;
        let gs = grad.apply_op2_no_bwd(x, &ColumnDots)?;
        Ok((Some(gx), Some(gs)))
    }
}

/// `sum over rows of a[r, c] * b[r, c]` for two row-major tensors of the same shape: `[C]`, C
/// their last dimension.
struct ColumnDots;

impl CustomOp2 for ColumnDots {
    fn name(&self) -> &'static str {
        "column-dots"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        let c = last_dim(l1);
        Ok((
            CpuStorage::F32(column_sums(
                a,
                b,
                c,
                #[inline(always)]
                |a, b| a * b,
            )),
            Shape::from(c),
        ))
    }
}

struct ChannelGate;

impl CustomOp2 for ChannelGate {
    fn name(&self) -> &'static str {
        "channel-gate"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, gate) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        let image = x.len() / l2.dims()[0];
        let c = last_dim(l2);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(image)
            .zip(x.par_chunks(image))
            .zip(gate.par_chunks(c))
            .for_each(|((y, x), gate)| {
                crate::vectorized! {
                    for (y, x) in y.chunks_mut(c).zip(x.chunks(c)) {
                        for ((y, &x), &g) in y.iter_mut().zip(x).zip(gate) {
                            *y = x * g;
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gate: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, ggate) = gate_channels_backward(x, gate, grad)?;
        Ok((Some(gx), Some(ggate)))
    }
}

/// (x, gate, grad) to `[gx (numel), ggate (N*C)]`: `gx = grad * gate`, `ggate[n, c]` the sum of
/// `grad * x` over image `n`'s positions.
struct ChannelGateGrad;

impl CustomOp3 for ChannelGateGrad {
    fn name(&self) -> &'static str {
        "channel-gate-grad"
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
        let gate = contiguous_f32(s2, l2)?;
        let g = contiguous_f32(s3, l3)?;
        let image = x.len() / l2.dims()[0];
        let c = last_dim(l2);
        let mut out = vec![0f32; x.len() + gate.len()];
        let (gx, ggate) = out.split_at_mut(x.len());
        gx.par_chunks_mut(image)
            .zip(ggate.par_chunks_mut(c))
            .zip(x.par_chunks(image).zip(g.par_chunks(image)))
            .zip(gate.par_chunks(c))
            .for_each(|(((gx, sums), (x, g)), gate)| {
                crate::vectorized! {
                    let rows = gx.chunks_mut(c).zip(x.chunks(c)).zip(g.chunks(c));
                    for ((gx, x), g) in rows {
                        let lanes = gx.iter_mut().zip(x).zip(g).zip(gate).zip(sums.iter_mut());
                        for ((((gx, &x), &g), &gate), sum) in lanes {
                            *gx = g * gate;
                            *sum += g * x;
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from(x.len() + gate.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{check_gradients, max_abs_diff};
    use candle_core::{Device, Var};

    #[test]
    fn match_broadcasts_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        // More rows than one task holds, so that partial column sums are combined.
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 200, 6), &dev)?)?;
        let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, 6, &dev)?)?;
        let (xt, vt) = (x.as_tensor(), v.as_tensor());
        assert!(max_abs_diff(&add_bias(xt, vt)?, &xt.broadcast_add(vt)?)? < 1e-6);
        assert!(max_abs_diff(&scale_channels(xt, vt)?, &xt.broadcast_mul(vt)?)? < 1e-6);
        let sums = xt.reshape((600, 6))?.sum(0)?;
        assert!(max_abs_diff(&sum_rows(xt)?, &sums)? < 1e-4);
        check_gradients(&[&x, &v], |t| add_bias(t[0], t[1]))?;
        check_gradients(&[&x, &v], |t| scale_channels(t[0], t[1]))?;
        // Composed as layer scale after a bias, and against candle's own backward.
        let f = |t: &[&Tensor]| scale_channels(&add_bias(t[0], t[1])?, t[1]);
        let ours = f(&[xt, vt])?.sqr()?.sum_all()?.backward()?;
        let candle = xt
            .broadcast_add(vt)?
            .broadcast_mul(vt)?
            .sqr()?
            .sum_all()?
            .backward()?;
        for var in [xt, vt] {
            let (a, b) = (ours.get(var).unwrap(), candle.get(var).unwrap());
            let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(max_abs_diff(a, b)? < 1e-4 * scale.max(1.0));
        }
        Ok(())
    }

    #[test]
    fn the_channel_gate_matches_a_broadcast_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 4, 5, 6), &dev)?)?;
        let gate = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 6), &dev)?)?;
        let (xt, gt) = (x.as_tensor(), gate.as_tensor());
        let reference = xt.broadcast_mul(&gt.reshape((3, 1, 1, 6))?)?;
        assert!(max_abs_diff(&gate_channels(xt, gt)?, &reference)? < 1e-6);
        check_gradients(&[&x, &gate], |t| gate_channels(t[0], t[1]))
    }
}
