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

/// The activations a block's backward pass reads, and its layers as the forward pass folded them.
struct BlockTrace {
    /// Layer group of the block.
    group: usize,
    input: Map,
    /// Outputs of the main path's layers before the last (after their ReLU).
    inner: Vec<Map>,
    layers: BlockLayers,
}

/// A block's folded layers: its main path's, in order, and its projection shortcut's.
struct BlockLayers {
    main: Vec<Layer>,
    shortcut: Option<Layer>,
}

/// What a [`forward`] pass kept for [`Tape::backward`].
pub struct Tape {
    /// The network input, the stem's output and the stem, when the stem trains.
    stem: Option<(Map, Map, Layer)>,
    /// Blocks from the first trainable group on, in forward order.
    blocks: Vec<BlockTrace>,
    /// The last block's output.
    output: Map,
}

/// A layer's convolution with its BatchNorm folded in, and what its gradients need.
struct Layer {
    spec: ConvBn,
    folded: FoldedConv,
    raw: Vec<f32>,
    scale: Vec<f32>,
    inv_std: Tensor,
}

impl Layer {
    fn new(model: &ResNet, spec: ConvBn) -> Result<Self> {
        let params = &model.parts.params;
        let w = params
            .var(&format!("{}.weight", spec.conv))
            .as_tensor()
            .detach();
        let (co, ci, k, _) = w.dims4()?;
        let raw = w.flatten_all()?.to_vec1::<f32>()?;
        let (scale, shift, inv_std) = model.bns[&spec.bn].inference_affine(params)?;
        let scale = scale.to_vec1::<f32>()?;
        let folded = FoldedConv::new(
            &raw,
            [co, ci, k],
            &scale,
            shift.to_vec1()?,
            spec.stride,
            k / 2,
        );
        Ok(Self {
            spec,
            folded,
            raw,
            scale,
            inv_std,
        })
    }

    /// `relu?(self(x) + residual)`.
    fn forward(&self, x: &Map, residual: Option<&[f32]>, relu: bool) -> Map {
        let geo = self.folded.geometry(x.dims);
        let data = self.folded.forward(&x.data, &geo, residual, relu);
        Map {
            data,
            dims: [geo.n, geo.out_h(), geo.out_w(), geo.co],
        }
    }

    /// The backward pass from `gz`, the output's gradient before the ReLU, on the input `x`:
    /// puts the convolution's and BatchNorm's gradients in `grads` when `trainable`, returns the
    /// input's gradient when `input` is set.
    fn backward(
        &self,
        model: &ResNet,
        x: &Map,
        gz: &[f32],
        (input, trainable): (bool, bool),
        grads: &mut GradStore,
    ) -> Result<Option<Vec<f32>>> {
        if !input && !trainable {
            return Ok(None);
        }
        let geo = self.folded.geometry(x.dims);
        let (gx, sums) = self.folded.backward(&x.data, &geo, gz, input, trainable);
        if let Some(sums) = sums {
            let params = &model.parts.params;
            let (gweight, gscale) = self.folded.param_grads(&self.raw, &self.scale, &sums);
            let w = params.var(&format!("{}.weight", self.spec.conv));
            grads.insert(
                w.as_tensor(),
                Tensor::from_vec(gweight, w.shape(), w.device())?,
            );
            let co = sums.shift.len();
            let gscale = Tensor::from_vec(gscale, co, w.device())?;
            let gshift = Tensor::from_vec(sums.shift, co, w.device())?;
            let bn = &model.bns[&self.spec.bn];
            for (name, g) in bn.param_grads(params, &self.inv_std, &gscale, &gshift)? {
                grads.insert(params.var(&name).as_tensor(), g);
            }
        }
        Ok(gx)
    }
}

