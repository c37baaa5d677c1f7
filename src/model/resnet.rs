//! ResNet-18/34/50 as timm builds them (NCHW, candle convolutions, trainable max-pool).

use super::layers::{global_pool_nchw, weight, BatchNorm};
use super::ops::bn_act::{Activation, ChannelDim};
use super::ops::maxpool::{max_pool2d, PoolGeometry};
use super::{Backbone, BackboneParts, GroupMode, Params};
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

/// One residual block: its key prefix, stride and whether it has a projection shortcut.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) prefix: String,
    pub(crate) stride: usize,
    pub(crate) downsample: bool,
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
        conv: &str,
        bn: &str,
        stride: usize,
        act: Activation,
        mode: GroupMode,
    ) -> Result<Tensor> {
        let w = weight(&self.parts.params, &format!("{conv}.weight"), mode);
        let pad = w.dim(2)? / 2;
        let y = x.conv2d(&w, pad, stride, 1, 1)?;
        self.bns[bn].forward(&self.parts.params, &y, act, ChannelDim::Second, mode)
    }

    fn block(&self, x: &Tensor, b: &Block, mode: GroupMode) -> Result<Tensor> {
        let p = &b.prefix;
        let relu = Activation::Relu;
        let none = Activation::None;
        let h = if self.spec.bottleneck {
            let h = self.conv_bn(x, &format!("{p}.conv1"), &format!("{p}.bn1"), 1, relu, mode)?;
            let h = self.conv_bn(
                &h,
                &format!("{p}.conv2"),
                &format!("{p}.bn2"),
                b.stride,
                relu,
                mode,
            )?;
            self.conv_bn(
                &h,
                &format!("{p}.conv3"),
                &format!("{p}.bn3"),
                1,
                none,
                mode,
            )?
        } else {
            let h = self.conv_bn(
                x,
                &format!("{p}.conv1"),
                &format!("{p}.bn1"),
                b.stride,
                relu,
                mode,
            )?;
            self.conv_bn(
                &h,
                &format!("{p}.conv2"),
                &format!("{p}.bn2"),
                1,
                none,
                mode,
            )?
        };
        let shortcut = if b.downsample {
            self.conv_bn(
                x,
                &format!("{p}.downsample.0"),
                &format!("{p}.downsample.1"),
                b.stride,
                none,
                mode,
            )?
        } else {
            x.clone()
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
        let mode = self.parts.mode(0, training);
        let h = self.conv_bn(x, "conv1", "bn1", 2, Activation::Relu, mode)?;
        let mut h = max_pool2d(
            &h,
            PoolGeometry {
                kernel: 3,
                stride: 2,
                pad: 1,
            },
        )?;
        for (li, stage) in self.stages.iter().enumerate() {
            let mode = self.parts.mode(li + 1, training);
            for b in stage {
                h = self.block(&h, b, mode)?;
            }
        }
        global_pool_nchw(&h)
    }

    fn onnx(
        &self,
        g: &mut crate::onnx::Graph,
        x: &str,
        _hw: (usize, usize),
    ) -> anyhow::Result<crate::onnx::Value> {
        crate::onnx::resnet::resnet(g, self, x)
    }
}
