//! ResNet-18/34/50 as timm builds them. On the CPU, passes that train no BatchNorm statistics
//! run on channels-last maps without a candle graph ([`super::resnet_tape`]); the others run
//! through candle's NCHW convolutions and graph.

use super::layers::{global_pool_nchw, weight, BatchNorm};
use super::ops::bn_act::{Activation, ChannelDim};
use super::ops::maxpool::{max_pool2d, PoolGeometry};
use super::{resnet_tape, Backbone, BackboneParts, GroupMode, Params};
use candle_core::{Result, Tensor};
use std::collections::HashMap;

/// Depth and block type of one ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResNetSpec {
    pub layers: [usize; 4],
    pub bottleneck: bool,
}

impl ResNetSpec {
    /// The spec of a timm architecture name, if it is a supported ResNet.
    pub fn for_arch(arch: &str) -> Option<Self> {
        Some(match arch {
            "resnet18" => Self {
                layers: [2, 2, 2, 2],
                bottleneck: false,
            },
            "resnet34" => Self {
                layers: [3, 4, 6, 3],
                bottleneck: false,
            },
            "resnet50" => Self {
                layers: [3, 4, 6, 3],
                bottleneck: true,
            },
            _ => return None,
        })
    }

    fn expansion(&self) -> usize {
        if self.bottleneck {
            4
        } else {
            1
        }
    }
}

/// The stem's max-pool.
pub(crate) const STEM_POOL: PoolGeometry = PoolGeometry {
    kernel: 3,
    stride: 2,
    pad: 1,
};

/// A convolution (padded by half its kernel) and the BatchNorm after it, by their timm key
/// prefixes.
#[derive(Debug, Clone)]
pub(crate) struct ConvBn {
    pub(crate) conv: String,
    pub(crate) bn: String,
    pub(crate) stride: usize,
}

impl ConvBn {
    fn new(conv: String, bn: String, stride: usize) -> Self {
        Self { conv, bn, stride }
    }

    /// The stem's convolution.
    pub(crate) fn stem() -> Self {
        Self::new("conv1".into(), "bn1".into(), 2)
    }
}

/// One residual block: its key prefix, stride and whether it has a projection shortcut.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) prefix: String,
    pub(crate) stride: usize,
    pub(crate) downsample: bool,
}

impl Block {
    /// The main path's layers in order: each followed by ReLU except the last, whose output is
    /// added to the shortcut's before a ReLU.
    pub(crate) fn main_path(&self, bottleneck: bool) -> Vec<ConvBn> {
        let p = &self.prefix;
        let layer = |i: usize, stride: usize| {
            ConvBn::new(format!("{p}.conv{i}"), format!("{p}.bn{i}"), stride)
        };
        if bottleneck {
            vec![layer(1, 1), layer(2, self.stride), layer(3, 1)]
        } else {
            vec![layer(1, self.stride), layer(2, 1)]
        }
    }

    /// The projection shortcut, if the block has one.
    pub(crate) fn shortcut(&self) -> Option<ConvBn> {
        let p = &self.prefix;
        self.downsample.then(|| {
            ConvBn::new(
                format!("{p}.downsample.0"),
                format!("{p}.downsample.1"),
                self.stride,
            )
        })
    }
}

/// A ResNet backbone.
pub struct ResNet {
    pub(crate) parts: BackboneParts,
    pub(crate) spec: ResNetSpec,
    pub(crate) stages: Vec<Vec<Block>>,
    pub(crate) bns: HashMap<String, BatchNorm>,
}

