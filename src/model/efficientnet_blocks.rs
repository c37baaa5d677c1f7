//! The stem and blocks that timm's `EfficientNet` and `MobileNetV3` classes are made of (timm's
//! `_efficientnet_blocks.py`), the arch-definition strings that lay them out
//! (`_efficientnet_builder.py`), and how a checkpoint sizes them. Channels-last internally.

use super::layers::{
    conv1x1_nhwc, depthwise_weight_nhwc, global_pool_nhwc, input_conv_nhwc, pooled_conv_act,
    same_padding, weight, BatchNorm,
};
use super::ops::bn_act::{Activation, ChannelDim};
use super::ops::channel_affine::gate_channels;
use super::ops::depthwise::{depthwise_conv2d, DwGeometry};
use super::{GroupMode, Params};
use candle_core::{Result, Tensor};
use std::collections::HashMap;

/// An activation function of a stem, block or head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Relu,
    Relu6,
    Silu,
    HardSwish,
}

impl Act {
    /// The activation as the BatchNorm op fuses it.
    pub fn activation(self) -> Activation {
        match self {
            Act::Relu => Activation::Relu,
            Act::Relu6 => Activation::Relu6,
            Act::Silu => Activation::Silu,
            Act::HardSwish => Activation::HardSwish,
        }
    }
}

/// timm's `make_divisible(v, 8)`: nearest multiple of 8, never more than 10% below `v`.
pub fn make_divisible(v: f64) -> usize {
    let d = 8.0;
    let mut r = ((v + d / 2.0) / d).floor() * d;
    r = r.max(d);
    if r < 0.9 * v {
        r += d;
    }
    r as usize
}

/// A block type of timm's arch strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// `ds` / `dsa`: depthwise, pointwise; `dsa` activates after the pointwise convolution.
    DepthwiseSeparable { pw_act: bool },
    /// `ir`: pointwise expansion, depthwise, pointwise projection.
    InvertedResidual,
    /// `cn`: a 1x1 convolution, BatchNorm and activation.
    ConvBnAct,
}

/// One block string of a timm arch definition, e.g. `ir_r2_k3_s2_e6_c24_se0.25_nre`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockDef {
    pub kind: BlockKind,
    pub repeats: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Expansion ratio of an inverted residual.
    pub exp: f64,
    pub channels: usize,
    /// Squeeze-excite.
    pub se: bool,
    /// `nre`: ReLU instead of the model's activation.
    pub relu: bool,
    /// No residual connection even where the shapes allow one (`noskip`, and every `dsa`).
    pub noskip: bool,
}

impl BlockDef {
    /// Decodes a block string of one of the static arch definitions (a malformed one is a bug,
    /// caught by the unit tests).
    pub fn decode(s: &str) -> Self {
        let mut ops = s.split('_');
        let kind = match ops.next() {
            Some("ds") => BlockKind::DepthwiseSeparable { pw_act: false },
            Some("dsa") => BlockKind::DepthwiseSeparable { pw_act: true },
            Some("ir") => BlockKind::InvertedResidual,
            Some("cn") => BlockKind::ConvBnAct,
            _ => panic!("unknown block type in {s:?}"),
        };
        let mut def = Self {
            kind,
            repeats: 1,
            kernel: 3,
            stride: 1,
            exp: 1.0,
            channels: 0,
            se: false,
            relu: false,
            noskip: kind == BlockKind::DepthwiseSeparable { pw_act: true },
        };
        for op in ops {
            match op {
                "nre" => def.relu = true,
                "noskip" => def.noskip = true,
                _ => {
                    let digits = op.find(|c: char| c.is_ascii_digit()).unwrap_or(op.len());
                    let (key, value) = op.split_at(digits);
                    let v: f64 = value
                        .parse()
                        .unwrap_or_else(|_| panic!("bad option {op:?} in {s:?}"));
                    match key {
                        "r" => def.repeats = v as usize,
                        "k" => def.kernel = v as usize,
                        "s" => def.stride = v as usize,
                        "e" => def.exp = v,
                        "c" => def.channels = v as usize,
                        "se" => def.se = v > 0.0,
                        _ => panic!("unknown option {op:?} in {s:?}"),
                    }
                }
            }
        }
        def
    }
}

