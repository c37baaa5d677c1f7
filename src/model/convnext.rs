//! ConvNeXt (`convnext_atto` … `convnext_base`) as timm builds it, channels-last internally: a
//! patchify stem (4x4 stride-4 convolution + LayerNorm), four stages of blocks (7x7 depthwise
//! convolution, LayerNorm over channels, Linear-GELU-Linear, layer scale, residual), a
//! LayerNorm + 2x2 stride-2 convolution between stages, and `head.norm` after the global pool.
//!
//! Depths and widths come from timm's table for the architecture name, as timm builds the model,
//! or, for a ConvNeXt name the table lacks, from the checkpoint's keys and shapes; every tensor
//! of the checkpoint is checked against them (a mismatch names the tensor).

use super::convnext_tape::{self, BufferPool, Tape};
use super::layers::{depthwise_weight_nhwc, global_pool_nhwc, weight};
use super::ops::channel_affine::{add_bias, scale_channels};
use super::ops::depthwise::{depthwise_conv2d, DwGeometry};
use super::ops::gelu::bias_gelu;
use super::ops::layer_norm::layer_norm;
use super::{Backbone, BackboneParts, GroupMode, Params};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};

/// timm's LayerNorm / LayerNorm2d epsilon in ConvNeXt.
pub(crate) const NORM_EPS: f32 = 1e-6;

/// Depths and widths of one ConvNeXt, as timm's model table gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvNeXtSpec {
    pub depths: [usize; 4],
    pub dims: [usize; 4],
    /// The MLP is stored as 1x1 convolutions (`[4C, C, 1, 1]`) rather than Linear (`[4C, C]`).
    pub conv_mlp: bool,
}

impl ConvNeXtSpec {
    /// The spec of a timm architecture name, if it is a supported ConvNeXt.
    pub fn for_arch(arch: &str) -> Option<Self> {
        let (depths, dims, conv_mlp) = match arch {
            "convnext_atto" => ([2, 2, 6, 2], [40, 80, 160, 320], true),
            "convnext_femto" => ([2, 2, 6, 2], [48, 96, 192, 384], true),
            "convnext_pico" => ([2, 2, 6, 2], [64, 128, 256, 512], true),
            "convnext_nano" => ([2, 2, 8, 2], [80, 160, 320, 640], true),
            "convnext_tiny" => ([3, 3, 9, 3], [96, 192, 384, 768], false),
            "convnext_small" => ([3, 3, 27, 3], [96, 192, 384, 768], false),
            "convnext_base" => ([3, 3, 27, 3], [128, 256, 512, 1024], false),
            _ => return None,
        };
        Some(Self {
            depths,
            dims,
            conv_mlp,
        })
    }

    /// The spec read off a checkpoint: the blocks each stage holds, its width from the first
    /// block's depthwise kernel, and whether the MLP is stored as 1x1 convolutions. For ConvNeXt
    /// names outside timm's table (`convnext_large`, `convnext_xlarge`, a retrained variant).
    pub fn from_params(params: &Params) -> Option<Self> {
        let mut depths = [0; 4];
        let mut dims = [0; 4];
        for stage in 0..4 {
            let kernel = |block: usize| format!("stages.{stage}.blocks.{block}.conv_dw.weight");
            dims[stage] = *params.dims(&kernel(0))?.first()?;
            depths[stage] = (0..)
                .take_while(|&b| params.dims(&kernel(b)).is_some())
                .count();
        }
        let conv_mlp = params.dims("stages.0.blocks.0.mlp.fc1.weight")?.len() == 4;
        Some(Self {
            depths,
            dims,
            conv_mlp,
        })
    }
}

/// One block: its key prefix and depthwise kernel size.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) prefix: String,
    pub(crate) kernel: usize,
}

/// One stage: whether it starts with a downsample (norm + strided conv), and its blocks.
#[derive(Debug, Clone)]
pub(crate) struct Stage {
    pub(crate) prefix: String,
    pub(crate) downsample: bool,
    pub(crate) blocks: Vec<Block>,
}

/// A ConvNeXt backbone.
pub struct ConvNeXt {
    pub(crate) parts: BackboneParts,
    pub(crate) stages: Vec<Stage>,
    /// Activation buffers of the CPU passes ([`convnext_tape`]), reused between them.
    pub(crate) pool: BufferPool,
}

