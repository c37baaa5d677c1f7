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

/// Zero padding of an NCHW tensor's spatial axes: (top, bottom, left, right).
pub fn pad_nchw(x: &Tensor, pad: [usize; 4]) -> Result<Tensor> {
    if pad == [0; 4] {
        return Ok(x.clone());
    }
    x.pad_with_zeros(2, pad[0], pad[1])?
        .pad_with_zeros(3, pad[2], pad[3])
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