/// A timm arch definition: the block strings of each stage.
pub type ArchDef = &'static [&'static [&'static str]];

/// How a family member scales its arch definition; used for the shapes a checkpoint is checked
/// against where it does not say itself (a checkpoint's own shapes and depth always win).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub width: f64,
    pub depth: f64,
    /// The first and last stages keep their depth (EfficientNet-Lite).
    pub fix_first_last: bool,
}

impl Scale {
    /// The arch definition as written.
    pub const ONE: Scale = Scale {
        width: 1.0,
        depth: 1.0,
        fix_first_last: false,
    };
}

/// How a squeeze-excite layer sizes, activates and gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeStyle {
    /// EfficientNet: a quarter of the block's input channels, the block's activation, sigmoid.
    EfficientNet,
    /// MobileNetV3: a quarter of the expanded channels (rounded to 8), ReLU, hard-sigmoid.
    MobileNetV3,
}

impl SeStyle {
    /// The activations after `conv_reduce` and after `conv_expand` (the gate), in a block
    /// activated by `act`.
    pub fn activations(self, act: Act) -> (Activation, Activation) {
        match self {
            SeStyle::EfficientNet => (act.activation(), Activation::Sigmoid),
            SeStyle::MobileNetV3 => (Activation::Relu, Activation::HardSigmoid),
        }
    }
}

/// The values of one squeeze-excite application a hand-written backward needs.
pub struct SeTrace {
    /// The pooled input `[N, C]`.
    pub pooled: Tensor,
    /// `pooled @ conv_reduce^T`, before its bias.
    pub reduce_product: Tensor,
    /// `conv_reduce`'s activated output `[N, R]`.
    pub reduced: Tensor,
    /// `reduced @ conv_expand^T`, before its bias.
    pub expand_product: Tensor,
    /// The gate `[N, C]`.
    pub gate: Tensor,
}

/// What a family's blocks share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Family {
    /// The activation of the stem and of every block not marked `nre`.
    pub act: Act,
    /// TensorFlow "SAME" padding and BatchNorm eps 1e-3 (the `tf_` ports).
    pub tf: bool,
    pub se: SeStyle,
}

/// One block, sized.
#[derive(Debug, Clone)]
pub struct Block {
    pub prefix: String,
    pub kind: BlockKind,
    pub kernel: usize,
    pub stride: usize,
    pub in_ch: usize,
    /// Channels of the depthwise convolution (the expansion of an inverted residual).
    pub mid_ch: usize,
    pub out_ch: usize,
    /// Reduced channels of the squeeze-excite, 0 without one.
    pub se_ch: usize,
    pub skip: bool,
    pub act: Act,
}

/// The stem (`conv_stem`, `bn1`) and the stages of blocks (`blocks.S.I`), sized from a checkpoint.
pub struct Trunk {
    pub family: Family,
    pub stem_ch: usize,
    pub stages: Vec<Vec<Block>>,
    bns: HashMap<String, BatchNorm>,
}

impl Trunk {
    /// Sizes the stem and the stages from `params`: widths and kernels from the tensors' shapes,
    /// each stage's depth from its blocks' keys (at least the arch definition's). The arch
    /// definition gives strides and activations, and the shapes of tensors `params` lacks (so
    /// the error names what a complete file holds).
    pub fn new(
        params: &Params,
        arch: ArchDef,
        scale: Scale,
        default_stem: usize,
        family: Family,
    ) -> anyhow::Result<Self> {
        let stem_ch = dim(params, "conv_stem.weight", 0).unwrap_or(default_stem);
        params.get("conv_stem.weight", &[stem_ch, 3, 3, 3])?;
        let mut trunk = Self {
            family,
            stem_ch,
            stages: Vec::new(),
            bns: HashMap::new(),
        };
        trunk.add_bn(params, "bn1", stem_ch)?;
        let mut in_ch = stem_ch;
        for (si, strings) in arch.iter().enumerate() {
            let fixed = scale.fix_first_last && (si == 0 || si + 1 == arch.len());
            let mut defaults = Vec::new();
            for s in strings.iter() {
                let def = BlockDef::decode(s);
                let repeats = if fixed {
                    def.repeats
                } else {
                    (def.repeats as f64 * scale.depth).ceil() as usize
                };
                defaults.extend(std::iter::repeat_n(def, repeats));
            }
            let present = (0..)
                .take_while(|i| params.has_prefix(&format!("blocks.{si}.{i}.")))
                .count();
            let mut stage = Vec::new();
            for bi in 0..present.max(defaults.len()) {
                let def = defaults[bi.min(defaults.len() - 1)];
                let stride = if bi == 0 { def.stride } else { 1 };
                let block = trunk.size_block(
                    params,
                    format!("blocks.{si}.{bi}"),
                    def,
                    in_ch,
                    stride,
                    scale.width,
                )?;
                in_ch = block.out_ch;
                stage.push(block);
            }
            trunk.stages.push(stage);
        }
        Ok(trunk)
    }

