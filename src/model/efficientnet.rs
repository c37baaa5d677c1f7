//! EfficientNet-Lite0..4 and EfficientNet-B0, as timm builds them, channels-last internally.

use super::layers::{
    conv1x1_nhwc, depthwise_weight_nhwc, global_pool_nhwc, input_conv_nhwc, same_padding,
    stem_patches, weight, BatchNorm,
};
use super::ops::bn_act::{backward as bn_backward, bn_act, Activation, ChannelDim};
use super::ops::depthwise::{
    depthwise_conv2d, grad_input as dw_grad_input, grad_weight as dw_grad_weight, DwGeometry,
};
use super::{Backbone, BackboneParts, GroupMode, Params};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};

/// Stage definitions shared by the family: (inverted residual?, repeats, kernel, stride,
/// expansion, channels). The first stage is a depthwise-separable block.
const STAGES: [(bool, usize, usize, usize, usize, usize); 7] = [
    (false, 1, 3, 1, 1, 16),
    (true, 2, 3, 2, 6, 24),
    (true, 2, 5, 2, 6, 40),
    (true, 3, 3, 2, 6, 80),
    (true, 3, 5, 1, 6, 112),
    (true, 4, 5, 2, 6, 192),
    (true, 1, 3, 1, 6, 320),
];

/// What distinguishes one family member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EfficientNetSpec {
    pub width: f64,
    pub depth: f64,
    /// Lite: ReLU6, no squeeze-excite, stem/head and first/last stage depth not scaled.
    pub lite: bool,
    /// TensorFlow "SAME" padding and BatchNorm eps 1e-3 (the `tf_` ports).
    pub tf: bool,
}

impl EfficientNetSpec {
    /// The spec of a timm architecture name, if it is one of this family.
    pub fn for_arch(arch: &str) -> Option<Self> {
        let lite = |width, depth| Self {
            width,
            depth,
            lite: true,
            tf: true,
        };
        let b0 = |tf| Self {
            width: 1.0,
            depth: 1.0,
            lite: false,
            tf,
        };
        Some(match arch {
            "tf_efficientnet_lite0" => lite(1.0, 1.0),
            "tf_efficientnet_lite1" => lite(1.0, 1.1),
            "tf_efficientnet_lite2" => lite(1.1, 1.2),
            "tf_efficientnet_lite3" => lite(1.2, 1.4),
            "tf_efficientnet_lite4" => lite(1.4, 1.8),
            "efficientnet_b0" => b0(false),
            "tf_efficientnet_b0" => b0(true),
            _ => return None,
        })
    }

    fn channels(&self, c: usize) -> usize {
        make_divisible(c as f64 * self.width)
    }
}

/// timm's `make_divisible(v, 8)`: nearest multiple of 8, never more than 10% below `v`.
fn make_divisible(v: f64) -> usize {
    let d = 8.0;
    let mut r = ((v + d / 2.0) / d).floor() * d;
    r = r.max(d);
    if r < 0.9 * v {
        r += d;
    }
    r as usize
}

/// One block: depthwise-separable (`ds`) or inverted residual.
#[derive(Debug, Clone)]
struct Block {
    prefix: String,
    inverted: bool,
    kernel: usize,
    stride: usize,
    in_ch: usize,
    mid_ch: usize,
    out_ch: usize,
    se_ch: usize,
    skip: bool,
}

/// An EfficientNet backbone.
pub struct EfficientNet {
    parts: BackboneParts,
    spec: EfficientNetSpec,
    stem_ch: usize,
    stages: Vec<Vec<Block>>,
    bns: std::collections::HashMap<String, BatchNorm>,
}

