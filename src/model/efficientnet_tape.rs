//! The hand-written backward of the backbones built on [`Trunk`] (EfficientNet, MobileNetV1/V2,
//! MobileNetV3) while BatchNorm runs in inference mode: a forward pass without a candle graph
//! that records what each layer's gradient needs ([`TapedPass`]), and the backward pass over that
//! record ([`Tape::backward`]). It keeps fewer activations than candle's graph and skips its
//! bookkeeping and gradient accumulation.

use super::efficientnet_blocks::{Block, BlockKind, SeTrace, Trunk};
use super::layers::{
    conv1x1_nhwc, depthwise_weight_nhwc, global_pool_nhwc, pooled_conv_act, stem_patches, weight,
};
use super::ops::bn_act::{backward as bn_act_backward, bn_act, Activation, ChannelDim};
use super::ops::channel_affine::gate_channels_backward;
use super::ops::depthwise::{
    depthwise_conv2d, grad_input as dw_grad_input, grad_weight as dw_grad_weight, DwGeometry,
};
use super::{BackboneParts, GroupMode, Params};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};

/// How a taped pass reads every weight: detached, BatchNorm from its running statistics.
const FROZEN: GroupMode = GroupMode {
    trainable: false,
    batch_stats: false,
};

/// One layer application in forward order.
enum Record {
    /// BatchNorm `prefix` in inference mode, then `act`, on `input`.
    Bn {
        prefix: String,
        input: Tensor,
        act: Activation,
    },
    /// 1x1 convolution of a channels-last map: `output = input @ weight^T`.
    Conv {
        weight: String,
        input: Tensor,
    },
    Depthwise {
        weight: String,
        input: Tensor,
        geo: DwGeometry,
    },
    /// `act(input @ {prefix}.weight^T + {prefix}.bias)` on pooled rows `[N, C]`.
    PooledConv {
        prefix: String,
        input: Tensor,
        product: Tensor,
        act: Activation,
    },
    /// Squeeze-excite of block `prefix` gating `input`.
    SqueezeExcite {
        prefix: String,
        input: Tensor,
        trace: SeTrace,
        acts: (Activation, Activation),
    },
    /// Global average pool of a `[N, H, W, C]` map.
    Pool {
        shape: (usize, usize, usize, usize),
    },
    /// Start of a residual block: the gradient at this point also flows to the block's output.
    SkipStart,
    SkipEnd,
    /// The stem: patches of the input times the weight.
    Stem {
        patches: Tensor,
    },
}

/// Activations of a [`TapedPass`], each with the layer group it belongs to.
pub struct Tape {
    records: Vec<(usize, Record)>,
}

/// A forward pass without a candle graph that records a [`Tape`].
pub struct TapedPass<'a> {
    trunk: &'a Trunk,
    params: &'a Params,
    records: Vec<(usize, Record)>,
}

impl<'a> TapedPass<'a> {
    /// A pass over `trunk`'s layers (and the caller's head) with weights from `params`.
    pub fn new(trunk: &'a Trunk, params: &'a Params) -> Self {
        Self {
            trunk,
            params,
            records: Vec::new(),
        }
    }

    /// The tape of everything run so far.
    pub fn finish(self) -> Tape {
        Tape {
            records: self.records,
        }
    }

    fn w(&self, name: &str) -> Tensor {
        weight(self.params, name, FROZEN)
    }

    /// BatchNorm `prefix` (inference mode) and `act` on `x`, in layer group `group`.
    pub fn bn(&mut self, group: usize, prefix: &str, x: Tensor, act: Activation) -> Result<Tensor> {
        let (scale, shift, _) = self.trunk.batchnorm(prefix).inference_affine(self.params)?;
        let y = bn_act(&x, &scale, &shift, act, ChannelDim::Last)?;
        let prefix = prefix.to_string();
        self.records.push((
            group,
            Record::Bn {
                prefix,
                input: x,
                act,
            },
        ));
        Ok(y)
    }

    /// The 1x1 convolution `weight` on the channels-last map `x`.
    pub fn conv(&mut self, group: usize, weight: &str, x: Tensor) -> Result<Tensor> {
        let y = conv1x1_nhwc(&x, &self.w(weight))?;
        let weight = weight.to_string();
        self.records
            .push((group, Record::Conv { weight, input: x }));
        Ok(y)
    }

    /// Global average pool of the channels-last map `x`.
    pub fn pool(&mut self, group: usize, x: &Tensor) -> Result<Tensor> {
        let shape = x.dims4()?;
        self.records.push((group, Record::Pool { shape }));
        global_pool_nhwc(x)
    }

    /// `act(x @ {prefix}.weight^T + {prefix}.bias)` on pooled rows `x`.
    pub fn pooled_conv(
        &mut self,
        group: usize,
        prefix: &str,
        x: Tensor,
        act: Activation,
    ) -> Result<Tensor> {
        let (w, b) = (
            self.w(&format!("{prefix}.weight")),
            self.w(&format!("{prefix}.bias")),
        );
        let (product, y) = pooled_conv_act(&x, &w, &b, act)?;
        let prefix = prefix.to_string();
        self.records.push((
            group,
            Record::PooledConv {
                prefix,
                input: x,
                product,
                act,
            },
        ));
        Ok(y)
    }