impl ConvNeXt {
    /// Builds `arch` from `params`, checking every tensor it needs.
    pub fn new(arch: &str, spec: ConvNeXtSpec, params: Params) -> anyhow::Result<Self> {
        let dims = spec.dims;
        let norm = |prefix: &str, c: usize| -> anyhow::Result<()> {
            params.get(&format!("{prefix}.weight"), &[c])?;
            params.get(&format!("{prefix}.bias"), &[c])?;
            Ok(())
        };
        params.get("stem.0.weight", &[dims[0], 3, 4, 4])?;
        params.get("stem.0.bias", &[dims[0]])?;
        norm("stem.1", dims[0])?;
        let mut stages = Vec::new();
        for (si, (&depth, &c)) in spec.depths.iter().zip(&dims).enumerate() {
            let prefix = format!("stages.{si}");
            let downsample = si > 0;
            if downsample {
                let c_in = dims[si - 1];
                norm(&format!("{prefix}.downsample.0"), c_in)?;
                params.get(&format!("{prefix}.downsample.1.weight"), &[c, c_in, 2, 2])?;
                params.get(&format!("{prefix}.downsample.1.bias"), &[c])?;
            }
            let mut blocks = Vec::new();
            for bi in 0..depth {
                let p = format!("{prefix}.blocks.{bi}");
                let kernel = 7;
                params.get(&format!("{p}.conv_dw.weight"), &[c, 1, kernel, kernel])?;
                params.get(&format!("{p}.conv_dw.bias"), &[c])?;
                norm(&format!("{p}.norm"), c)?;
                let (fc1, fc2): (&[usize], &[usize]) = if spec.conv_mlp {
                    (&[4 * c, c, 1, 1], &[c, 4 * c, 1, 1])
                } else {
                    (&[4 * c, c], &[c, 4 * c])
                };
                params.get(&format!("{p}.mlp.fc1.weight"), fc1)?;
                params.get(&format!("{p}.mlp.fc1.bias"), &[4 * c])?;
                params.get(&format!("{p}.mlp.fc2.weight"), fc2)?;
                params.get(&format!("{p}.mlp.fc2.bias"), &[c])?;
                params.get(&format!("{p}.gamma"), &[c])?;
                blocks.push(Block { prefix: p, kernel });
            }
            stages.push(Stage {
                prefix,
                downsample,
                blocks,
            });
        }
        norm("head.norm", dims[3])?;
        let mut groups = vec![("stem".to_string(), vec!["stem.".to_string()])];
        for s in &stages {
            groups.push((s.prefix.clone(), vec![format!("{}.", s.prefix)]));
        }
        groups.push(("head.norm".to_string(), vec!["head.norm.".to_string()]));
        let mut params = params;
        params.retain(|k| !k.starts_with("head.fc."));
        Ok(Self {
            parts: BackboneParts::new(arch, params, groups, dims[3]),
            stages,
            pool: BufferPool::default(),
        })
    }

    /// LayerNorm over the last (channel) dimension with the affine map under `prefix`.
    fn norm(&self, x: &Tensor, prefix: &str, mode: GroupMode) -> Result<Tensor> {
        let p = &self.parts.params;
        let w = weight(p, &format!("{prefix}.weight"), mode);
        let b = weight(p, &format!("{prefix}.bias"), mode);
        layer_norm(x, &w, &b, NORM_EPS)
    }

    /// Non-overlapping `k`x`k` stride-`k` convolution (stem, downsample) under `prefix`.
    fn patchify(&self, x: &Tensor, prefix: &str, mode: GroupMode) -> Result<Tensor> {
        let p = &self.parts.params;
        let w = weight(p, &format!("{prefix}.weight"), mode);
        let b = weight(p, &format!("{prefix}.bias"), mode);
        patchify_conv_nhwc(x, &w, &b)
    }

    fn block(&self, x: &Tensor, b: &Block, mode: GroupMode) -> Result<Tensor> {
        let p = &self.parts.params;
        let w = |n: &str| weight(p, &format!("{}.{n}", b.prefix), mode);
        let (n, h, wd, c) = x.dims4()?;
        let k = b.kernel;
        let dw = depthwise_weight_nhwc(&w("conv_dw.weight"), c, k)?;
        let y = add_bias(
            &depthwise_conv2d(x, &dw, DwGeometry::symmetric(h, wd, k, 1, k / 2))?,
            &w("conv_dw.bias"),
        )?;
        let y = self.norm(&y, &format!("{}.norm", b.prefix), mode)?;
        // fc1 and fc2: Linear `[Co, Ci]` or 1x1 conv `[Co, Ci, 1, 1]` weights, one matrix product.
        let matmul = |y: &Tensor, name: &str| -> Result<Tensor> {
            let wt = w(&format!("mlp.{name}.weight"));
            y.matmul(&wt.reshape((wt.dim(0)?, wt.dim(1)?))?.t()?)
        };
        let y = matmul(&y.reshape((n * h * wd, c))?, "fc1")?;
        let y = bias_gelu(&y, &w("mlp.fc1.bias"))?;
        let y = add_bias(&matmul(&y, "fc2")?, &w("mlp.fc2.bias"))?;
        let y = scale_channels(&y, &w("gamma"))?;
        y.reshape((n, h, wd, c))? + x
    }
}