    /// Sizes and checks one block.
    fn size_block(
        &mut self,
        params: &Params,
        prefix: String,
        def: BlockDef,
        in_ch: usize,
        stride: usize,
        width: f64,
    ) -> anyhow::Result<Block> {
        let d = |name: &str, i: usize| dim(params, &format!("{prefix}.{name}.weight"), i);
        let default_out = make_divisible(def.channels as f64 * width);
        let act = if def.relu { Act::Relu } else { self.family.act };
        let kernel = d("conv_dw", 2).unwrap_or(def.kernel);
        let (mid_ch, out_ch) = match def.kind {
            BlockKind::InvertedResidual => (
                d("conv_pw", 0).unwrap_or(make_divisible(in_ch as f64 * def.exp)),
                d("conv_pwl", 0).unwrap_or(default_out),
            ),
            BlockKind::DepthwiseSeparable { .. } => (in_ch, d("conv_pw", 0).unwrap_or(default_out)),
            BlockKind::ConvBnAct => {
                let out = d("conv", 0).unwrap_or(default_out);
                (out, out)
            }
        };
        let has_se = def.kind != BlockKind::ConvBnAct
            && (def.se || params.has_prefix(&format!("{prefix}.se.")));
        let se_ch = if has_se {
            d("se.conv_reduce", 0).unwrap_or(match self.family.se {
                SeStyle::EfficientNet => ((in_ch as f64) * 0.25).round().max(1.0) as usize,
                SeStyle::MobileNetV3 => make_divisible(mid_ch as f64 * 0.25),
            })
        } else {
            0
        };
        let p = &prefix;
        let k = kernel;
        match def.kind {
            BlockKind::ConvBnAct => {
                params.get(&format!("{p}.conv.weight"), &[out_ch, in_ch, 1, 1])?;
                self.add_bn(params, &format!("{p}.bn1"), out_ch)?;
            }
            BlockKind::InvertedResidual => {
                params.get(&format!("{p}.conv_pw.weight"), &[mid_ch, in_ch, 1, 1])?;
                self.add_bn(params, &format!("{p}.bn1"), mid_ch)?;
                params.get(&format!("{p}.conv_dw.weight"), &[mid_ch, 1, k, k])?;
                self.add_bn(params, &format!("{p}.bn2"), mid_ch)?;
                params.get(&format!("{p}.conv_pwl.weight"), &[out_ch, mid_ch, 1, 1])?;
                self.add_bn(params, &format!("{p}.bn3"), out_ch)?;
            }
            BlockKind::DepthwiseSeparable { .. } => {
                params.get(&format!("{p}.conv_dw.weight"), &[in_ch, 1, k, k])?;
                self.add_bn(params, &format!("{p}.bn1"), in_ch)?;
                params.get(&format!("{p}.conv_pw.weight"), &[out_ch, in_ch, 1, 1])?;
                self.add_bn(params, &format!("{p}.bn2"), out_ch)?;
            }
        }
        if se_ch > 0 {
            params.get(
                &format!("{p}.se.conv_reduce.weight"),
                &[se_ch, mid_ch, 1, 1],
            )?;
            params.get(&format!("{p}.se.conv_reduce.bias"), &[se_ch])?;
            params.get(
                &format!("{p}.se.conv_expand.weight"),
                &[mid_ch, se_ch, 1, 1],
            )?;
            params.get(&format!("{p}.se.conv_expand.bias"), &[mid_ch])?;
        }
        let skip = match def.kind {
            BlockKind::ConvBnAct => false,
            _ => stride == 1 && in_ch == out_ch && !def.noskip,
        };
        Ok(Block {
            prefix,
            kind: def.kind,
            kernel,
            stride,
            in_ch,
            mid_ch,
            out_ch,
            se_ch,
            skip,
            act,
        })
    }