/// The main path's inner outputs, the output and the folded layers of block `b` (stage
/// `stage`) on `x`.
fn block(
    model: &ResNet,
    stage: usize,
    index: usize,
    x: &Map,
) -> Result<(Vec<Map>, Map, BlockLayers)> {
    let b = &model.stages[stage][index];
    let main = b
        .main_path(model.spec.bottleneck)
        .into_iter()
        .map(|spec| Layer::new(model, spec))
        .collect::<Result<Vec<_>>>()?;
    let shortcut = b
        .shortcut()
        .map(|spec| Layer::new(model, spec))
        .transpose()?;
    let (last, layers) = main.split_last().expect("a block has convolutions");
    let mut inner: Vec<Map> = Vec::with_capacity(layers.len());
    for layer in layers {
        let h = layer.forward(inner.last().unwrap_or(x), None, true);
        inner.push(h);
    }
    let projected = shortcut.as_ref().map(|layer| layer.forward(x, None, false));
    let residual = projected.as_ref().unwrap_or(x);
    let out = last.forward(inner.last().unwrap_or(x), Some(&residual.data), true);
    Ok((inner, out, BlockLayers { main, shortcut }))
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
    let stem_layer = Layer::new(model, ConvBn::stem())?;
    let stem = stem_layer.forward(&input, None, true);
    let (pooled, dims) = max_pool_nhwc(&stem.data, stem.dims, STEM_POOL);
    let keeps = |group: usize| keep_from.is_some_and(|first| group >= first);
    let stem = keeps(0).then_some((input, stem, stem_layer));
    let mut y = Map { data: pooled, dims };
    let mut blocks = Vec::new();
    for (stage, stage_blocks) in model.stages.iter().enumerate() {
        for index in 0..stage_blocks.len() {
            let (inner, out, layers) = block(model, stage, index, &y)?;
            let input = std::mem::replace(&mut y, out);
            if keeps(stage + 1) {
                blocks.push(BlockTrace {
                    group: stage + 1,
                    input,
                    inner,
                    layers,
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
        crate::vectorized! {
            for (image, gp) in g.chunks_exact_mut(h * w * c).zip(pooled.chunks_exact(c)) {
                for px in image.chunks_exact_mut(c) {
                    px.iter_mut()
                        .zip(gp)
                        .for_each(|(g, &v)| *g = v / (h * w) as f32);
                }
            }
        }
        let mut y = self.output;
        for (i, trace) in self.blocks.into_iter().enumerate().rev() {
            let trainable = groups[trace.group].trainable;
            let input_grad = i > 0 || first == 0;
            relu_mask(&mut g, &y.data);
            let mut gh: Option<Vec<f32>> = None;
            for (li, layer) in trace.layers.main.iter().enumerate().rev() {
                let x = if li == 0 {
                    &trace.input
                } else {
                    &trace.inner[li - 1]
                };
                let wants = (li > 0 || input_grad, trainable);
                let gz = gh.as_deref().unwrap_or(&g);
                gh = layer.backward(model, x, gz, wants, grads)?;
                if let (Some(gh), true) = (gh.as_mut(), li > 0) {
                    relu_mask(gh, &trace.inner[li - 1].data);
                }
            }
            match (input_grad, &trace.layers.shortcut) {
                (true, shortcut) => {
                    let mut gx = gh.expect("an input gradient was asked for");
                    let gs = match shortcut {
                        Some(layer) => layer
                            .backward(model, &trace.input, &g, (true, trainable), grads)?
                            .expect("an input gradient was asked for"),
                        None => g,
                    };
                    crate::vectorized! {
                        gx.iter_mut().zip(&gs).for_each(|(a, s)| *a += s);
                    }
                    g = gx;
                }
                (false, Some(layer)) => {
                    layer.backward(model, &trace.input, &g, (false, trainable), grads)?;
                }
                (false, None) => {}
            }
            y = trace.input;
        }
        if let Some((input, stem, layer)) = self.stem {
            let mut gs = max_pool_nhwc_backward(&stem.data, stem.dims, STEM_POOL, &g);
            relu_mask(&mut gs, &stem.data);
            layer.backward(model, &input, &gs, (false, true), grads)?;
        }
        Ok(())
    }
}
