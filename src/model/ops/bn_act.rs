//! BatchNorm in inference mode as a per-channel affine map, fused with its activation:
//! `y = act(x * scale[c] + shift[c])`, with one backward pass for input, scale and shift.

use super::{contiguous_f32, exp_f32, sum_in_order};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Activation applied after the affine map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
    Relu6,
    /// `z * sigmoid(z)`.
    Silu,
    /// timm's `hard_swish`: `z * relu6(z + 3) / 6`.
    HardSwish,
    Sigmoid,
    /// timm's `hard_sigmoid`: `relu6(z + 3) / 6`.
    HardSigmoid,
}

impl Activation {
    /// The activation of `z`.
    #[inline(always)]
    fn apply(self, z: f32) -> f32 {
        match self {
            Activation::None => z,
            Activation::Relu => z.max(0.0),
            Activation::Relu6 => z.clamp(0.0, 6.0),
            Activation::Silu => z / (1.0 + exp_f32(-z)),
            Activation::HardSwish => z * (z + 3.0).clamp(0.0, 6.0) / 6.0,
            Activation::Sigmoid => 1.0 / (1.0 + exp_f32(-z)),
            Activation::HardSigmoid => (z + 3.0).clamp(0.0, 6.0) / 6.0,
        }
    }

    /// The derivative at `z`, with PyTorch's choice at the kinks.
    #[inline(always)]
    fn derivative(self, z: f32) -> f32 {
        let step = |on: bool, v: f32| if on { v } else { 0.0 };
        match self {
            Activation::None => 1.0,
            Activation::Relu => step(z > 0.0, 1.0),
            Activation::Relu6 => step(z > 0.0 && z < 6.0, 1.0),
            Activation::Silu => {
                let s = 1.0 / (1.0 + exp_f32(-z));
                s * (1.0 + z * (1.0 - s))
            }
            Activation::HardSwish => {
                if z < -3.0 {
                    0.0
                } else if z <= 3.0 {
                    z / 3.0 + 0.5
                } else {
                    1.0
                }
            }
            Activation::Sigmoid => {
                let s = 1.0 / (1.0 + exp_f32(-z));
                s * (1.0 - s)
            }
            Activation::HardSigmoid => step(z > -3.0 && z < 3.0, 1.0 / 6.0),
        }
    }
}