    /// Checks a BatchNorm layer of `channels` and registers it under `prefix`.
    pub fn add_bn(&mut self, params: &Params, prefix: &str, channels: usize) -> anyhow::Result<()> {
        let (eps, momentum) = if self.family.tf {
            (1e-3, 0.01)
        } else {
            (1e-5, 0.1)
        };
        let bn = BatchNorm::new(params, prefix, channels, eps, momentum)?;
        self.bns.insert(prefix.to_string(), bn);
        Ok(())
    }

    /// The BatchNorm layer registered under `prefix`.
    pub fn batchnorm(&self, prefix: &str) -> &BatchNorm {
        &self.bns[prefix]
    }

    /// Channels of the last block's output.
    pub fn out_ch(&self) -> usize {
        self.stages
            .iter()
            .flatten()
            .last()
            .map_or(self.stem_ch, |b| b.out_ch)
    }

    /// Layer groups: the stem, then each stage.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups = vec![(
            "stem".to_string(),
            vec!["conv_stem.".to_string(), "bn1.".to_string()],
        )];
        for si in 0..self.stages.len() {
            groups.push((format!("blocks.{si}"), vec![format!("blocks.{si}.")]));
        }
        groups
    }

    /// Padding (top, bottom, left, right) of the 3x3 stride-2 stem on an `h` x `w` input.
    pub fn stem_padding(&self, h: usize, w: usize) -> [usize; 4] {
        if self.family.tf {
            let (t, b) = same_padding(h, 3, 2);
            let (l, r) = same_padding(w, 3, 2);
            [t, b, l, r]
        } else {
            [1; 4]
        }
    }

    /// Geometry of block `b`'s depthwise convolution on an `h` x `w` input.
    pub fn dw_geometry(&self, b: &Block, h: usize, w: usize) -> DwGeometry {
        if self.family.tf {
            DwGeometry::same(h, w, b.kernel, b.stride)
        } else {
            DwGeometry::symmetric(h, w, b.kernel, b.stride, b.kernel / 2)
        }
    }

    /// BatchNorm `prefix` followed by `act`.
    pub fn bn(
        &self,
        params: &Params,
        x: &Tensor,
        prefix: &str,
        act: Option<Act>,
        mode: GroupMode,
    ) -> Result<Tensor> {
        let act = act.map_or(Activation::None, Act::activation);
        self.bns[prefix].forward(params, x, act, ChannelDim::Last, mode)
    }

    /// The stem: input `[N, 3, H, W]` to channels-last `[N, H/2, W/2, C]`.
    pub fn stem(&self, params: &Params, x: &Tensor, mode: GroupMode) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let stem = weight(params, "conv_stem.weight", mode);
        let y = input_conv_nhwc(x, &stem, 2, self.stem_padding(h, w))?;
        self.bn(params, &y, "bn1", Some(self.family.act), mode)
    }

    fn depthwise(&self, params: &Params, x: &Tensor, b: &Block, mode: GroupMode) -> Result<Tensor> {
        let (_, h, w, c) = x.dims4()?;
        let wt = weight(params, &format!("{}.conv_dw.weight", b.prefix), mode);
        let wt = depthwise_weight_nhwc(&wt, c, b.kernel)?;
        depthwise_conv2d(x, &wt, self.dw_geometry(b, h, w))
    }

    /// Squeeze-excite of block `b` on its depthwise output `x`, and what its backward needs.
    pub fn squeeze_excite(
        &self,
        params: &Params,
        x: &Tensor,
        b: &Block,
        mode: GroupMode,
    ) -> Result<(Tensor, SeTrace)> {
        let w = |n: &str| weight(params, &format!("{}.se.{n}", b.prefix), mode);
        let (reduce_act, gate_act) = self.family.se.activations(b.act);
        let pooled = global_pool_nhwc(x)?;
        let (reduce_product, reduced) = pooled_conv_act(
            &pooled,
            &w("conv_reduce.weight"),
            &w("conv_reduce.bias"),
            reduce_act,
        )?;
        let (expand_product, gate) = pooled_conv_act(
            &reduced,
            &w("conv_expand.weight"),
            &w("conv_expand.bias"),
            gate_act,
        )?;
        let y = gate_channels(x, &gate)?;
        Ok((
            y,
            SeTrace {
                pooled,
                reduce_product,
                reduced,
                expand_product,
                gate,
            },
        ))
    }

    /// Block `b` on channels-last `x`.
    pub fn block(&self, params: &Params, x: &Tensor, b: &Block, mode: GroupMode) -> Result<Tensor> {
        let w = |n: &str| weight(params, &format!("{}.{n}.weight", b.prefix), mode);
        let bn = |h: &Tensor, name: &str, act: Option<Act>| {
            self.bn(params, h, &format!("{}.{name}", b.prefix), act, mode)
        };
        let mut h = match b.kind {
            BlockKind::ConvBnAct => return bn(&conv1x1_nhwc(x, &w("conv"))?, "bn1", Some(b.act)),
            BlockKind::InvertedResidual => {
                bn(&conv1x1_nhwc(x, &w("conv_pw"))?, "bn1", Some(b.act))?
            }
            BlockKind::DepthwiseSeparable { .. } => x.clone(),
        };
        h = self.depthwise(params, &h, b, mode)?;
        let (dw_bn, out_bn, proj) = b.layer_names();
        h = bn(&h, dw_bn, Some(b.act))?;
        if b.se_ch > 0 {
            h = self.squeeze_excite(params, &h, b, mode)?.0;
        }
        h = conv1x1_nhwc(&h, &w(proj))?;
        h = bn(&h, out_bn, b.out_act())?;
        if b.skip {
            h = (h + x)?;
        }
        Ok(h)
    }

    /// The stem and every stage; `mode(g)` is the mode of layer group `g` (0: the stem).
    pub fn forward(
        &self,
        params: &Params,
        x: &Tensor,
        mode: impl Fn(usize) -> GroupMode,
    ) -> Result<Tensor> {
        let mut h = self.stem(params, x, mode(0))?;
        for (si, stage) in self.stages.iter().enumerate() {
            let m = mode(si + 1);
            for b in stage {
                h = self.block(params, &h, b, m)?;
            }
        }
        Ok(h)
    }
}

