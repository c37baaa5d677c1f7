//! The custom operations written with candle's built-in tensor operations only, for devices
//! without the hand-written CPU kernels (CUDA). Slower than the kernels, but every operation
//! here runs on any device and candle's autograd differentiates it.

use super::bn_act::{Activation, ChannelDim};
use super::depthwise::DwGeometry;
use super::maxpool::PoolGeometry;
use candle_core::{Result, Tensor};

/// `act(x * scale + shift)` per channel, as [`super::bn_act::bn_act`].
pub fn bn_act(
    x: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
    act: Activation,
    dim: ChannelDim,
) -> Result<Tensor> {
    let c = scale.elem_count();
    let shape: Vec<usize> = match dim {
        ChannelDim::Last => vec![c],
        ChannelDim::Second => {
            let mut s = vec![1; x.rank()];
            s[1] = c;
            s
        }
    };
    let y = x
        .broadcast_mul(&scale.reshape(shape.as_slice())?)?
        .broadcast_add(&shift.reshape(shape.as_slice())?)?;
    match act {
        Activation::None => Ok(y),
        Activation::Relu => y.relu(),
        Activation::Relu6 => y.maximum(0f32)?.minimum(6f32),
        Activation::Silu => y.silu(),
        Activation::HardSwish => &y * hard_sigmoid(&y)?,
        Activation::Sigmoid => candle_nn::ops::sigmoid(&y),
        Activation::HardSigmoid => hard_sigmoid(&y),
    }
}

/// timm's `hard_sigmoid`: `relu6(x + 3) / 6`.
fn hard_sigmoid(x: &Tensor) -> Result<Tensor> {
    (x + 3.0)?.maximum(0f32)?.minimum(6f32)? / 6.0
}

/// The input values that output cells read at kernel tap (`ky`, `kx`): `xp`, already padded,
/// sampled at `ky + o * stride` along `h_dim` and `kx + o * stride` along `w_dim`.
fn tap(
    xp: &Tensor,
    (h_dim, w_dim): (usize, usize),
    (ky, kx): (usize, usize),
    stride: usize,
    (out_h, out_w): (usize, usize),
) -> Result<Tensor> {
    let every = |t: Tensor, dim: usize, start: usize, n: usize| -> Result<Tensor> {
        let t = t.narrow(dim, start, n * stride)?;
        if stride == 1 {
            return Ok(t);
        }
        let mut dims = t.dims().to_vec();
        dims[dim] = n;
        dims.insert(dim + 1, stride);
        t.reshape(dims.as_slice())?
            .narrow(dim + 1, 0, 1)?
            .squeeze(dim + 1)
    };
    let rows = every(xp.clone(), h_dim, ky, out_h)?;
    every(rows, w_dim, kx, out_w)
}

/// Zero (or `fill`) padding of `before` cells, and after enough for every tap's samples.
fn pad_for_taps(
    x: &Tensor,
    dim: usize,
    before: usize,
    kernel: usize,
    stride: usize,
    out: usize,
    fill: f32,
) -> Result<Tensor> {
    let n = x.dim(dim)?;
    let after = (kernel - 1 + out * stride).saturating_sub(before + n);
    let block = |len: usize| -> Result<Option<Tensor>> {
        if len == 0 {
            return Ok(None);
        }
        let mut dims = x.dims().to_vec();
        dims[dim] = len;
        Ok(Some(Tensor::full(fill, dims.as_slice(), x.device())?))
    };
    let parts: Vec<Tensor> = [block(before)?, Some(x.clone()), block(after)?]
        .into_iter()
        .flatten()
        .collect();
    Tensor::cat(&parts, dim)
}