impl ResNet {
    /// Builds `arch` from `params`, checking every tensor it needs.
    pub fn new(arch: &str, spec: ResNetSpec, params: Params) -> anyhow::Result<Self> {
        let mut bns = HashMap::new();
        let mut bn = |prefix: String, ch: usize| -> anyhow::Result<()> {
            bns.insert(
                prefix.clone(),
                BatchNorm::new(&params, &prefix, ch, 1e-5, 0.1)?,
            );
            Ok(())
        };
        params.get("conv1.weight", &[64, 3, 7, 7])?;
        bn("bn1".into(), 64)?;
        let e = spec.expansion();
        let mut in_ch = 64;
        let mut stages = Vec::new();
        for (li, &n) in spec.layers.iter().enumerate() {
            let width = 64 << li;
            let out_ch = width * e;
            let mut blocks = Vec::new();
            for bi in 0..n {
                let p = format!("layer{}.{bi}", li + 1);
                let stride = if bi == 0 && li > 0 { 2 } else { 1 };
                let downsample = bi == 0 && (stride != 1 || in_ch != out_ch);
                if spec.bottleneck {
                    params.get(&format!("{p}.conv1.weight"), &[width, in_ch, 1, 1])?;
                    params.get(&format!("{p}.conv2.weight"), &[width, width, 3, 3])?;
                    params.get(&format!("{p}.conv3.weight"), &[out_ch, width, 1, 1])?;
                    bn(format!("{p}.bn1"), width)?;
                    bn(format!("{p}.bn2"), width)?;
                    bn(format!("{p}.bn3"), out_ch)?;
                } else {
                    params.get(&format!("{p}.conv1.weight"), &[width, in_ch, 3, 3])?;
                    params.get(&format!("{p}.conv2.weight"), &[width, width, 3, 3])?;
                    bn(format!("{p}.bn1"), width)?;
                    bn(format!("{p}.bn2"), width)?;
                }
                if downsample {
                    params.get(&format!("{p}.downsample.0.weight"), &[out_ch, in_ch, 1, 1])?;
                    bn(format!("{p}.downsample.1"), out_ch)?;
                }
                blocks.push(Block {
                    prefix: p,
                    stride,
                    downsample,
                });
                in_ch = out_ch;
            }
            stages.push(blocks);
        }
        let mut groups = vec![(
            "stem".to_string(),
            vec!["conv1.".to_string(), "bn1.".to_string()],
        )];
        for li in 1..=4 {
            groups.push((format!("layer{li}"), vec![format!("layer{li}.")]));
        }
        let mut params = params;
        params.retain(|k| !k.starts_with("fc."));
        Ok(Self {
            parts: BackboneParts::new(arch, params, groups, in_ch),
            spec,
            stages,
            bns,
        })
    }

    fn conv_bn(
        &self,
        x: &Tensor,
        layer: &ConvBn,
        act: Activation,
        mode: GroupMode,
    ) -> Result<Tensor> {
        let w = weight(&self.parts.params, &format!("{}.weight", layer.conv), mode);
        let pad = w.dim(2)? / 2;
        let y = x.conv2d(&w, pad, layer.stride, 1, 1)?;
        self.bns[&layer.bn].forward(&self.parts.params, &y, act, ChannelDim::Second, mode)
    }

    fn block(&self, x: &Tensor, b: &Block, mode: GroupMode) -> Result<Tensor> {
        let main = b.main_path(self.spec.bottleneck);
        let (last, inner) = main.split_last().expect("a block has convolutions");
        let mut h = x.clone();
        for layer in inner {
            h = self.conv_bn(&h, layer, Activation::Relu, mode)?;
        }
        let h = self.conv_bn(&h, last, Activation::None, mode)?;
        let shortcut = match b.shortcut() {
            Some(layer) => self.conv_bn(x, &layer, Activation::None, mode)?,
            None => x.clone(),
        };
        (h + shortcut)?.relu()
    }
}

impl Backbone for ResNet {
    fn parts(&self) -> &BackboneParts {
        &self.parts
    }

    fn parts_mut(&mut self) -> &mut BackboneParts {
        &mut self.parts
    }

    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let groups = self.parts.groups.len();
        let records = (0..groups).any(|i| self.parts.mode(i, training).trainable);
        if !records && x.device().is_cpu() {
            return resnet_tape::features(self, x);
        }
        let mode = self.parts.mode(0, training);
        let h = self.conv_bn(x, &ConvBn::stem(), Activation::Relu, mode)?;
        let mut h = max_pool2d(&h, STEM_POOL)?;
        for (li, stage) in self.stages.iter().enumerate() {
            let mode = self.parts.mode(li + 1, training);
            for b in stage {
                h = self.block(&h, b, mode)?;
            }
        }
        global_pool_nchw(&h)
    }

    fn forward_taped(&self, x: &Tensor) -> Option<Result<(Tensor, Box<dyn std::any::Any + Send>)>> {
        (!self.parts.train_batchnorm).then(|| {
            resnet_tape::forward(self, x)
                .map(|(features, tape)| (features, Box::new(tape) as Box<dyn std::any::Any + Send>))
        })
    }

    fn backward_taped(
        &self,
        tape: Box<dyn std::any::Any + Send>,
        grad: &Tensor,
        grads: &mut candle_core::backprop::GradStore,
    ) -> Result<()> {
        super::own_tape::<resnet_tape::Tape>(tape, "a ResNet")?.backward(self, grad, grads)
    }

    fn architecture(&self) -> super::Architecture<'_> {
        super::Architecture::ResNet(self)
    }
}