/// `$call(args..., f)` with `f` the method `$method` of activation `$act` as a closure of its own
/// type per activation, so that the loops of `$call` are compiled for one activation each (and
/// vectorise) instead of matching on it per element.
macro_rules! per_activation {
    ($act:expr, $method:ident, $call:ident($($arg:expr),*)) => {
        match $act {
            Activation::None => $call($($arg,)* #[inline(always)] |z| Activation::None.$method(z)),
            Activation::Relu => $call($($arg,)* #[inline(always)] |z| Activation::Relu.$method(z)),
            Activation::Relu6 => $call($($arg,)* #[inline(always)] |z| Activation::Relu6.$method(z)),
            Activation::Silu => $call($($arg,)* #[inline(always)] |z| Activation::Silu.$method(z)),
            Activation::HardSwish => $call($($arg,)* #[inline(always)] |z| Activation::HardSwish.$method(z)),
            Activation::Sigmoid => $call($($arg,)* #[inline(always)] |z| Activation::Sigmoid.$method(z)),
            Activation::HardSigmoid => $call($($arg,)* #[inline(always)] |z| Activation::HardSigmoid.$method(z)),
        }
    };
}

/// Channel position of a tensor: the last dimension (NHWC) or the second (NCHW).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelDim {
    Last,
    Second,
}

/// `act(x * scale + shift)` per channel; `scale` and `shift` are `[C]`.
pub fn bn_act(
    x: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
    act: Activation,
    dim: ChannelDim,
) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return super::portable::bn_act(x, scale, shift, act, dim);
    }
    x.contiguous()?.apply_op3(
        &scale.contiguous()?,
        &shift.contiguous()?,
        BnAct { act, dim },
    )
}

/// Elements per channel run: 1 for channels-last, H*W for NCHW.
fn inner_len(shape: &Shape, dim: ChannelDim) -> usize {
    match dim {
        ChannelDim::Last => 1,
        ChannelDim::Second => shape.dims()[2..].iter().product(),
    }
}

/// Runs `f(channel, run)` over every run of `inner` same-channel elements of `data`, in parallel
/// over blocks of whole channel cycles.
fn for_runs<T: Send>(data: &mut [T], c: usize, inner: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let cycle = c * inner;
    let cycles_per_block = (16384 / cycle).max(1);
    data.par_chunks_mut(cycle * cycles_per_block)
        .for_each(|block| {
            crate::vectorized! {
                for cyc in block.chunks_mut(cycle) {
                    for (ch, run) in cyc.chunks_mut(inner).enumerate() {
                        f(ch, run);
                    }
                }
            }
        });
}

/// `act(x * scale + shift)` per channel, runs of `inner` elements sharing a channel.
fn affine_act(
    x: &[f32],
    scale: &[f32],
    shift: &[f32],
    inner: usize,
    act: impl Fn(f32) -> f32 + Sync,
) -> Vec<f32> {
    let c = scale.len();
    let mut y = x.to_vec();
    if inner == 1 {
        y.par_chunks_mut(c * 256).for_each(|block| {
            crate::vectorized! {
                for px in block.chunks_mut(c) {
                    for ((v, s), b) in px.iter_mut().zip(scale).zip(shift) {
                        *v = act(*v * s + b);
                    }
                }
            }
        });
    } else {
        for_runs(
            &mut y,
            c,
            inner,
            #[inline(always)]
            |ch, run| {
                let (s, b) = (scale[ch], shift[ch]);
                run.iter_mut().for_each(|v| *v = act(*v * s + b));
            },
        );
    }
    y
}

struct BnAct {
    act: Activation,
    dim: ChannelDim,
}

impl CustomOp3 for BnAct {
    fn name(&self) -> &'static str {
        "bn-act"
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
        let scale = contiguous_f32(s2, l2)?;
        let shift = contiguous_f32(s3, l3)?;
        let inner = inner_len(l1.shape(), self.dim);
        let y = per_activation!(self.act, apply, affine_act(x, scale, shift, inner));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gscale, gshift) = backward(
            x,
            grad,
            scale.to_vec1::<f32>()?,
            shift.to_vec1::<f32>()?,
            self.act,
            self.dim,
        )?;
        Ok((Some(gx), Some(gscale), Some(gshift)))
    }
}

/// Gradients of input, scale and shift of `y = act(x * scale + shift)` from the input `x` and
/// the output's gradient, in one pass.
pub fn backward(
    x: &Tensor,
    grad: &Tensor,
    scale: Vec<f32>,
    shift: Vec<f32>,
    act: Activation,
    dim: ChannelDim,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = scale.len();
    let n = x.elem_count();
    let op = BnActGrad {
        act,
        dim,
        scale,
        shift,
    };
    let packed = x.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &op)?;
    let gx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
    Ok((gx, packed.narrow(0, n, c)?, packed.narrow(0, n + c, c)?))
}

/// (x, grad) to `[gx (numel), gscale (C), gshift (C)]` in one pass.
struct BnActGrad {
    act: Activation,
    dim: ChannelDim,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl CustomOp2 for BnActGrad {
    fn name(&self) -> &'static str {
        "bn-act-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1)?;
        let g = contiguous_f32(s2, l2)?;
        let inner = inner_len(l1.shape(), self.dim);
        let (scale, shift) = (&self.scale, &self.shift);
        let packed = per_activation!(
            self.act,
            derivative,
            affine_act_grad(x, g, scale, shift, inner)
        );
        Ok((
            CpuStorage::F32(packed),
            Shape::from(x.len() + 2 * scale.len()),
        ))
    }
}

/// `[gx (numel), gscale (C), gshift (C)]` of `y = act(x * scale + shift)` from `x` and `y`'s
/// gradient `g`, with `derivative` the activation's; runs of `inner` elements share a channel.
fn affine_act_grad(
    x: &[f32],
    g: &[f32],
    scale: &[f32],
    shift: &[f32],
    inner: usize,
    derivative: impl Fn(f32) -> f32 + Sync,
) -> Vec<f32> {
    let c = scale.len();
    let n = x.len();
    let cycle = c * inner;
    // gz = g * act'(x * scale + shift) per element; gx = gz * scale; sums per channel of
    // gz * x and gz.
    // Allocated with room for the sums: growing it afterwards would copy all of it.
    let mut packed = vec![0f32; n + 2 * c];
    let (gx, tail) = packed.split_at_mut(n);
    let block = cycle * (16384 / cycle).max(1);
    let partials: Vec<Vec<f32>> = gx
        .par_chunks_mut(block)
        .enumerate()
        .map(|(bi, out)| {
            crate::vectorized! {
                let range = bi * block..bi * block + out.len();
                let (x, g) = (&x[range.clone()], &g[range]);
                // Per-channel sums of gz * x, then of gz. Blocks hold whole channel cycles,
                // so a block's channel pattern starts at channel 0.
                let mut sums = vec![0f32; 2 * c];
                let (sx, sb) = sums.split_at_mut(c);
                let cycles = out
                    .chunks_mut(cycle)
                    .zip(x.chunks(cycle))
                    .zip(g.chunks(cycle));
                for ((o, x), g) in cycles {
                    if inner == 1 {
                        // Channels-last: one value per channel; this loop vectorises.
                        let lanes = o
                            .iter_mut()
                            .zip(x)
                            .zip(g)
                            .zip(scale.iter().zip(shift))
                            .zip(sx.iter_mut().zip(sb.iter_mut()));
                        for ((((o, &xv), &gv), (&s, &b)), (ax, ab)) in lanes {
                            let gz = gv * derivative(xv * s + b);
                            *o = gz * s;
                            *ax += gz * xv;
                            *ab += gz;
                        }
                        continue;
                    }
                    for ch in 0..c {
                        let r = ch * inner..(ch + 1) * inner;
                        let (s, b) = (scale[ch], shift[ch]);
                        let (mut ax, mut ab) = (0f32, 0f32);
                        let run = o[r.clone()].iter_mut().zip(&x[r.clone()]).zip(&g[r]);
                        for ((o, &xv), &gv) in run {
                            let gz = gv * derivative(xv * s + b);
                            *o = gz * s;
                            ax += gz * xv;
                            ab += gz;
                        }
                        sx[ch] += ax;
                        sb[ch] += ab;
                    }
                }
                sums
            }
        })
        .collect();
    let sums = sum_in_order(partials, 2 * c);
    tail.copy_from_slice(&sums);
    packed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{check_gradients, max_abs_diff};
    use candle_core::{Device, Var};

    #[test]
    fn forward_matches_broadcast_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (2, 4, 5, 3), &dev)?;
        let s = Tensor::new(&[0.5f32, -1.0, 2.0], &dev)?;
        let b = Tensor::new(&[0.1f32, 0.2, 3.0], &dev)?;
        let reference = x.broadcast_mul(&s)?.broadcast_add(&b)?.clamp(0f32, 6f32)?;
        let ours = bn_act(&x, &s, &b, Activation::Relu6, ChannelDim::Last)?;
        assert!(max_abs_diff(&ours, &reference)? < 1e-6);
        let xn = x.permute((0, 3, 1, 2))?;
        let ours = bn_act(&xn, &s, &b, Activation::Relu, ChannelDim::Second)?;
        let reference = xn
            .broadcast_mul(&s.reshape((3, 1, 1))?)?
            .broadcast_add(&b.reshape((3, 1, 1))?)?
            .relu()?;
        assert!(max_abs_diff(&ours, &reference)? < 1e-6);
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        for (act, dim, shape) in [
            (Activation::Relu6, ChannelDim::Last, (2, 3, 4, 5)),
            (Activation::None, ChannelDim::Last, (2, 3, 4, 5)),
            (Activation::Relu, ChannelDim::Second, (2, 5, 3, 4)),
            (Activation::Silu, ChannelDim::Last, (2, 3, 4, 5)),
            (Activation::HardSwish, ChannelDim::Last, (2, 3, 4, 5)),
            (Activation::Sigmoid, ChannelDim::Second, (2, 5, 3, 4)),
            (Activation::HardSigmoid, ChannelDim::Last, (2, 3, 4, 5)),
        ] {
            // Values on a grid away from the activation's kinks, so ±eps never crosses one.
            let count = 2 * 3 * 4 * 5;
            let v: Vec<f32> = (0..count)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7 + 0.35)
                .collect();
            let x = Var::from_tensor(&Tensor::from_vec(v, shape, &dev)?)?;
            let scale = Var::from_tensor(&Tensor::new(&[1.0f32, 0.5, 1.5, 1.0, 0.5], &dev)?)?;
            let shift = Var::from_tensor(&Tensor::new(&[-0.1f32, -0.1, -0.1, -0.1, -0.1], &dev)?)?;
            check_gradients(&[&x, &scale, &shift], |t| {
                bn_act(t[0], t[1], t[2], act, dim)
            })?;
        }
        Ok(())
    }
}
