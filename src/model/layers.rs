//! Building blocks shared by the architectures: frozen-or-trainable weights, BatchNorm,
//! convolutions.

use super::ops::bn_act::{bn_act, Activation, ChannelDim};
use super::{GroupMode, Params};
use candle_core::{Result, Tensor, D};

/// The tensor of `name`: tracked for gradients in a trainable group, detached otherwise (so no
/// graph is recorded through a frozen group).
pub fn weight(params: &Params, name: &str, mode: GroupMode) -> Tensor {
    let t = params.var(name).as_tensor();
    if mode.trainable {
        t.clone()
    } else {
        t.detach()
    }
}

/// A BatchNorm layer by its key prefix (`bn1`, `layer1.0.bn2`, ...).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    pub prefix: String,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNorm {
    /// Checks the layer's four tensors exist with `channels` values.
    pub fn new(
        params: &Params,
        prefix: &str,
        channels: usize,
        eps: f64,
        momentum: f64,
    ) -> anyhow::Result<Self> {
        for t in ["weight", "bias", "running_mean", "running_var"] {
            params.get(&format!("{prefix}.{t}"), &[channels])?;
        }
        Ok(Self {
            prefix: prefix.to_string(),
            eps,
            momentum,
        })
    }

    fn key(&self, t: &str) -> String {
        format!("{}.{t}", self.prefix)
    }

    /// `act(batchnorm(x))`. In inference mode the layer is a per-channel affine map of its
    /// running statistics; with batch statistics, the map is computed from the batch (so the
    /// gradient flows through the statistics too) and the running statistics are updated.
    pub fn forward(
        &self,
        params: &Params,
        x: &Tensor,
        act: Activation,
        dim: ChannelDim,
        mode: GroupMode,
    ) -> Result<Tensor> {
        let gamma = weight(params, &self.key("weight"), mode);
        let beta = weight(params, &self.key("bias"), mode);
        let (mean, var) = if mode.batch_stats {
            let c = gamma.dim(0)?;
            let rows = match dim {
                ChannelDim::Last => x.reshape(((), c))?,
                ChannelDim::Second => x.transpose(0, 1)?.reshape((c, ()))?.t()?,
            };
            let mean = rows.mean(0)?;
            let var = rows.broadcast_sub(&mean)?.sqr()?.mean(0)?;
            let n = rows.dim(0)? as f64;
            let m = self.momentum;
            let running_mean = params.var(&self.key("running_mean"));
            let running_var = params.var(&self.key("running_var"));
            running_mean.set(&((running_mean.as_tensor() * (1.0 - m))? + (mean.detach() * m)?)?)?;
            let unbiased = (var.detach() * (n / (n - 1.0).max(1.0)))?;
            running_var.set(&((running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
            (mean, var)
        } else {
            (
                params.var(&self.key("running_mean")).as_tensor().detach(),
                params.var(&self.key("running_var")).as_tensor().detach(),
            )
        };
        let scale = gamma.div(&(var + self.eps)?.sqrt()?)?;
        let shift = beta.sub(&mean.mul(&scale)?)?;
        bn_act(x, &scale, &shift, act, dim)
    }
}

impl BatchNorm {
    /// The inference-mode map `(scale, shift)` and `1 / sqrt(var + eps)`, detached.
    pub fn inference_affine(&self, params: &Params) -> Result<(Tensor, Tensor, Tensor)> {
        let t = |k: &str| params.var(&self.key(k)).as_tensor().detach();
        let inv_std = (t("running_var") + self.eps)?.sqrt()?.recip()?;
        let scale = t("weight").mul(&inv_std)?;
        let shift = t("bias").sub(&t("running_mean").mul(&scale)?)?;
        Ok((scale, shift, inv_std))
    }

    /// Gradients of `weight` and `bias` from those of the inference map's scale and shift
    /// (`shift = bias - mean * scale`, `scale = weight * inv_std`).
    pub fn param_grads(
        &self,
        params: &Params,
        inv_std: &Tensor,
        gscale: &Tensor,
        gshift: &Tensor,
    ) -> Result<[(String, Tensor); 2]> {
        let mean = params.var(&self.key("running_mean")).as_tensor().detach();
        let gweight = gscale.sub(&mean.mul(gshift)?)?.mul(inv_std)?;
        Ok([
            (self.key("weight"), gweight),
            (self.key("bias"), gshift.clone()),
        ])
    }
}

/// 1x1 convolution of channels-last `x` `[N, H, W, Ci]` with a timm weight `[Co, Ci, 1, 1]`,
/// as one matrix product.
pub fn conv1x1_nhwc(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, h, wd, ci) = x.dims4()?;
    let co = w.dim(0)?;
    let w = w.reshape((co, ci))?;
    x.reshape((n * h * wd, ci))?
        .matmul(&w.t()?)?
        .reshape((n, h, wd, co))
}

/// `act(x @ w^T + b)` of rows `x` `[N, Ci]` with a timm 1x1 convolution `w` `[Co, Ci, 1, 1]` and
/// its bias `b` `[Co]`: the layers after a global pool (squeeze-excite, MobileNetV3's
/// `conv_head`). Also returns the product before the bias, which a hand-written backward needs.
pub fn pooled_conv_act(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    act: Activation,
) -> Result<(Tensor, Tensor)> {
    let co = w.dim(0)?;
    let product = x.matmul(&w.reshape((co, ()))?.t()?)?;
    let ones = Tensor::ones(co, product.dtype(), product.device())?;
    let y = bn_act(&product, &ones, b, act, ChannelDim::Last)?;
    Ok((product, y))
}

/// Convolution of a network input `x` `[N, C, H, W]` (which never needs a gradient) with a timm
/// weight `[Co, C, K, K]`, returning channels-last `[N, OH, OW, Co]`. The input's patches are
/// gathered once and multiplied with the weight: the backward pass is then one matrix product
/// for the weight, instead of candle's transposed convolution for an input that needs none.
pub fn input_conv_nhwc(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4]) -> Result<Tensor> {
    Ok(stem_patches(x, w, stride, pad)?.0)
}

