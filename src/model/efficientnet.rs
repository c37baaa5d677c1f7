//! timm's `EfficientNet` class: EfficientNet-Lite0..4, EfficientNet-B0, and the MobileNetV1 and
//! MobileNetV2 families it also builds (as timm's `_gen_mobilenet_v1` / `_gen_mobilenet_v2` do),
//! channels-last internally, with a hand-written backward (`efficientnet_tape`).

use super::efficientnet_blocks::{make_divisible, Act, ArchDef, Family, Scale, SeStyle, Trunk};
use super::efficientnet_tape::{self, Tape, TapedPass};
use super::layers::{conv1x1_nhwc, global_pool_nhwc, weight};
use super::{Backbone, BackboneParts, Params};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};

/// EfficientNet-B0's arch definition; Lite is the same without squeeze-excite.
const EFFICIENTNET_B0: ArchDef = &[
    &["ds_r1_k3_s1_e1_c16_se0.25"],
    &["ir_r2_k3_s2_e6_c24_se0.25"],
    &["ir_r2_k5_s2_e6_c40_se0.25"],
    &["ir_r3_k3_s2_e6_c80_se0.25"],
    &["ir_r3_k5_s1_e6_c112_se0.25"],
    &["ir_r4_k5_s2_e6_c192_se0.25"],
    &["ir_r1_k3_s1_e6_c320_se0.25"],
];

/// EfficientNet-Lite's arch definition.
const EFFICIENTNET_LITE: ArchDef = &[
    &["ds_r1_k3_s1_e1_c16"],
    &["ir_r2_k3_s2_e6_c24"],
    &["ir_r2_k5_s2_e6_c40"],
    &["ir_r3_k3_s2_e6_c80"],
    &["ir_r3_k5_s1_e6_c112"],
    &["ir_r4_k5_s2_e6_c192"],
    &["ir_r1_k3_s1_e6_c320"],
];

/// MobileNetV1's arch definition (timm's `_gen_mobilenet_v1`).
const MOBILENET_V1: ArchDef = &[
    &["dsa_r1_k3_s1_c64"],
    &["dsa_r2_k3_s2_c128"],
    &["dsa_r2_k3_s2_c256"],
    &["dsa_r6_k3_s2_c512"],
    &["dsa_r2_k3_s2_c1024"],
];

/// MobileNetV2's arch definition (timm's `_gen_mobilenet_v2`).
const MOBILENET_V2: ArchDef = &[
    &["ds_r1_k3_s1_c16"],
    &["ir_r2_k3_s2_e6_c24"],
    &["ir_r3_k3_s2_e6_c32"],
    &["ir_r4_k3_s2_e6_c64"],
    &["ir_r3_k3_s1_e6_c96"],
    &["ir_r3_k3_s2_e6_c160"],
    &["ir_r1_k3_s1_e6_c320"],
];

/// What distinguishes one family member. Widths and depths come from the checkpoint; `scale`,
/// `stem` and `head` give the shapes a checkpoint lacking a tensor is checked against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EfficientNetSpec {
    pub arch_def: ArchDef,
    pub scale: Scale,
    pub family: Family,
    /// Default stem width.
    pub stem: usize,
    /// Default width of `conv_head`; `None`: no head convolution unless the checkpoint has one
    /// (MobileNetV1, whose `h` variants have one).
    pub head: Option<usize>,
}

impl EfficientNetSpec {
    /// The spec of a timm architecture name, if it is one of this class's supported families
    /// (every `mobilenetv1_*` and `mobilenetv2_*` width and depth variant).
    pub fn for_arch(arch: &str) -> Option<Self> {
        let relu6 = |tf| Family {
            act: Act::Relu6,
            tf,
            se: SeStyle::EfficientNet,
        };
        let lite = |width: f64, depth| Self {
            arch_def: EFFICIENTNET_LITE,
            scale: Scale {
                width,
                depth,
                fix_first_last: true,
            },
            family: relu6(true),
            stem: 32,
            head: Some(1280),
        };
        let b0 = |tf| Self {
            arch_def: EFFICIENTNET_B0,
            scale: Scale::ONE,
            family: Family {
                act: Act::Silu,
                tf,
                se: SeStyle::EfficientNet,
            },
            stem: 32,
            head: Some(1280),
        };
        let mobilenet = |arch_def, head| Self {
            arch_def,
            scale: Scale::ONE,
            family: relu6(false),
            stem: 32,
            head,
        };
        Some(match arch {
            "tf_efficientnet_lite0" => lite(1.0, 1.0),
            "tf_efficientnet_lite1" => lite(1.0, 1.1),
            "tf_efficientnet_lite2" => lite(1.1, 1.2),
            "tf_efficientnet_lite3" => lite(1.2, 1.4),
            "tf_efficientnet_lite4" => lite(1.4, 1.8),
            "efficientnet_b0" => b0(false),
            "tf_efficientnet_b0" => b0(true),
            a if a.starts_with("mobilenetv1_") => mobilenet(MOBILENET_V1, None),
            a if a.starts_with("mobilenetv2_") => mobilenet(MOBILENET_V2, Some(1280)),
            _ => return None,
        })
    }
}