/// Refuses inputs smaller than the network's total stride.
fn check_input(x: &Tensor) -> Result<()> {
    let (h, w) = (x.dim(2)?, x.dim(3)?);
    if h < 32 || w < 32 {
        candle_core::bail!("ConvNeXt needs inputs of at least 32x32 pixels, got {h}x{w}");
    }
    Ok(())
}

/// Convolution of channels-last `x` `[N, H, W, Ci]` with a timm weight `[Co, Ci, K, K]` of stride
/// `K` and no padding (so the windows tile the input), as one matrix product: `[N, H/K, W/K, Co]`.
/// Rows and columns past the last whole window are dropped, as the convolution drops them.
pub fn patchify_conv_nhwc(x: &Tensor, w: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (n, h, wd, ci) = x.dims4()?;
    let (co, _, k, _) = w.dims4()?;
    let (oh, ow) = (h / k, wd / k);
    let x = if oh * k != h || ow * k != wd {
        x.narrow(1, 0, oh * k)?.narrow(2, 0, ow * k)?
    } else {
        x.clone()
    };
    // [N*OH, ky, OW, kx*Ci] -> [N*OH, OW, ky, kx*Ci]: one row of (ky, kx, ci) per window.
    let patches = x
        .reshape((n * oh, k, ow, k * ci))?
        .transpose(1, 2)?
        .reshape((n * oh * ow, k * k * ci))?;
    let w = w.permute((0, 2, 3, 1))?.reshape((co, k * k * ci))?;
    add_bias(&patches.matmul(&w.t()?)?, bias)?.reshape((n, oh, ow, co))
}

impl Backbone for ConvNeXt {
    fn parts(&self) -> &BackboneParts {
        &self.parts
    }

    fn parts_mut(&mut self) -> &mut BackboneParts {
        &mut self.parts
    }

    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        check_input(x)?;
        let frozen = (0..self.parts.groups.len()).all(|i| !self.parts.mode(i, training).trainable);
        if frozen && x.device().is_cpu() {
            return Ok(convnext_tape::forward(self, x, None)?.0);
        }
        let mode = self.parts.mode(0, training);
        let h = self.patchify(&x.permute((0, 2, 3, 1))?, "stem.0", mode)?;
        let mut h = self.norm(&h, "stem.1", mode)?;
        for (si, stage) in self.stages.iter().enumerate() {
            let mode = self.parts.mode(si + 1, training);
            if stage.downsample {
                let p = &stage.prefix;
                h = self.norm(&h, &format!("{p}.downsample.0"), mode)?;
                h = self.patchify(&h, &format!("{p}.downsample.1"), mode)?;
            }
            for b in &stage.blocks {
                h = self.block(&h, b, mode)?;
            }
        }
        let mode = self.parts.mode(self.stages.len() + 1, training);
        self.norm(&global_pool_nhwc(&h)?, "head.norm", mode)
    }

    fn forward_taped(&self, x: &Tensor) -> Option<Result<(Tensor, Box<dyn std::any::Any + Send>)>> {
        let first_trainable = self.parts.groups.iter().position(|g| g.trainable);
        Some(check_input(x).and_then(|()| {
            let (features, tape) = convnext_tape::forward(self, x, first_trainable)?;
            Ok((features, Box::new(tape) as Box<dyn std::any::Any + Send>))
        }))
    }

    fn backward_taped(
        &self,
        tape: Box<dyn std::any::Any + Send>,
        grad: &Tensor,
        grads: &mut GradStore,
    ) -> Result<()> {
        super::own_tape::<Tape>(tape, "a ConvNeXt")?.backward(self, grad, grads)
    }

    fn architecture(&self) -> super::Architecture<'_> {
        super::Architecture::ConvNeXt(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::max_abs_diff;
    use candle_core::Device;

    fn randn(shape: &[usize]) -> Result<Tensor> {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
    }

    #[test]
    fn patchify_matches_strided_conv() -> Result<()> {
        for (h, k) in [(8, 4), (7, 2)] {
            let x = randn(&[2, 3, h, h + 1])?;
            let w = randn(&[5, 3, k, k])?;
            let b = randn(&[5])?;
            let want = x
                .conv2d(&w, 0, k, 1, 1)?
                .broadcast_add(&b.reshape((1, 5, 1, 1))?)?
                .permute((0, 2, 3, 1))?;
            let got = patchify_conv_nhwc(&x.permute((0, 2, 3, 1))?, &w, &b)?;
            assert_eq!(got.dims(), want.dims());
            assert!(max_abs_diff(&got, &want)? < 1e-4);
        }
        Ok(())
    }
}