/// [`input_conv_nhwc`] that also returns the gathered patches `[N*OH*OW, C*K*K]`, from which the
/// weight's gradient is `grad^T @ patches`.
pub fn stem_patches(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pad: [usize; 4],
) -> Result<(Tensor, Tensor)> {
    let (n, c, h, wd) = x.dims4()?;
    let (co, _, k, _) = w.dims4()?;
    let oh = (h + pad[0] + pad[1] - k) / stride + 1;
    let ow = (wd + pad[2] + pad[3] - k) / stride + 1;
    let src = x.detach().contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let cols = c * k * k;
    let mut patches = vec![0f32; n * oh * ow * cols];
    use rayon::prelude::*;
    patches
        .par_chunks_mut(ow * cols)
        .enumerate()
        .for_each(|(row, out)| {
            let (b, oy) = (row / oh, row % oh);
            for ox in 0..ow {
                let p = &mut out[ox * cols..][..cols];
                for ci in 0..c {
                    for ky in 0..k {
                        let Some(iy) = (oy * stride + ky).checked_sub(pad[0]).filter(|&i| i < h)
                        else {
                            continue;
                        };
                        for kx in 0..k {
                            let Some(ix) =
                                (ox * stride + kx).checked_sub(pad[2]).filter(|&i| i < wd)
                            else {
                                continue;
                            };
                            p[(ci * k + ky) * k + kx] = src[((b * c + ci) * h + iy) * wd + ix];
                        }
                    }
                }
            }
        });
    let patches = Tensor::from_vec(patches, (n * oh * ow, cols), x.device())?;
    let y = patches
        .matmul(&w.reshape((co, cols))?.t()?)?
        .reshape((n, oh, ow, co))?;
    Ok((y, patches))
}

/// A timm depthwise weight `[C, 1, K, K]` as the channels-last kernel `[K, K, C]`.
pub fn depthwise_weight_nhwc(w: &Tensor, c: usize, k: usize) -> Result<Tensor> {
    w.reshape((c, k * k))?.t()?.reshape((k, k, c))
}

/// TensorFlow "SAME" padding (before, after) of one axis.
pub fn same_padding(n: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = n.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(n);
    (total / 2, total - total / 2)
}

/// Global average pool of channels-last features: `[N, H, W, C]` to `[N, C]`.
pub fn global_pool_nhwc(x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    x.reshape((n, h * w, c))?.mean(1)
}

/// Global average pool of NCHW features: `[N, C, H, W]` to `[N, C]`.
pub fn global_pool_nchw(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.mean(D::Minus1)
}