    /// The stem and every stage on input `x` `[N, 3, H, W]`: the channels-last feature map.
    pub fn trunk(&mut self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let pad = self.trunk.stem_padding(h, w);
        let (y, patches) = stem_patches(x, &self.w("conv_stem.weight"), 2, pad)?;
        self.records.push((0, Record::Stem { patches }));
        let mut y = self.bn(0, "bn1", y, self.trunk.family.act.activation())?;
        for (si, stage) in self.trunk.stages.iter().enumerate() {
            for b in stage {
                y = self.block(si + 1, b, y)?;
            }
        }
        Ok(y)
    }

    /// Block `b` on `x`, as [`Trunk::block`] runs it.
    fn block(&mut self, group: usize, b: &Block, x: Tensor) -> Result<Tensor> {
        let p = &b.prefix;
        let act = b.act.activation();
        if b.skip {
            self.records.push((group, Record::SkipStart));
        }
        let mut h = match b.kind {
            BlockKind::ConvBnAct => {
                let h = self.conv(group, &format!("{p}.conv.weight"), x)?;
                return self.bn(group, &format!("{p}.bn1"), h, act);
            }
            BlockKind::InvertedResidual => {
                let h = self.conv(group, &format!("{p}.conv_pw.weight"), x.clone())?;
                self.bn(group, &format!("{p}.bn1"), h, act)?
            }
            BlockKind::DepthwiseSeparable { .. } => x.clone(),
        };
        h = self.depthwise(group, b, h)?;
        let (dw_bn, out_bn, proj) = b.layer_names();
        h = self.bn(group, &format!("{p}.{dw_bn}"), h, act)?;
        if b.se_ch > 0 {
            let (y, trace) = self.trunk.squeeze_excite(self.params, &h, b, FROZEN)?;
            let acts = self.trunk.family.se.activations(b.act);
            let prefix = p.clone();
            self.records.push((
                group,
                Record::SqueezeExcite {
                    prefix,
                    input: h,
                    trace,
                    acts,
                },
            ));
            h = y;
        }
        h = self.conv(group, &format!("{p}.{proj}.weight"), h)?;
        let out_act = b.out_act().map_or(Activation::None, |a| a.activation());
        h = self.bn(group, &format!("{p}.{out_bn}"), h, out_act)?;
        if b.skip {
            h = (h + x)?;
            self.records.push((group, Record::SkipEnd));
        }
        Ok(h)
    }

    fn depthwise(&mut self, group: usize, b: &Block, x: Tensor) -> Result<Tensor> {
        let (_, h, w, c) = x.dims4()?;
        let geo = self.trunk.dw_geometry(b, h, w);
        let weight = format!("{}.conv_dw.weight", b.prefix);
        let kernel = depthwise_weight_nhwc(&self.w(&weight), c, b.kernel)?;
        let y = depthwise_conv2d(&x, &kernel, geo)?;
        self.records.push((
            group,
            Record::Depthwise {
                weight,
                input: x,
                geo,
            },
        ));
        Ok(y)
    }
}

/// Where the backward pass puts the gradients of trainable tensors.
struct Gradients<'a> {
    params: &'a Params,
    store: &'a mut GradStore,
}

impl Gradients<'_> {
    fn put(&mut self, name: &str, grad: Tensor) {
        self.store.insert(self.params.var(name).as_tensor(), grad);
    }
}