/// Depthwise convolution of `x` `[N, H, W, C]` with `weight` `[K, K, C]`, as
/// [`super::depthwise::depthwise_conv2d`]: a sum over the kernel's taps.
pub fn depthwise_conv2d(x: &Tensor, weight: &Tensor, geo: DwGeometry) -> Result<Tensor> {
    let k = geo.kernel;
    let xp = pad_for_taps(x, 1, geo.pad_top, k, geo.stride, geo.out_h, 0.0)?;
    let xp = pad_for_taps(&xp, 2, geo.pad_left, k, geo.stride, geo.out_w, 0.0)?;
    let mut y: Option<Tensor> = None;
    for ky in 0..k {
        for kx in 0..k {
            let t = tap(&xp, (1, 2), (ky, kx), geo.stride, (geo.out_h, geo.out_w))?
                .broadcast_mul(&weight.get(ky)?.get(kx)?)?;
            y = Some(match y {
                Some(acc) => (acc + t)?,
                None => t,
            });
        }
    }
    y.ok_or_else(|| candle_core::Error::Msg("depthwise kernel of size 0".into()))
}

/// Max-pool of `x` `[N, C, H, W]`, as [`super::maxpool::max_pool2d`]: a maximum over the
/// window's taps (padding never wins).
pub fn max_pool2d(x: &Tensor, geo: PoolGeometry) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let out = |n: usize| (n + 2 * geo.pad - geo.kernel) / geo.stride + 1;
    let (out_h, out_w) = (out(h), out(w));
    let k = geo.kernel;
    let xp = pad_for_taps(x, 2, geo.pad, k, geo.stride, out_h, f32::NEG_INFINITY)?;
    let xp = pad_for_taps(&xp, 3, geo.pad, k, geo.stride, out_w, f32::NEG_INFINITY)?;
    let mut y: Option<Tensor> = None;
    for ky in 0..k {
        for kx in 0..k {
            let t = tap(&xp, (2, 3), (ky, kx), geo.stride, (out_h, out_w))?;
            y = Some(match y {
                Some(acc) => acc.maximum(&t)?,
                None => t,
            });
        }
    }
    y.ok_or_else(|| candle_core::Error::Msg("pooling window of size 0".into()))
}

#[cfg(test)]
mod tests {
    use super::super::testing::max_abs_diff;
    use super::*;
    use candle_core::{Device, Var};

    fn randn(shape: &[usize]) -> Result<Tensor> {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
    }

    /// Forward values and input/parameter gradients of `portable` on `device` against the CPU
    /// kernel.
    fn same_as_kernel_on(
        device: &Device,
        inputs: &[Tensor],
        kernel: impl Fn(&[&Tensor]) -> Result<Tensor>,
        portable: impl Fn(&[&Tensor]) -> Result<Tensor>,
    ) -> Result<()> {
        let vars_on = |d: &Device| -> Result<Vec<Var>> {
            inputs
                .iter()
                .map(|t| Var::from_tensor(&t.to_device(d)?))
                .collect()
        };
        let (cpu_vars, dev_vars) = (vars_on(&Device::Cpu)?, vars_on(device)?);
        let cpu: Vec<&Tensor> = cpu_vars.iter().map(|v| v.as_tensor()).collect();
        let dev: Vec<&Tensor> = dev_vars.iter().map(|v| v.as_tensor()).collect();
        let (a, b) = (kernel(&cpu)?, portable(&dev)?);
        assert_eq!(a.dims(), b.dims());
        assert!(max_abs_diff(&a, &b.to_device(&Device::Cpu)?)? < 1e-4);
        let r = Tensor::randn(0f32, 1.0, a.shape(), &Device::Cpu)?;
        let ga = a.mul(&r)?.sum_all()?.backward()?;
        let gb = b.mul(&r.to_device(device)?)?.sum_all()?.backward()?;
        for (x, y) in cpu.iter().zip(&dev) {
            let (x, y) = (ga.get(x).unwrap(), gb.get(y).unwrap());
            assert!(
                max_abs_diff(x, &y.to_device(&Device::Cpu)?)? < 1e-3,
                "gradients differ"
            );
        }
        Ok(())
    }