/// An EfficientNet-class backbone.
pub struct EfficientNet {
    parts: BackboneParts,
    pub(crate) trunk: Trunk,
    /// Width of `conv_head` + `bn2`, when the model has them.
    pub(crate) head_ch: Option<usize>,
}

impl EfficientNet {
    /// Builds `arch` from `params`, checking every tensor it needs.
    pub fn new(arch: &str, spec: EfficientNetSpec, params: Params) -> anyhow::Result<Self> {
        let s = spec.scale;
        let stem = if s.fix_first_last {
            spec.stem
        } else {
            make_divisible(spec.stem as f64 * s.width)
        };
        let mut trunk = Trunk::new(&params, spec.arch_def, s, stem, spec.family)?;
        let head_ch = match (params.dims("conv_head.weight"), spec.head) {
            (Some(d), _) => d.first().copied(),
            (None, Some(h)) if s.fix_first_last => Some(h),
            (None, Some(h)) => Some(make_divisible(h as f64 * s.width).max(h)),
            (None, None) => None,
        };
        let mut groups = trunk.groups();
        if let Some(h) = head_ch {
            params.get("conv_head.weight", &[h, trunk.out_ch(), 1, 1])?;
            trunk.add_bn(&params, "bn2", h)?;
            groups.push((
                "head".to_string(),
                vec!["conv_head.".to_string(), "bn2.".to_string()],
            ));
        }
        let mut params = params;
        params.retain(|k| !k.starts_with("classifier."));
        let features = head_ch.unwrap_or(trunk.out_ch());
        Ok(Self {
            parts: BackboneParts::new(arch, params, groups, features),
            trunk,
            head_ch,
        })
    }

    /// The feature map before pooling, channels-last `[N, H, W, C]`.
    pub fn feature_map(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let parts = &self.parts;
        let p = &parts.params;
        let h = self.trunk.forward(p, x, |g| parts.mode(g, training))?;
        if self.head_ch.is_none() {
            return Ok(h);
        }
        let mode = parts.mode(parts.groups.len() - 1, training);
        let h = conv1x1_nhwc(&h, &weight(p, "conv_head.weight", mode))?;
        self.trunk
            .bn(p, &h, "bn2", Some(self.trunk.family.act), mode)
    }
}

impl EfficientNet {
    /// Pooled features without a candle graph, and the tape for their backward.
    fn forward_taped(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        let mut pass = TapedPass::new(&self.trunk, &self.parts.params);
        let mut h = pass.trunk(x)?;
        let last = self.parts.groups.len() - 1;
        if self.head_ch.is_some() {
            h = pass.conv(last, "conv_head.weight", h)?;
            h = pass.bn(last, "bn2", h, self.trunk.family.act.activation())?;
        }
        let pooled = pass.pool(last, &h)?;
        Ok((pooled, pass.finish()))
    }
}

impl Backbone for EfficientNet {
    fn parts(&self) -> &BackboneParts {
        &self.parts
    }

    fn parts_mut(&mut self) -> &mut BackboneParts {
        &mut self.parts
    }

    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        global_pool_nhwc(&self.feature_map(x, training)?)
    }

    fn architecture(&self) -> super::Architecture<'_> {
        super::Architecture::EfficientNet(self)
    }

    fn forward_taped(&self, x: &Tensor) -> Option<Result<(Tensor, Box<dyn std::any::Any + Send>)>> {
        efficientnet_tape::forward_boxed(&self.parts, || self.forward_taped(x))
    }

    fn backward_taped(
        &self,
        tape: Box<dyn std::any::Any + Send>,
        grad: &Tensor,
        grads: &mut GradStore,
    ) -> Result<()> {
        efficientnet_tape::backward_boxed(tape, &self.trunk, &self.parts, grad, grads)
    }
}