impl Tape {
    /// Gradients of every trainable tensor of `parts` from `grad`, the gradient of the pass's
    /// output, added to `grads`. Layers before the first trainable group are not visited.
    pub fn backward(
        self,
        trunk: &Trunk,
        parts: &BackboneParts,
        grad: &Tensor,
        grads: &mut GradStore,
    ) -> Result<()> {
        let Some(first_trainable) = parts.groups.iter().position(|g| g.trainable) else {
            return Ok(());
        };
        let p = &parts.params;
        let mut out = Gradients {
            params: p,
            store: grads,
        };
        let mut g = grad.clone();
        let mut skips: Vec<Tensor> = Vec::new();
        for (group, record) in self.records.into_iter().rev() {
            if group < first_trainable {
                break;
            }
            let trainable = parts.groups[group].trainable;
            g = match record {
                Record::SkipEnd => {
                    skips.push(g.clone());
                    g
                }
                Record::SkipStart => (g + skips.pop().expect("skip records pair up"))?,
                Record::Bn { prefix, input, act } => {
                    let bn = trunk.batchnorm(&prefix);
                    let (scale, shift, inv_std) = bn.inference_affine(p)?;
                    let (gx, gs, gb) = bn_act_backward(
                        &input,
                        &g,
                        scale.to_vec1()?,
                        shift.to_vec1()?,
                        act,
                        ChannelDim::Last,
                    )?;
                    if trainable {
                        for (name, t) in bn.param_grads(p, &inv_std, &gs, &gb)? {
                            out.put(&name, t);
                        }
                    }
                    gx
                }
                Record::Conv {
                    weight: name,
                    input,
                } => {
                    let w = weight(p, &name, FROZEN);
                    let (co, ci) = (w.dim(0)?, w.dim(1)?);
                    let (n, h, wd, _) = input.dims4()?;
                    let g2 = g.reshape((n * h * wd, co))?;
                    if trainable {
                        let gw = g2.t()?.matmul(&input.reshape((n * h * wd, ci))?)?;
                        out.put(&name, gw.reshape((co, ci, 1, 1))?);
                    }
                    g2.matmul(&w.reshape((co, ci))?)?.reshape((n, h, wd, ci))?
                }
                Record::Depthwise {
                    weight: name,
                    input,
                    geo,
                } => {
                    let w = weight(p, &name, FROZEN);
                    let (c, k) = (w.dim(0)?, geo.kernel);
                    if trainable {
                        let gw = dw_grad_weight(&input, &g, geo)?;
                        out.put(&name, gw.reshape((k * k, c))?.t()?.reshape((c, 1, k, k))?);
                    }
                    let wt = depthwise_weight_nhwc(&w, c, k)?;
                    dw_grad_input(&g, &wt, geo, input.dim(1)?, input.dim(2)?)?
                }
                Record::PooledConv {
                    prefix,
                    input,
                    product,
                    act,
                } => pooled_conv_backward(&mut out, trainable, &prefix, &input, &product, act, &g)?,
                Record::SqueezeExcite {
                    prefix,
                    input,
                    trace,
                    acts: (reduce_act, gate_act),
                } => {
                    let (gx, ggate) = gate_channels_backward(&input, &trace.gate, &g)?;
                    let greduced = pooled_conv_backward(
                        &mut out,
                        trainable,
                        &format!("{prefix}.se.conv_expand"),
                        &trace.reduced,
                        &trace.expand_product,
                        gate_act,
                        &ggate,
                    )?;
                    let gpooled = pooled_conv_backward(
                        &mut out,
                        trainable,
                        &format!("{prefix}.se.conv_reduce"),
                        &trace.pooled,
                        &trace.reduce_product,
                        reduce_act,
                        &greduced,
                    )?;
                    let (n, h, w, c) = input.dims4()?;
                    let spread = (gpooled / (h * w) as f64)?.reshape((n, 1, 1, c))?;
                    gx.broadcast_add(&spread)?
                }
                Record::Pool {
                    shape: (n, h, w, c),
                } => (g / (h * w) as f64)?
                    .reshape((n, 1, 1, c))?
                    .broadcast_as((n, h, w, c))?
                    .contiguous()?,
                Record::Stem { patches } => {
                    if trainable {
                        let co = g.dim(3)?;
                        let gw = g.reshape((patches.dim(0)?, co))?.t()?.matmul(&patches)?;
                        let w = p.var("conv_stem.weight");
                        out.put("conv_stem.weight", gw.reshape(w.shape())?);
                    }
                    // The network input needs no gradient.
                    break;
                }
            };
        }
        Ok(())
    }
}

/// The backward of [`TapedPass::pooled_conv`] at `prefix`: puts the weight's and bias's gradients
/// when `trainable` and returns the input's.
fn pooled_conv_backward(
    out: &mut Gradients,
    trainable: bool,
    prefix: &str,
    input: &Tensor,
    product: &Tensor,
    act: Activation,
    grad: &Tensor,
) -> Result<Tensor> {
    let (wname, bname) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
    let w = weight(out.params, &wname, FROZEN);
    let (co, ci) = (w.dim(0)?, w.dim(1)?);
    let bias = weight(out.params, &bname, FROZEN).to_vec1()?;
    let (gproduct, _, gbias) =
        bn_act_backward(product, grad, vec![1.0; co], bias, act, ChannelDim::Last)?;
    if trainable {
        let gw = gproduct.t()?.matmul(input)?;
        out.put(&wname, gw.reshape((co, ci, 1, 1))?);
        out.put(&bname, gbias);
    }
    gproduct.matmul(&w.reshape((co, ci))?)
}

/// [`super::Backbone::forward_taped`] of a [`Trunk`] backbone: its taped `pass`, run unless
/// BatchNorm trains with batch statistics (whose backward runs through candle's graph).
pub fn forward_boxed(
    parts: &BackboneParts,
    pass: impl FnOnce() -> Result<(Tensor, Tape)>,
) -> Option<Result<(Tensor, Box<dyn std::any::Any + Send>)>> {
    (!parts.train_batchnorm).then(|| {
        pass().map(|(features, tape)| (features, Box::new(tape) as Box<dyn std::any::Any + Send>))
    })
}

/// [`super::Backbone::backward_taped`] of a [`Trunk`] backbone, with a tape from
/// [`forward_boxed`].
pub fn backward_boxed(
    tape: Box<dyn std::any::Any + Send>,
    trunk: &Trunk,
    parts: &BackboneParts,
    grad: &Tensor,
    grads: &mut GradStore,
) -> Result<()> {
    super::own_tape::<Tape>(tape, "an EfficientNet-family")?.backward(trunk, parts, grad, grads)
}
