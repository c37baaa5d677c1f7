//! timm's `EfficientNet` class: EfficientNet-Lite0..4, EfficientNet-B0, and the MobileNetV1 and
//! MobileNetV2 families it also builds (as timm's `_gen_mobilenet_v1` / `_gen_mobilenet_v2` do),
//! channels-last internally, with a hand-written backward for the ReLU6 members.

use super::efficientnet_blocks::{
    make_divisible, Act, ArchDef, BlockKind, Family, Scale, SeStyle, Trunk,
};
use super::layers::{conv1x1_nhwc, depthwise_weight_nhwc, global_pool_nhwc, stem_patches, weight};
use super::ops::bn_act::{backward as bn_backward, bn_act, Activation, ChannelDim};
use super::ops::depthwise::{
    depthwise_conv2d, grad_input as dw_grad_input, grad_weight as dw_grad_weight, DwGeometry,
};
use super::{Backbone, BackboneParts, GroupMode, Params};
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
    trunk: Trunk,
    /// Width of `conv_head` + `bn2`, when the model has them.
    head_ch: Option<usize>,
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

/// A BatchNorm (+ activation) application kept for the hand-written backward.
struct BnRecord {
    prefix: String,
    input: Tensor,
    output: Tensor,
    act: Activation,
}

/// A 1x1 convolution kept for the hand-written backward: `output = input @ weight^T`.
struct ConvRecord {
    weight: String,
    input: Tensor,
}

/// One layer application in forward order, with the layer group it belongs to.
enum Record {
    Bn(BnRecord),
    Conv(ConvRecord),
    Depthwise {
        weight: String,
        input: Tensor,
        geo: DwGeometry,
    },
    /// Start of a residual block: the gradient at this point also flows to the block's output.
    SkipStart,
    SkipEnd,
    /// The stem: patches of the input times the weight.
    Stem {
        patches: Tensor,
    },
}

/// Activations of a training forward pass, for [`EfficientNet`]'s hand-written backward.
pub struct Tape {
    records: Vec<(usize, Record)>,
    spatial: usize,
    map_shape: (usize, usize, usize, usize),
}

impl EfficientNet {
    /// Whether the hand-written backward applies: BatchNorm in inference mode, and only ReLU6
    /// activations (fused into the BatchNorm op) and no squeeze-excite (Lite, MobileNetV1/V2).
    fn taped(&self) -> bool {
        let fused = |a: Act| a == Act::Relu6;
        !self.parts.train_batchnorm
            && fused(self.trunk.family.act)
            && self
                .trunk
                .stages
                .iter()
                .flatten()
                .all(|b| fused(b.act) && b.se_ch == 0 && b.kind != BlockKind::ConvBnAct)
    }

    /// Pooled features without a candle graph, and the tape for [`Self::backward_taped`].
    pub fn forward_taped(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        let p = &self.parts.params;
        let frozen = GroupMode {
            trainable: false,
            batch_stats: false,
        };
        let w = |name: &str| weight(p, name, frozen);
        let mut rec: Vec<(usize, Record)> = Vec::new();
        let bn = |rec: &mut Vec<(usize, Record)>,
                  g: usize,
                  prefix: &str,
                  h: Tensor,
                  act: Activation|
         -> Result<Tensor> {
            let (scale, shift, _) = self.trunk.batchnorm(prefix).inference_affine(p)?;
            let y = bn_act(&h, &scale, &shift, act, ChannelDim::Last)?;
            rec.push((
                g,
                Record::Bn(BnRecord {
                    prefix: prefix.to_string(),
                    input: h,
                    output: y.clone(),
                    act,
                }),
            ));
            Ok(y)
        };
        let conv =
            |rec: &mut Vec<(usize, Record)>, g: usize, name: String, h: Tensor| -> Result<Tensor> {
                let y = conv1x1_nhwc(&h, &w(&name))?;
                rec.push((
                    g,
                    Record::Conv(ConvRecord {
                        weight: name,
                        input: h,
                    }),
                ));
                Ok(y)
            };
        let (_, _, hgt, wid) = x.dims4()?;
        let pad = self.trunk.stem_padding(hgt, wid);
        let (h, patches) = stem_patches(x, &w("conv_stem.weight"), 2, pad)?;
        rec.push((0, Record::Stem { patches }));
        let mut h = bn(&mut rec, 0, "bn1", h, Activation::Relu6)?;
        for (si, stage) in self.trunk.stages.iter().enumerate() {
            let g = si + 1;
            for blk in stage {
                let pre = &blk.prefix;
                if blk.skip {
                    rec.push((g, Record::SkipStart));
                }
                let input = h.clone();
                if blk.kind == BlockKind::InvertedResidual {
                    h = conv(&mut rec, g, format!("{pre}.conv_pw.weight"), h)?;
                    h = bn(&mut rec, g, &format!("{pre}.bn1"), h, Activation::Relu6)?;
                }
                let (_, hh, ww, c) = h.dims4()?;
                let k = blk.kernel;
                let geo = self.trunk.dw_geometry(blk, hh, ww);
                let name = format!("{pre}.conv_dw.weight");
                let wt = depthwise_weight_nhwc(&w(&name), c, k)?;
                let out = depthwise_conv2d(&h, &wt, geo)?;
                rec.push((
                    g,
                    Record::Depthwise {
                        weight: name,
                        input: h,
                        geo,
                    },
                ));
                let (dw_bn, out_bn, proj) = blk.layer_names();
                let out_act = blk.out_act().map_or(Activation::None, Act::fused);
                h = bn(
                    &mut rec,
                    g,
                    &format!("{pre}.{dw_bn}"),
                    out,
                    Activation::Relu6,
                )?;
                h = conv(&mut rec, g, format!("{pre}.{proj}.weight"), h)?;
                h = bn(&mut rec, g, &format!("{pre}.{out_bn}"), h, out_act)?;
                if blk.skip {
                    h = (h + input)?;
                    rec.push((g, Record::SkipEnd));
                }
            }
        }
        if self.head_ch.is_some() {
            let g = self.parts.groups.len() - 1;
            h = conv(&mut rec, g, "conv_head.weight".into(), h)?;
            h = bn(&mut rec, g, "bn2", h, Activation::Relu6)?;
        }
        let (n, hh, ww, c) = h.dims4()?;
        let pooled = global_pool_nhwc(&h)?;
        Ok((
            pooled,
            Tape {
                records: rec,
                spatial: hh * ww,
                map_shape: (n, hh, ww, c),
            },
        ))
    }

