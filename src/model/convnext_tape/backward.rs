//! The backward over a [`Tape`]: head, blocks, downsamples and stem in reverse, into gradients.

use super::{
    downsample_weights, permute_kernel, values, BlockActivations, BlockWeights, BufferPool, Map,
    Record, Tape, ROWS_PER_TASK,
};
use crate::model::convnext::{ConvNeXt, NORM_EPS};
use crate::model::ops::channel_affine::column_sums;
use crate::model::ops::depthwise::{self, DwGeometry};
use crate::model::ops::gelu::gelu_grad;
use crate::model::ops::layer_norm::backward_rows;
use crate::model::ops::{matmul_into, sum_in_order, MatRef};
use crate::model::Params;
use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

/// Where the backward puts the gradients of trainable tensors.
struct Gradients<'a> {
    params: &'a Params,
    store: &'a mut GradStore,
}

impl Gradients<'_> {
    /// Stores `values` (row-major, the tensor's shape) as the gradient of tensor `name`.
    fn put(&mut self, name: &str, values: Vec<f32>) -> Result<()> {
        let var = self.params.var(name);
        let grad = Tensor::from_vec(values, var.shape(), &Device::Cpu)?;
        self.store.insert(var.as_tensor(), grad);
        Ok(())
    }

    /// Stores the norm's weight and bias gradients from `sums` (`[gw | gb | ...]`).
    fn put_norm(&mut self, prefix: &str, sums: &[f32], c: usize) -> Result<()> {
        self.put(&format!("{prefix}.weight"), sums[..c].to_vec())?;
        self.put(&format!("{prefix}.bias"), sums[c..2 * c].to_vec())
    }
}

impl Tape {
    /// Adds the gradients of `net`'s trainable tensors to `grads`, from `grad`, the gradient of
    /// the pooled features. Stops at the first recorded layer (whose input needs no gradient).
    pub fn backward(self, net: &ConvNeXt, grad: &Tensor, grads: &mut GradStore) -> Result<()> {
        let pool = &net.pool;
        let params = &net.parts.params;
        let mut out = Gradients {
            params,
            store: grads,
        };
        let mut records = self.records;
        let mut g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        while let Some((group, record)) = records.pop() {
            let trainable = net.parts.groups[group].trainable;
            let needs_input = !records.is_empty();
            g = match record {
                Record::Head { mut pooled, dims } => {
                    let (n, h, w, c) = dims;
                    let norm_w = values(params, "head.norm.weight")?;
                    let sums = backward_rows(
                        None,
                        &mut pooled,
                        &norm_w,
                        NORM_EPS,
                        |r| Some(&g[r * c..][..c]),
                        true,
                    );
                    if trainable {
                        out.put_norm("head.norm", &sums, c)?;
                    }
                    pool.give(g);
                    if !needs_input {
                        break;
                    }
                    let mut spread = pool.take(n * h * w * c);
                    let inv = 1.0 / (h * w) as f32;
                    spread
                        .par_chunks_mut(h * w * c)
                        .zip(pooled.par_chunks(c))
                        .for_each(|(image, gp)| {
                            crate::vectorized! {
                                for px in image.chunks_mut(c) {
                                    px.iter_mut().zip(gp).for_each(|(v, g)| *v = g * inv);
                                }
                            }
                        });
                    spread
                }
                Record::Block {
                    stage,
                    block,
                    input,
                    dw_out,
                    normed,
                    hidden,
                    act,
                } => {
                    let b = &net.stages[stage].blocks[block];
                    let w = BlockWeights::load(params, &b.prefix, b.kernel)?;
                    let acts = (input, dw_out, normed, hidden, act);
                    let flow = (trainable, needs_input);
                    block_backward(pool, &mut out, &b.prefix, &w, acts, g, flow)?
                }
                Record::Downsample {
                    stage,
                    input,
                    patches,
                    out_hw,
                } => {
                    let io = (input, patches, out_hw, g);
                    downsample_backward(net, &mut out, stage, io, trainable)?
                }
                Record::Stem { patches, mut conv } => {
                    let c = conv.dims.3;
                    let norm_w = values(params, "stem.1.weight")?;
                    let sums = backward_rows(
                        None,
                        &mut conv.data,
                        &norm_w,
                        NORM_EPS,
                        |r| Some(&g[r * c..][..c]),
                        true,
                    );
                    if trainable {
                        out.put_norm("stem.1", &sums, c)?;
                        out.put("stem.0.bias", sums[2 * c..].to_vec())?;
                        let rows = conv.rows();
                        let gy = Tensor::from_vec(conv.data, (rows, c), &Device::Cpu)?;
                        let gw = gy.t()?.matmul(&patches)?.flatten_all()?.to_vec1()?;
                        out.put("stem.0.weight", gw)?;
                    } else {
                        pool.give(conv.data);
                    }
                    pool.give(g);
                    break;
                }
            };
            if !needs_input {
                pool.give(g);
                break;
            }
        }
        Ok(())
    }
}