impl EfficientNet {
    /// Builds `arch` from `params`, checking every tensor it needs.
    pub fn new(arch: &str, spec: EfficientNetSpec, params: Params) -> anyhow::Result<Self> {
        let stem_ch = if spec.lite { 32 } else { spec.channels(32) };
        let head_ch = if spec.lite { 1280 } else { spec.channels(1280) };
        let mut stages: Vec<Vec<Block>> = Vec::new();
        let mut in_ch = stem_ch;
        for (si, &(inverted, repeats, kernel, stride, expand, ch)) in STAGES.iter().enumerate() {
            let fixed = spec.lite && (si == 0 || si == STAGES.len() - 1);
            let repeats = if fixed {
                repeats
            } else {
                (repeats as f64 * spec.depth).ceil() as usize
            };
            let out_ch = spec.channels(ch);
            let blocks = (0..repeats)
                .map(|bi| {
                    let stride = if bi == 0 { stride } else { 1 };
                    let block = Block {
                        prefix: format!("blocks.{si}.{bi}"),
                        inverted,
                        kernel,
                        stride,
                        in_ch,
                        mid_ch: if inverted {
                            make_divisible((in_ch * expand) as f64)
                        } else {
                            in_ch
                        },
                        out_ch,
                        se_ch: if spec.lite {
                            0
                        } else {
                            ((in_ch as f64) * 0.25).round().max(1.0) as usize
                        },
                        skip: stride == 1 && in_ch == out_ch,
                    };
                    in_ch = out_ch;
                    block
                })
                .collect();
            stages.push(blocks);
        }
        let eps = if spec.tf { 1e-3 } else { 1e-5 };
        let momentum = if spec.tf { 0.01 } else { 0.1 };
        let mut bns = std::collections::HashMap::new();
        let mut bn = |prefix: String, ch: usize| -> anyhow::Result<()> {
            bns.insert(
                prefix.clone(),
                BatchNorm::new(&params, &prefix, ch, eps, momentum)?,
            );
            Ok(())
        };
        params.get("conv_stem.weight", &[stem_ch, 3, 3, 3])?;
        bn("bn1".into(), stem_ch)?;
        for b in stages.iter().flatten() {
            let p = &b.prefix;
            let k = b.kernel;
            params.get(&format!("{p}.conv_dw.weight"), &[b.mid_ch, 1, k, k])?;
            if b.inverted {
                params.get(&format!("{p}.conv_pw.weight"), &[b.mid_ch, b.in_ch, 1, 1])?;
                params.get(&format!("{p}.conv_pwl.weight"), &[b.out_ch, b.mid_ch, 1, 1])?;
                bn(format!("{p}.bn1"), b.mid_ch)?;
                bn(format!("{p}.bn2"), b.mid_ch)?;
                bn(format!("{p}.bn3"), b.out_ch)?;
            } else {
                params.get(&format!("{p}.conv_pw.weight"), &[b.out_ch, b.in_ch, 1, 1])?;
                bn(format!("{p}.bn1"), b.in_ch)?;
                bn(format!("{p}.bn2"), b.out_ch)?;
            }
            if b.se_ch > 0 {
                params.get(
                    &format!("{p}.se.conv_reduce.weight"),
                    &[b.se_ch, b.mid_ch, 1, 1],
                )?;
                params.get(&format!("{p}.se.conv_reduce.bias"), &[b.se_ch])?;
                params.get(
                    &format!("{p}.se.conv_expand.weight"),
                    &[b.mid_ch, b.se_ch, 1, 1],
                )?;
                params.get(&format!("{p}.se.conv_expand.bias"), &[b.mid_ch])?;
            }
        }
        params.get("conv_head.weight", &[head_ch, in_ch, 1, 1])?;
        bn("bn2".into(), head_ch)?;
        let mut groups = vec![(
            "stem".to_string(),
            vec!["conv_stem.".to_string(), "bn1.".to_string()],
        )];
        for si in 0..stages.len() {
            groups.push((format!("blocks.{si}"), vec![format!("blocks.{si}.")]));
        }
        groups.push((
            "head".to_string(),
            vec!["conv_head.".to_string(), "bn2.".to_string()],
        ));
        let mut params = params;
        params.retain(|k| !k.starts_with("classifier."));
        Ok(Self {
            parts: BackboneParts::new(arch, params, groups, head_ch),
            spec,
            stem_ch,
            stages,
            bns,
        })
    }

    fn activation(&self) -> Activation {
        if self.spec.lite {
            Activation::Relu6
        } else {
            Activation::None
        }
    }

    /// BatchNorm followed by the family's activation (ReLU6 fused, or SiLU) when `act` is set.
    fn bn(&self, x: &Tensor, prefix: &str, act: bool, mode: GroupMode) -> Result<Tensor> {
        let a = if act {
            self.activation()
        } else {
            Activation::None
        };
        let y = self.bns[prefix].forward(&self.parts.params, x, a, ChannelDim::Last, mode)?;
        if act && !self.spec.lite {
            y.silu()
        } else {
            Ok(y)
        }
    }

    fn depthwise(&self, x: &Tensor, b: &Block, mode: GroupMode) -> Result<Tensor> {
        let (_, h, w, c) = x.dims4()?;
        let k = b.kernel;
        let geo = if self.spec.tf {
            DwGeometry::same(h, w, k, b.stride)
        } else {
            DwGeometry::symmetric(h, w, k, b.stride, k / 2)
        };
        let wt = weight(
            &self.parts.params,
            &format!("{}.conv_dw.weight", b.prefix),
            mode,
        );
        let wt = depthwise_weight_nhwc(&wt, c, k)?;
        depthwise_conv2d(x, &wt, geo)
    }

    fn squeeze_excite(&self, x: &Tensor, b: &Block, mode: GroupMode) -> Result<Tensor> {
        let p = &self.parts.params;
        let w = |n: &str| weight(p, &format!("{}.se.{n}", b.prefix), mode);
        let s = global_pool_nhwc(x)?;
        let s = s
            .matmul(&w("conv_reduce.weight").flatten_from(1)?.t()?)?
            .broadcast_add(&w("conv_reduce.bias"))?
            .silu()?;
        let s = s
            .matmul(&w("conv_expand.weight").flatten_from(1)?.t()?)?
            .broadcast_add(&w("conv_expand.bias"))?;
        let s = candle_nn::ops::sigmoid(&s)?;
        let (n, c) = s.dims2()?;
        x.broadcast_mul(&s.reshape((n, 1, 1, c))?)
    }

