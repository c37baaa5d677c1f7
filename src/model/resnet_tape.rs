//! ResNet on channels-last maps without a candle graph, BatchNorm in inference mode and folded
//! into the convolutions ([`FoldedConv`]): the forward pass of feature extraction and
//! validation ([`features`]), and a training pass ([`forward`]) that keeps the activations its
//! hand-written backward ([`Tape::backward`]) needs, from the first trainable group on.

use super::ops::dense_conv::{relu_mask, FoldedConv};
use super::ops::maxpool::{max_pool_nhwc, max_pool_nhwc_backward};
use super::resnet::{ConvBn, ResNet, STEM_POOL};
use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor};

/// A channels-last batch.
struct Map {
    data: Vec<f32>,
    dims: [usize; 4],
}

/// The activations a block's backward pass reads.
struct BlockTrace {
    /// Layer group, stage and index of the block within its stage.
    group: usize,
    stage: usize,
    index: usize,
    input: Map,
    /// Outputs of the main path's layers before the last (after their ReLU).
    inner: Vec<Map>,
}

/// What a [`forward`] pass kept for [`Tape::backward`].
pub struct Tape {
    /// The network input and the stem's output, when the stem trains.
    stem: Option<(Map, Map)>,
    /// Blocks from the first trainable group on, in forward order.
    blocks: Vec<BlockTrace>,
    /// The last block's output.
    output: Map,
}

/// A layer's convolution with its BatchNorm folded in, and what its gradients need.
struct Layer {
    folded: FoldedConv,
    raw: Vec<f32>,
    scale: Vec<f32>,
    inv_std: Tensor,
}

impl Layer {
    fn new(model: &ResNet, layer: &ConvBn) -> Result<Self> {
        let params = &model.parts.params;
        let w = params
            .var(&format!("{}.weight", layer.conv))
            .as_tensor()
            .detach();
        let (co, ci, k, _) = w.dims4()?;
        let raw = w.flatten_all()?.to_vec1::<f32>()?;
        let (scale, shift, inv_std) = model.bns[&layer.bn].inference_affine(params)?;
        let scale = scale.to_vec1::<f32>()?;
        let folded = FoldedConv::new(
            &raw,
            [co, ci, k],
            &scale,
            shift.to_vec1()?,
            layer.stride,
            k / 2,
        );
        Ok(Self {
            folded,
            raw,
            scale,
            inv_std,
        })
    }
}

/// `relu?(layer(x) + residual)`.
fn conv(
    model: &ResNet,
    layer: &ConvBn,
    x: &Map,
    residual: Option<&[f32]>,
    relu: bool,
) -> Result<Map> {
    let folded = Layer::new(model, layer)?.folded;
    let geo = folded.geometry(x.dims);
    let data = folded.forward(&x.data, &geo, residual, relu);
    Ok(Map {
        data,
        dims: [geo.n, geo.out_h(), geo.out_w(), geo.co],
    })
}

/// The main path's inner outputs and the output of block `b` (stage `stage`) on `x`.
fn block(model: &ResNet, stage: usize, index: usize, x: &Map) -> Result<(Vec<Map>, Map)> {
    let b = &model.stages[stage][index];
    let main = b.main_path(model.spec.bottleneck);
    let (last, layers) = main.split_last().expect("a block has convolutions");
    let mut inner: Vec<Map> = Vec::with_capacity(layers.len());
    for layer in layers {
        let h = conv(model, layer, inner.last().unwrap_or(x), None, true)?;
        inner.push(h);
    }
    let shortcut = b
        .shortcut()
        .map(|layer| conv(model, &layer, x, None, false))
        .transpose()?;
    let residual = shortcut.as_ref().unwrap_or(x);
    let h = inner.last().unwrap_or(x);
    let out = conv(model, last, h, Some(&residual.data), true)?;
    Ok((inner, out))
}

/// The forward pass of `x` `[N, 3, H, W]`; keeps the activations of the layers in groups from
/// `keep_from` on when set.
fn run(model: &ResNet, x: &Tensor, keep_from: Option<usize>) -> Result<(Tensor, Tape)> {
    let (n, c, h, w) = x.dims4()?;
    let input = Map {
        data: x
            .detach()
            .to_dtype(DType::F32)?
            .permute((0, 2, 3, 1))?
            .flatten_all()?
            .to_vec1()?,
        dims: [n, h, w, c],
    };
    let stem = conv(model, &ConvBn::stem(), &input, None, true)?;
    let (pooled, dims) = max_pool_nhwc(&stem.data, stem.dims, STEM_POOL);
    let keeps = |group: usize| keep_from.is_some_and(|first| group >= first);
    let stem = keeps(0).then_some((input, stem));
    let mut y = Map { data: pooled, dims };
    let mut blocks = Vec::new();
    for (stage, stage_blocks) in model.stages.iter().enumerate() {
        for index in 0..stage_blocks.len() {
            let (inner, out) = block(model, stage, index, &y)?;
            let input = std::mem::replace(&mut y, out);
            if keeps(stage + 1) {
                blocks.push(BlockTrace {
                    group: stage + 1,
                    stage,
                    index,
                    input,
                    inner,
                });
            }
        }
    }
    let [n, h, w, c] = y.dims;
    let features = Tensor::from_slice(&y.data, (n, h * w, c), x.device())?.mean(1)?;
    Ok((
        features,
        Tape {
            stem,
            blocks,
            output: y,
        },
    ))
}