impl Block {
    /// Names of the depthwise convolution's BatchNorm, the output BatchNorm and the output
    /// projection of a depthwise-separable block or an inverted residual.
    pub fn layer_names(&self) -> (&'static str, &'static str, &'static str) {
        match self.kind {
            BlockKind::InvertedResidual => ("bn2", "bn3", "conv_pwl"),
            _ => ("bn1", "bn2", "conv_pw"),
        }
    }

    /// The activation after the output projection's BatchNorm (only `dsa` blocks have one).
    pub fn out_act(&self) -> Option<Act> {
        match self.kind {
            BlockKind::DepthwiseSeparable { pw_act: true } => Some(self.act),
            _ => None,
        }
    }
}

/// Size `i` of tensor `name`, when `params` has it.
fn dim(params: &Params, name: &str, i: usize) -> Option<usize> {
    params.dims(name).and_then(|d| d.get(i).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_rounding_follows_timm() {
        assert_eq!(make_divisible(16.0 * 1.1), 16);
        assert_eq!(make_divisible(24.0 * 1.4), 32);
        assert_eq!(make_divisible(320.0 * 1.4), 448);
        assert_eq!(make_divisible(40.0 * 1.2), 48);
        assert_eq!(make_divisible(72.0 * 0.25), 24);
    }

    #[test]
    fn block_strings_decode_as_timm_reads_them() {
        let d = BlockDef::decode("ir_r3_k5_s2_e2.5_c40_se0.25_nre");
        assert_eq!(d.kind, BlockKind::InvertedResidual);
        assert_eq!((d.repeats, d.kernel, d.stride, d.channels), (3, 5, 2, 40));
        assert_eq!(d.exp, 2.5);
        assert!(d.se && d.relu && !d.noskip);
        let d = BlockDef::decode("dsa_r2_k3_s2_c128");
        assert_eq!(d.kind, BlockKind::DepthwiseSeparable { pw_act: true });
        assert!(d.noskip && !d.se && !d.relu);
        let d = BlockDef::decode("cn_r1_k1_s1_c960");
        assert_eq!(
            (d.kind, d.kernel, d.channels),
            (BlockKind::ConvBnAct, 1, 960)
        );
    }
}
