//! timm's `MobileNetV3` class: MobileNetV3-Large and -Small (and the `tf_` ports and `minimal`
//! variants): EfficientNet's blocks with hard-swish, squeeze-excite gated by hard-sigmoid, and a
//! 1x1 `conv_head` (with bias, no BatchNorm) and activation applied after global pooling.

use super::efficientnet_blocks::{Act, ArchDef, Family, Scale, SeStyle, Trunk};
use super::efficientnet_tape::{self, Tape, TapedPass};
use super::layers::{global_pool_nhwc, pooled_conv_act, weight};
use super::{Backbone, BackboneParts, Params};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};

/// MobileNetV3-Large's arch definition (timm's `_gen_mobilenet_v3`).
const LARGE: ArchDef = &[
    &["ds_r1_k3_s1_e1_c16_nre"],
    &["ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"],
    &["ir_r3_k5_s2_e3_c40_se0.25_nre"],
    &[
        "ir_r1_k3_s2_e6_c80",
        "ir_r1_k3_s1_e2.5_c80",
        "ir_r2_k3_s1_e2.3_c80",
    ],
    &["ir_r2_k3_s1_e6_c112_se0.25"],
    &["ir_r3_k5_s2_e6_c160_se0.25"],
    &["cn_r1_k1_s1_c960"],
];

/// MobileNetV3-Small's arch definition.
const SMALL: ArchDef = &[
    &["ds_r1_k3_s2_e1_c16_se0.25_nre"],
    &["ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"],
    &["ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"],
    &["ir_r2_k5_s1_e3_c48_se0.25"],
    &["ir_r3_k5_s2_e6_c96_se0.25"],
    &["cn_r1_k1_s1_c576"],
];

/// MobileNetV3-Large-minimal's arch definition (ReLU, 3x3 kernels, no squeeze-excite).
const LARGE_MINIMAL: ArchDef = &[
    &["ds_r1_k3_s1_e1_c16"],
    &["ir_r1_k3_s2_e4_c24", "ir_r1_k3_s1_e3_c24"],
    &["ir_r3_k3_s2_e3_c40"],
    &[
        "ir_r1_k3_s2_e6_c80",
        "ir_r1_k3_s1_e2.5_c80",
        "ir_r2_k3_s1_e2.3_c80",
    ],
    &["ir_r2_k3_s1_e6_c112"],
    &["ir_r3_k3_s2_e6_c160"],
    &["cn_r1_k1_s1_c960"],
];

/// MobileNetV3-Small-minimal's arch definition.
const SMALL_MINIMAL: ArchDef = &[
    &["ds_r1_k3_s2_e1_c16"],
    &["ir_r1_k3_s2_e4.5_c24", "ir_r1_k3_s1_e3.67_c24"],
    &["ir_r1_k3_s2_e4_c40", "ir_r2_k3_s1_e6_c40"],
    &["ir_r2_k3_s1_e3_c48"],
    &["ir_r3_k3_s2_e6_c96"],
    &["cn_r1_k1_s1_c576"],
];

/// What distinguishes one family member; widths and depths come from the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MobileNetV3Spec {
    pub arch_def: ArchDef,
    pub family: Family,
    /// Width of `conv_head` when the checkpoint lacks it.
    pub head: usize,
}

impl MobileNetV3Spec {
    /// The spec of a timm architecture name: `[tf_]mobilenetv3_{large,small}_[minimal_]*`, any
    /// width or depth variant.
    pub fn for_arch(arch: &str) -> Option<Self> {
        let tf = arch.starts_with("tf_");
        let name = arch.strip_prefix("tf_").unwrap_or(arch);
        let minimal = name.contains("_minimal_");
        let (arch_def, head) = if name.starts_with("mobilenetv3_large_") {
            (if minimal { LARGE_MINIMAL } else { LARGE }, 1280)
        } else if name.starts_with("mobilenetv3_small_") {
            (if minimal { SMALL_MINIMAL } else { SMALL }, 1024)
        } else {
            return None;
        };
        Some(Self {
            arch_def,
            family: Family {
                act: if minimal { Act::Relu } else { Act::HardSwish },
                tf,
                se: SeStyle::MobileNetV3,
            },
            head,
        })
    }
}

/// A MobileNetV3 backbone.
pub struct MobileNetV3 {
    parts: BackboneParts,
    pub(crate) trunk: Trunk,
}

impl MobileNetV3 {
    /// Builds `arch` from `params`, checking every tensor it needs.
    pub fn new(arch: &str, spec: MobileNetV3Spec, params: Params) -> anyhow::Result<Self> {
        let trunk = Trunk::new(&params, spec.arch_def, Scale::ONE, 16, spec.family)?;
        let head = params
            .dims("conv_head.weight")
            .and_then(|d| d.first().copied())
            .unwrap_or(spec.head);
        params.get("conv_head.weight", &[head, trunk.out_ch(), 1, 1])?;
        params.get("conv_head.bias", &[head])?;
        let mut groups = trunk.groups();
        groups.push(("head".to_string(), vec!["conv_head.".to_string()]));
        let mut params = params;
        params.retain(|k| !k.starts_with("classifier."));
        Ok(Self {
            parts: BackboneParts::new(arch, params, groups, head),
            trunk,
        })
    }

    /// Pooled features (after `conv_head`) without a candle graph, and the tape for their
    /// backward.
    fn forward_taped(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        let mut pass = TapedPass::new(&self.trunk, &self.parts.params);
        let h = pass.trunk(x)?;
        let last = self.parts.groups.len() - 1;
        let pooled = pass.pool(last, &h)?;
        let act = self.trunk.family.act.activation();
        let features = pass.pooled_conv(last, "conv_head", pooled, act)?;
        Ok((features, pass.finish()))
    }

    /// The feature map before pooling (and before `conv_head`), channels-last `[N, H, W, C]`.
    pub fn feature_map(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let parts = &self.parts;
        self.trunk
            .forward(&parts.params, x, |g| parts.mode(g, training))
    }
}

impl Backbone for MobileNetV3 {
    fn parts(&self) -> &BackboneParts {
        &self.parts
    }

    fn parts_mut(&mut self) -> &mut BackboneParts {
        &mut self.parts
    }

    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let parts = &self.parts;
        let pooled = global_pool_nhwc(&self.feature_map(x, training)?)?;
        let mode = parts.mode(parts.groups.len() - 1, training);
        let w = weight(&parts.params, "conv_head.weight", mode);
        let b = weight(&parts.params, "conv_head.bias", mode);
        let act = self.trunk.family.act.activation();
        Ok(pooled_conv_act(&pooled, &w, &b, act)?.1)
    }

    fn architecture(&self) -> super::Architecture<'_> {
        super::Architecture::MobileNetV3(self)
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