/// Pooled features `[N, C]` of `x` `[N, 3, H, W]`, BatchNorm in inference mode.
pub fn features(model: &ResNet, x: &Tensor) -> Result<Tensor> {
    Ok(run(model, x, None)?.0)
}

/// Pooled features of a training pass of `x` and the tape of what its backward needs.
pub fn forward(model: &ResNet, x: &Tensor) -> Result<(Tensor, Tape)> {
    let first = model.parts.groups.iter().position(|g| g.trainable);
    run(model, x, Some(first.unwrap_or(usize::MAX)))
}

/// The backward pass of `layer` from `gz`, its output's gradient before the ReLU, on its input
/// `x`: puts the convolution's and BatchNorm's gradients in `grads` when `trainable`, returns the
/// input's gradient when `input` is set.
fn conv_backward(
    model: &ResNet,
    layer: &ConvBn,
    x: &Map,
    gz: &[f32],
    (input, trainable): (bool, bool),
    grads: &mut GradStore,
) -> Result<Option<Vec<f32>>> {
    if !input && !trainable {
        return Ok(None);
    }
    let l = Layer::new(model, layer)?;
    let geo = l.folded.geometry(x.dims);
    let (gx, sums) = l.folded.backward(&x.data, &geo, gz, input, trainable);
    if let Some(sums) = sums {
        let params = &model.parts.params;
        let (gweight, gscale) = l.folded.param_grads(&l.raw, &l.scale, &sums);
        let name = format!("{}.weight", layer.conv);
        let w = params.var(&name);
        grads.insert(
            w.as_tensor(),
            Tensor::from_vec(gweight, w.shape(), w.device())?,
        );
        let co = sums.shift.len();
        let gscale = Tensor::from_vec(gscale, co, w.device())?;
        let gshift = Tensor::from_vec(sums.shift, co, w.device())?;
        let bn = &model.bns[&layer.bn];
        for (name, g) in bn.param_grads(params, &l.inv_std, &gscale, &gshift)? {
            grads.insert(params.var(&name).as_tensor(), g);
        }
    }
    Ok(gx)
}

impl Tape {
    /// Adds the gradients of `model`'s trainable tensors to `grads`, from `grad`, the gradient of
    /// the pass's pooled features. Layers before the first trainable group are not visited.
    pub fn backward(self, model: &ResNet, grad: &Tensor, grads: &mut GradStore) -> Result<()> {
        let groups = &model.parts.groups;
        let Some(first) = groups.iter().position(|g| g.trainable) else {
            return Ok(());
        };
        let [n, h, w, c] = self.output.dims;
        let pooled = grad.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut g = vec![0f32; n * h * w * c];
        for (image, gp) in g.chunks_exact_mut(h * w * c).zip(pooled.chunks_exact(c)) {
            for px in image.chunks_exact_mut(c) {
                px.iter_mut()
                    .zip(gp)
                    .for_each(|(g, &v)| *g = v / (h * w) as f32);
            }
        }
        let mut y = self.output;
        for (i, trace) in self.blocks.into_iter().enumerate().rev() {
            let trainable = groups[trace.group].trainable;
            let input_grad = i > 0 || first == 0;
            let b = &model.stages[trace.stage][trace.index];
            relu_mask(&mut g, &y.data);
            let main = b.main_path(model.spec.bottleneck);
            let mut gh: Option<Vec<f32>> = None;
            for (li, layer) in main.iter().enumerate().rev() {
                let x = if li == 0 {
                    &trace.input
                } else {
                    &trace.inner[li - 1]
                };
                let wants = (li > 0 || input_grad, trainable);
                let gz = gh.as_deref().unwrap_or(&g);
                gh = conv_backward(model, layer, x, gz, wants, grads)?;
                if let (Some(gh), true) = (gh.as_mut(), li > 0) {
                    relu_mask(gh, &trace.inner[li - 1].data);
                }
            }
            match (input_grad, b.shortcut()) {
                (true, shortcut) => {
                    let mut gx = gh.expect("an input gradient was asked for");
                    let gs = match shortcut {
                        Some(layer) => {
                            let wants = (true, trainable);
                            conv_backward(model, &layer, &trace.input, &g, wants, grads)?
                                .expect("an input gradient was asked for")
                        }
                        None => g,
                    };
                    gx.iter_mut().zip(&gs).for_each(|(a, s)| *a += s);
                    g = gx;
                }
                (false, Some(layer)) => {
                    let wants = (false, trainable);
                    conv_backward(model, &layer, &trace.input, &g, wants, grads)?;
                }
                (false, None) => {}
            }
            y = trace.input;
        }
        if let Some((input, stem)) = self.stem {
            let mut gs = max_pool_nhwc_backward(&stem.data, stem.dims, STEM_POOL, &g);
            relu_mask(&mut gs, &stem.data);
            conv_backward(model, &ConvBn::stem(), &input, &gs, (false, true), grads)?;
        }
        Ok(())
    }
}