/// The backward of one block from `g`, the gradient of its output (`[rows, C]`), which it turns
/// into its input's gradient in place (when `needs_input`); weight gradients when `trainable`.
fn block_backward(
    pool: &BufferPool,
    out: &mut Gradients,
    prefix: &str,
    w: &BlockWeights,
    (input, mut dw_out, mut normed, hidden, mut act): BlockActivations,
    mut g: Vec<f32>,
    (trainable, needs_input): (bool, bool),
) -> Result<Vec<f32>> {
    let (_, h, wd, c) = input.dims;
    let rows = input.rows();
    let hidden_c = w.fc1_bias.len();
    let name = |n: &str| format!("{prefix}.{n}");
    if trainable {
        // fc2 and the layer scale, through the folded weight `gamma W2` and bias `gamma b2`.
        let gb_scaled = column_sums(
            &g,
            &g,
            c,
            #[inline(always)]
            |g, _| g,
        );
        let mut gw_scaled = vec![0f32; c * hidden_c];
        matmul_into(
            &mut gw_scaled,
            MatRef::new(&g, rows, c).t(),
            MatRef::new(&act, rows, hidden_c),
            false,
            true,
        );
        let mut ggamma = vec![0f32; c];
        for (ch, gg) in ggamma.iter_mut().enumerate() {
            let (gw_row, w_row) = (
                &gw_scaled[ch * hidden_c..][..hidden_c],
                &w.fc2[ch * hidden_c..][..hidden_c],
            );
            *gg = gw_row.iter().zip(w_row).map(|(a, b)| a * b).sum::<f32>()
                + gb_scaled[ch] * w.fc2_bias[ch];
        }
        for (row, &gamma) in gw_scaled.chunks_mut(hidden_c).zip(&w.gamma) {
            row.iter_mut().for_each(|v| *v *= gamma);
        }
        let gb: Vec<f32> = gb_scaled.iter().zip(&w.gamma).map(|(g, s)| g * s).collect();
        out.put(&name("mlp.fc2.weight"), gw_scaled)?;
        out.put(&name("mlp.fc2.bias"), gb)?;
        out.put(&name("gamma"), ggamma)?;
    }
    // act becomes the gradient of the GELU's output, then of its input.
    matmul_into(
        &mut act,
        MatRef::new(&g, rows, c),
        MatRef::new(&w.fc2_scaled, c, hidden_c),
        false,
        true,
    );
    let partials: Vec<Vec<f32>> = act
        .par_chunks_mut(hidden_c * ROWS_PER_TASK)
        .zip(hidden.par_chunks(hidden_c * ROWS_PER_TASK))
        .map(|(ga, z)| {
            crate::vectorized! {
                let mut sums = vec![0f32; hidden_c];
                for (ga, z) in ga.chunks_mut(hidden_c).zip(z.chunks(hidden_c)) {
                    let lanes = ga.iter_mut().zip(z).zip(&w.fc1_bias).zip(&mut sums);
                    for (((ga, &z), &b), s) in lanes {
                        *ga *= gelu_grad(z + b);
                        *s += *ga;
                    }
                }
                sums
            }
        })
        .collect();
    pool.give(hidden);
    if trainable {
        out.put(&name("mlp.fc1.bias"), sum_in_order(partials, hidden_c))?;
        let mut gw1 = vec![0f32; hidden_c * c];
        matmul_into(
            &mut gw1,
            MatRef::new(&act, rows, hidden_c).t(),
            MatRef::new(&normed, rows, c),
            false,
            true,
        );
        out.put(&name("mlp.fc1.weight"), gw1)?;
    }
    // normed becomes the gradient of the norm's output; dw_out that of its input.
    matmul_into(
        &mut normed,
        MatRef::new(&act, rows, hidden_c),
        MatRef::new(&w.fc1, hidden_c, c),
        false,
        true,
    );
    pool.give(act);
    let sums = backward_rows(
        None,
        &mut dw_out,
        &w.norm_w,
        NORM_EPS,
        |r| Some(&normed[r * c..][..c]),
        true,
    );
    pool.give(normed);
    let k = w.kernel;
    let geo = DwGeometry::symmetric(h, wd, k, 1, k / 2);
    if trainable {
        out.put_norm(&name("norm"), &sums, c)?;
        out.put(&name("conv_dw.bias"), sums[2 * c..].to_vec())?;
        let gk = depthwise::grad_weight_of(&input.data, &dw_out, input.dims, geo);
        let mut gw = vec![0f32; gk.len()];
        for t in 0..k * k {
            for ch in 0..c {
                gw[ch * k * k + t] = gk[t * c + ch];
            }
        }
        out.put(&name("conv_dw.weight"), gw)?;
    }
    // The residual: the input's gradient is the output's plus the depthwise's.
    if needs_input {
        depthwise::grad_input_add(&dw_out, &w.dw, input.dims, geo, &mut g);
    }
    pool.give(dw_out);
    pool.give(input.data);
    Ok(g)
}