    fn block(&self, x: &Tensor, b: &Block, mode: GroupMode) -> Result<Tensor> {
        let p = &self.parts.params;
        let w = |n: &str| weight(p, &format!("{}.{n}.weight", b.prefix), mode);
        let pre = &b.prefix;
        let mut h = x.clone();
        if b.inverted {
            h = conv1x1_nhwc(&h, &w("conv_pw"))?;
            h = self.bn(&h, &format!("{pre}.bn1"), true, mode)?;
        }
        h = self.depthwise(&h, b, mode)?;
        let (dw_bn, out_bn) = if b.inverted {
            ("bn2", "bn3")
        } else {
            ("bn1", "bn2")
        };
        h = self.bn(&h, &format!("{pre}.{dw_bn}"), true, mode)?;
        if b.se_ch > 0 {
            h = self.squeeze_excite(&h, b, mode)?;
        }
        let proj = if b.inverted { "conv_pwl" } else { "conv_pw" };
        h = conv1x1_nhwc(&h, &w(proj))?;
        h = self.bn(&h, &format!("{pre}.{out_bn}"), false, mode)?;
        if b.skip {
            h = (h + x)?;
        }
        Ok(h)
    }

    /// The feature map before pooling, channels-last `[N, H, W, C]`.
    pub fn feature_map(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let parts = &self.parts;
        let mode = parts.mode(0, training);
        let (_, _, h, w) = x.dims4()?;
        let pad = if self.spec.tf {
            let (t, b) = same_padding(h, 3, 2);
            let (l, r) = same_padding(w, 3, 2);
            [t, b, l, r]
        } else {
            [1; 4]
        };
        let stem = weight(&parts.params, "conv_stem.weight", mode);
        let mut h = input_conv_nhwc(x, &stem, 2, pad)?;
        debug_assert_eq!(h.dim(3)?, self.stem_ch);
        h = self.bn(&h, "bn1", true, mode)?;
        for (si, stage) in self.stages.iter().enumerate() {
            let mode = parts.mode(si + 1, training);
            for b in stage {
                h = self.block(&h, b, mode)?;
            }
        }
        let mode = parts.mode(parts.groups.len() - 1, training);
        h = conv1x1_nhwc(&h, &weight(&parts.params, "conv_head.weight", mode))?;
        self.bn(&h, "bn2", true, mode)
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
    /// Whether the hand-written backward applies: Lite models with BatchNorm in inference mode.
    fn taped(&self) -> bool {
        self.spec.lite && !self.parts.train_batchnorm
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
            let (scale, shift, _) = self.bns[prefix].inference_affine(p)?;
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
        let (t, b) = same_padding(hgt, 3, 2);
        let (l, r) = same_padding(wid, 3, 2);
        let (h, patches) = stem_patches(x, &w("conv_stem.weight"), 2, [t, b, l, r])?;
        rec.push((0, Record::Stem { patches }));
        let mut h = bn(&mut rec, 0, "bn1", h, Activation::Relu6)?;
        for (si, stage) in self.stages.iter().enumerate() {
            let g = si + 1;
            for blk in stage {
                let pre = &blk.prefix;
                if blk.skip {
                    rec.push((g, Record::SkipStart));
                }
                let input = h.clone();
                if blk.inverted {
                    h = conv(&mut rec, g, format!("{pre}.conv_pw.weight"), h)?;
                    h = bn(&mut rec, g, &format!("{pre}.bn1"), h, Activation::Relu6)?;
                }
                let (_, hh, ww, c) = h.dims4()?;
                let k = blk.kernel;
                let geo = DwGeometry::same(hh, ww, k, blk.stride);
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
                let (dw_bn, out_bn, proj) = if blk.inverted {
                    ("bn2", "bn3", "conv_pwl")
                } else {
                    ("bn1", "bn2", "conv_pw")
                };
                h = bn(
                    &mut rec,
                    g,
                    &format!("{pre}.{dw_bn}"),
                    out,
                    Activation::Relu6,
                )?;
                h = conv(&mut rec, g, format!("{pre}.{proj}.weight"), h)?;
                h = bn(&mut rec, g, &format!("{pre}.{out_bn}"), h, Activation::None)?;
                if blk.skip {
                    h = (h + input)?;
                    rec.push((g, Record::SkipEnd));
                }
            }
        }
        let g = self.parts.groups.len() - 1;
        h = conv(&mut rec, g, "conv_head.weight".into(), h)?;
        h = bn(&mut rec, g, "bn2", h, Activation::Relu6)?;
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
                    let bn = &self.bns[&r.prefix];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_rounding_follows_timm() {
        assert_eq!(make_divisible(16.0 * 1.1), 16);
        assert_eq!(make_divisible(24.0 * 1.4), 32);
        assert_eq!(make_divisible(320.0 * 1.4), 448);
        assert_eq!(make_divisible(40.0 * 1.2), 48);
    }
}