    fn same_as_kernel(
        inputs: &[Tensor],
        kernel: impl Fn(&[&Tensor]) -> Result<Tensor>,
        portable: impl Fn(&[&Tensor]) -> Result<Tensor>,
    ) -> Result<()> {
        same_as_kernel_on(&Device::Cpu, inputs, kernel, portable)
    }

    #[test]
    fn bn_act_matches_the_kernel() -> Result<()> {
        for act in [
            Activation::None,
            Activation::Relu,
            Activation::Relu6,
            Activation::Silu,
            Activation::HardSwish,
            Activation::Sigmoid,
            Activation::HardSigmoid,
        ] {
            for (dim, shape) in [
                (ChannelDim::Last, [2, 3, 4, 5]),
                (ChannelDim::Second, [2, 5, 3, 4]),
            ] {
                let x = (randn(&shape)? * 4.0)?;
                same_as_kernel(
                    &[x, randn(&[5])?, randn(&[5])?],
                    |t| super::super::bn_act::bn_act(t[0], t[1], t[2], act, dim),
                    |t| bn_act(t[0], t[1], t[2], act, dim),
                )?;
            }
        }
        Ok(())
    }

    #[test]
    fn depthwise_matches_the_kernel() -> Result<()> {
        for (h, w, k, stride, same) in [
            (7, 6, 3, 1, true),
            (7, 6, 3, 2, true),
            (9, 8, 5, 2, true),
            (6, 7, 3, 2, false),
        ] {
            let geo = if same {
                DwGeometry::same(h, w, k, stride)
            } else {
                DwGeometry::symmetric(h, w, k, stride, 1)
            };
            same_as_kernel(
                &[randn(&[2, h, w, 4])?, randn(&[k, k, 4])?],
                |t| super::super::depthwise::depthwise_conv2d(t[0], t[1], geo),
                |t| depthwise_conv2d(t[0], t[1], geo),
            )?;
        }
        Ok(())
    }

    #[test]
    fn max_pool_matches_the_kernel() -> Result<()> {
        let geo = PoolGeometry {
            kernel: 3,
            stride: 2,
            pad: 1,
        };
        same_as_kernel(
            &[randn(&[2, 3, 9, 8])?],
            |t| super::super::maxpool::max_pool2d(t[0], geo),
            |t| max_pool2d(t[0], geo),
        )
    }

    /// On a GPU the ops take the portable path by themselves; they agree with the CPU kernels.
    #[cfg(feature = "cuda")]
    #[test]
    fn ops_on_cuda_match_the_cpu_kernels() -> Result<()> {
        use super::super::{bn_act as kernel_bn, depthwise, maxpool};
        let Ok(gpu) = Device::new_cuda(0) else {
            println!("skipped: no CUDA device");
            return Ok(());
        };
        let act = Activation::Relu6;
        same_as_kernel_on(
            &gpu,
            &[(randn(&[2, 3, 4, 5])? * 4.0)?, randn(&[5])?, randn(&[5])?],
            |t| kernel_bn::bn_act(t[0], t[1], t[2], act, ChannelDim::Last),
            |t| kernel_bn::bn_act(t[0], t[1], t[2], act, ChannelDim::Last),
        )?;
        let geo = DwGeometry::same(9, 8, 5, 2);
        same_as_kernel_on(
            &gpu,
            &[randn(&[2, 9, 8, 4])?, randn(&[5, 5, 4])?],
            |t| depthwise::depthwise_conv2d(t[0], t[1], geo),
            |t| depthwise::depthwise_conv2d(t[0], t[1], geo),
        )?;
        let pool = PoolGeometry {
            kernel: 3,
            stride: 2,
            pad: 1,
        };
        same_as_kernel_on(
            &gpu,
            &[randn(&[2, 3, 9, 8])?],
            |t| maxpool::max_pool2d(t[0], pool),
            |t| maxpool::max_pool2d(t[0], pool),
        )
    }
}