    /// Gradients of every trainable tensor from the gradient of the pooled features, added to
    /// `grads`. Layers before the first trainable group are not visited.
    pub fn backward_taped(&self, tape: Tape, grad: &Tensor, grads: &mut GradStore) -> Result<()> {
        let p = &self.parts.params;
        let frozen = GroupMode {
            trainable: false,
            batch_stats: false,
        };
        let first_trainable = self.parts.groups.iter().position(|g| g.trainable);
        let Some(first_trainable) = first_trainable else {
            return Ok(());
        };
        let (n, hh, ww, c) = tape.map_shape;
        let mut g = (grad / tape.spatial as f64)?
            .reshape((n, 1, 1, c))?
            .broadcast_as((n, hh, ww, c))?
            .contiguous()?;
        let mut skips: Vec<Tensor> = Vec::new();
        let mut put = |name: &str, t: Tensor| -> Result<()> {
            grads.insert(p.var(name).as_tensor(), t);
            Ok(())
        };
        for (group, record) in tape.records.into_iter().rev() {
            if group < first_trainable {
                break;
            }
            let trainable = self.parts.groups[group].trainable;
            match record {
                Record::SkipEnd => skips.push(g.clone()),
                Record::SkipStart => g = (g + skips.pop().expect("skip records pair up"))?,
                Record::Bn(r) => {
                    let bn = self.trunk.batchnorm(&r.prefix);
                    let (scale, _, inv_std) = bn.inference_affine(p)?;
                    let (gx, gs, gb) = bn_backward(
                        &r.input,
                        &r.output,
                        &g,
                        scale.to_vec1()?,
                        r.act,
                        ChannelDim::Last,
                    )?;
                    if trainable {
                        for (name, t) in bn.param_grads(p, &inv_std, &gs, &gb)? {
                            put(&name, t)?;
                        }
                    }
                    g = gx;
                }
                Record::Conv(r) => {
                    let w = weight(p, &r.weight, frozen);
                    let (co, ci) = (w.dim(0)?, w.dim(1)?);
                    let w2 = w.reshape((co, ci))?;
                    let (nn, h, wd, _) = r.input.dims4()?;
                    let g2 = g.reshape((nn * h * wd, co))?;
                    if trainable {
                        let gw = g2.t()?.matmul(&r.input.reshape((nn * h * wd, ci))?)?;
                        put(&r.weight, gw.reshape((co, ci, 1, 1))?)?;
                    }
                    g = g2.matmul(&w2)?.reshape((nn, h, wd, ci))?;
                }
                Record::Depthwise {
                    weight: name,
                    input,
                    geo,
                } => {
                    let w = weight(p, &name, frozen);
                    let (c, k) = (w.dim(0)?, geo.kernel);
                    if trainable {
                        let gw = dw_grad_weight(&input, &g, geo)?;
                        put(&name, gw.reshape((k * k, c))?.t()?.reshape((c, 1, k, k))?)?;
                    }
                    let wt = depthwise_weight_nhwc(&w, c, k)?;
                    g = dw_grad_input(&g, &wt, geo, input.dim(1)?, input.dim(2)?)?;
                }
                Record::Stem { patches } => {
                    if trainable {
                        let co = g.dim(3)?;
                        let rows = patches.dim(0)?;
                        let gw = g.reshape((rows, co))?.t()?.matmul(&patches)?;
                        let w = p.var("conv_stem.weight");
                        put("conv_stem.weight", gw.reshape(w.shape())?)?;
                    }
                }
            }
        }
        Ok(())
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

    fn forward_taped(&self, x: &Tensor) -> Option<Result<(Tensor, Box<dyn std::any::Any + Send>)>> {
        if !self.taped() {
            return None;
        }
        Some(
            self.forward_taped(x)
                .map(|(f, t)| (f, Box::new(t) as Box<dyn std::any::Any + Send>)),
        )
    }

    fn backward_taped(
        &self,
        tape: Box<dyn std::any::Any + Send>,
        grad: &Tensor,
        grads: &mut GradStore,
    ) -> Result<()> {
        let tape = tape
            .downcast::<Tape>()
            .map_err(|_| candle_core::Error::Msg("not an EfficientNet tape".into()))?;
        EfficientNet::backward_taped(self, *tape, grad, grads)
    }
}