/// The backward of the downsample before `stage` from `g`, its output's gradient: its input's.
fn downsample_backward(
    net: &ConvNeXt,
    out: &mut Gradients,
    stage: usize,
    (mut input, mut patches, (oh, ow), g): (Map, Vec<f32>, (usize, usize), Vec<f32>),
    trainable: bool,
) -> Result<Vec<f32>> {
    let pool = &net.pool;
    let (norm_w, _, kernel, _, (co, k)) = downsample_weights(net, stage)?;
    let (n, h, w, ci) = input.dims;
    let rows = n * oh * ow;
    let patch = k * k * ci;
    let p = format!("{}.downsample", net.stages[stage].prefix);
    if trainable {
        out.put(
            &format!("{p}.1.bias"),
            column_sums(
                &g,
                &g,
                co,
                #[inline(always)]
                |g, _| g,
            ),
        )?;
        let mut gw = vec![0f32; co * patch];
        matmul_into(
            &mut gw,
            MatRef::new(&g, rows, co).t(),
            MatRef::new(&patches, rows, patch),
            false,
            true,
        );
        out.put(
            &format!("{p}.1.weight"),
            permute_kernel(&gw, co, ci, k, false),
        )?;
    }
    // patches becomes the gradient of the normed patches.
    matmul_into(
        &mut patches,
        MatRef::new(&g, rows, co),
        MatRef::new(&kernel, co, patch),
        false,
        true,
    );
    pool.give(g);
    let grad_of = |px| {
        let (b, y, x) = (px / (h * w), px / w % h, px % w);
        let (prow, slot) = patch_slot((b, y, x), k, (oh, ow))?;
        Some(&patches[prow * patch + slot * ci..][..ci])
    };
    let sums = backward_rows(None, &mut input.data, &norm_w, NORM_EPS, grad_of, true);
    pool.give(patches);
    if trainable {
        out.put_norm(&format!("{p}.0"), &sums, ci)?;
    }
    Ok(input.data)
}

/// Where input pixel `(b, y, x)` of a map `(h, w)` lands in the `k`x`k` patches `(oh, ow)` of a
/// stride-`k` convolution: the patch row and the offset in it (in pixels), if not dropped.
#[inline]
fn patch_slot(
    (b, y, x): (usize, usize, usize),
    k: usize,
    (oh, ow): (usize, usize),
) -> Option<(usize, usize)> {
    (y < oh * k && x < ow * k).then(|| ((b * oh + y / k) * ow + x / k, (y % k) * k + x % k))
}
