//! ConvNeXt's passes without a candle graph, on the CPU: the inference forward and the training
//! forward that records a [`Tape`], with the backward over it. Activations live in plain buffers
//! from a [`BufferPool`] that the next pass reuses (no fresh zero-filled pages), and each layer is
//! one or two fused passes over memory around the matrix products:
//!
//! - a block is the 7x7 depthwise with its bias, LayerNorm, `fc1` into bias+GELU, and `fc2` with
//!   the layer scale folded into its weight (`gamma * (a @ W2^T + b2) = a @ (gamma W2)^T +
//!   gamma b2`) accumulating onto the residual; its backward reads `gamma`'s gradient off the
//!   folded weight's, and the depthwise's input gradient accumulates onto the residual's;
//! - a downsample is LayerNorm writing straight into the 2x2 patches, and one product;
//! - the stem gathers its 4x4 patches once and multiplies them with the weight.

use super::convnext::{ConvNeXt, NORM_EPS};
use super::layers::stem_patches;
use super::ops::channel_affine::column_sums;
use super::ops::depthwise::{self, DwGeometry};
use super::ops::gelu::{gelu_f32, gelu_grad};
use super::ops::layer_norm::{backward_row as norm_backward_row, normalize_row};
use super::ops::{matmul, sum_in_order, wide};
use super::Params;
use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// Rows per parallel task of the row-wise passes.
const ROWS_PER_TASK: usize = 64;

/// Buffers handed back by finished passes, for the next ones to take instead of allocating.
/// It holds at most as many bytes as the largest pass took, the oldest buffers dropped first.
#[derive(Default)]
pub struct BufferPool(Mutex<PoolState>);

#[derive(Default)]
struct PoolState {
    free: Vec<Vec<f32>>,
    taken_this_pass: usize,
    largest_pass: usize,
}

impl BufferPool {
    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts counting the values a new pass takes.
    fn begin_pass(&self) {
        self.state().taken_this_pass = 0;
    }

    /// A buffer of `len` values with arbitrary contents.
    fn take(&self, len: usize) -> Vec<f32> {
        let mut s = self.state();
        s.taken_this_pass += len;
        s.largest_pass = s.largest_pass.max(s.taken_this_pass);
        match s.free.iter().position(|v| v.len() == len) {
            Some(i) => s.free.swap_remove(i),
            None => vec![0.0; len],
        }
    }

    /// Returns `buf` for later passes.
    fn give(&self, buf: Vec<f32>) {
        let mut s = self.state();
        s.free.push(buf);
        let mut held: usize = s.free.iter().map(Vec::len).sum();
        while held > s.largest_pass {
            held -= s.free.remove(0).len();
        }
    }
}

/// A matrix over a slice: element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// The row-major `rows` x `cols` matrix at the start of `data`.
    fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose, as a view.
    fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// `dst = a @ b` (`dst += a @ b` when `accumulate`), `dst` row-major `[a.rows, b.cols]`, with
/// [`matmul`] on rayon's threads.
fn matmul_into(dst: &mut [f32], a: MatRef, b: MatRef, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul_into: inner dimensions differ");
    assert!(dst.len() >= m * n, "matmul_into: destination too small");
    for x in [&a, &b] {
        let last = (x.rows.saturating_sub(1)) * x.rs + x.cols.saturating_sub(1) * x.cs;
        assert!(
            x.rows * x.cols == 0 || last < x.data.len(),
            "matmul_into: operand outside its slice"
        );
    }
    if m * n == 0 {
        return;
    }
    // SAFETY: the asserts above keep every element the strides reach inside the slices, and
    // `dst` holds the m x n row-major result.
    unsafe {
        matmul(
            (m, n, k),
            (dst.as_mut_ptr(), n),
            accumulate,
            (a.data.as_ptr(), a.rs, a.cs),
            (b.data.as_ptr(), b.rs, b.cs),
            true,
        )
    }
}

/// `out[r, c] = bias[c]`, plus `x[r, c]` when `x` is given.
fn bias_rows(out: &mut [f32], x: Option<&[f32]>, bias: &[f32]) {
    let c = bias.len();
    out.par_chunks_mut(c * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(t, out)| match x {
            Some(x) => {
                let x = &x[t * c * ROWS_PER_TASK..][..out.len()];
                for (o, x) in out.chunks_mut(c).zip(x.chunks(c)) {
                    for ((o, &x), &b) in o.iter_mut().zip(x).zip(bias) {
                        *o = x + b;
                    }
                }
            }
            None => out.chunks_mut(c).for_each(|o| o.copy_from_slice(bias)),
        });
}

/// LayerNorm of every row of `x` into `out`.
fn norm_rows(x: &[f32], w: &[f32], b: &[f32], out: &mut [f32]) {
    let c = w.len();
    out.par_chunks_mut(c * ROWS_PER_TASK)
        .zip(x.par_chunks(c * ROWS_PER_TASK))
        .for_each(|(out, x)| {
            wide(|| {
                for (y, x) in out.chunks_mut(c).zip(x.chunks(c)) {
                    normalize_row(x, w, b, NORM_EPS, y);
                }
            })
        });
}

/// LayerNorm's backward over the rows of `x` (its input), in place: each row becomes its
/// gradient, from the output's gradient `grad_of(row)`, or zero where that is `None` (a row the
/// next layer dropped). Returns the weight's and bias's gradients and the input gradient's column
/// sums, `[3 * C]`.
fn norm_backward<'g>(
    x: &mut [f32],
    w: &[f32],
    grad_of: impl Fn(usize) -> Option<&'g [f32]> + Sync,
) -> Vec<f32> {
    let c = w.len();
    let partials: Vec<Vec<f32>> = x
        .par_chunks_mut(c * ROWS_PER_TASK)
        .enumerate()
        .map(|(t, rows)| {
            wide(|| {
                let mut sums = vec![0f32; 3 * c];
                let mut input = vec![0f32; c];
                for (i, row) in rows.chunks_mut(c).enumerate() {
                    let Some(g) = grad_of(t * ROWS_PER_TASK + i) else {
                        row.fill(0.0);
                        continue;
                    };
                    input.copy_from_slice(row);
                    let (sw, rest) = sums.split_at_mut(c);
                    let (sb, sx) = rest.split_at_mut(c);
                    norm_backward_row(&input, w, g, NORM_EPS, row, sw, sb);
                    sx.iter_mut().zip(row.iter()).for_each(|(s, g)| *s += g);
                }
                sums
            })
        })
        .collect();
    sum_in_order(partials, 3 * c)
}

/// The values of tensor `name`, row-major.
fn values(params: &Params, name: &str) -> Result<Vec<f32>> {
    params.var(name).as_tensor().flatten_all()?.to_vec1()
}

/// `[Co, Ci, K, K]` as `[Co, K, K, Ci]` (the order of a channels-last patch) or back
/// (`to_patch_order` false).
fn permute_kernel(w: &[f32], co: usize, ci: usize, k: usize, to_patch_order: bool) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for o in 0..co {
        for i in 0..ci {
            for t in 0..k * k {
                let (conv, patch) = ((o * ci + i) * k * k + t, (o * k * k + t) * ci + i);
                if to_patch_order {
                    out[patch] = w[conv];
                } else {
                    out[conv] = w[patch];
                }
            }
        }
    }
    out
}

/// The weights of one block, laid out for the passes.
struct BlockWeights {
    /// Depthwise kernel `[K, K, C]`.
    dw: Vec<f32>,
    dw_bias: Vec<f32>,
    norm_w: Vec<f32>,
    norm_b: Vec<f32>,
    /// `[4C, C]`.
    fc1: Vec<f32>,
    fc1_bias: Vec<f32>,
    /// `[C, 4C]`, and the same rows times `gamma`.
    fc2: Vec<f32>,
    fc2_scaled: Vec<f32>,
    fc2_bias: Vec<f32>,
    /// `gamma * fc2_bias`.
    fc2_bias_scaled: Vec<f32>,
    gamma: Vec<f32>,
    kernel: usize,
}

impl BlockWeights {
    fn load(params: &Params, prefix: &str, kernel: usize) -> Result<Self> {
        let v = |n: &str| values(params, &format!("{prefix}.{n}"));
        let raw_dw = v("conv_dw.weight")?;
        let c = raw_dw.len() / (kernel * kernel);
        let mut dw = vec![0f32; raw_dw.len()];
        for ch in 0..c {
            for t in 0..kernel * kernel {
                dw[t * c + ch] = raw_dw[ch * kernel * kernel + t];
            }
        }
        let (fc2, fc2_bias, gamma) = (v("mlp.fc2.weight")?, v("mlp.fc2.bias")?, v("gamma")?);
        let hidden = fc2.len() / c;
        let fc2_scaled = fc2
            .chunks(hidden)
            .zip(&gamma)
            .flat_map(|(row, &g)| row.iter().map(move |w| w * g))
            .collect();
        let fc2_bias_scaled = fc2_bias.iter().zip(&gamma).map(|(b, g)| b * g).collect();
        Ok(Self {
            dw,
            dw_bias: v("conv_dw.bias")?,
            norm_w: v("norm.weight")?,
            norm_b: v("norm.bias")?,
            fc1: v("mlp.fc1.weight")?,
            fc1_bias: v("mlp.fc1.bias")?,
            fc2,
            fc2_scaled,
            fc2_bias,
            fc2_bias_scaled,
            gamma,
            kernel,
        })
    }
}

/// A channels-last map `[N, H, W, C]`.
struct Map {
    data: Vec<f32>,
    dims: (usize, usize, usize, usize),
}

impl Map {
    fn rows(&self) -> usize {
        let (n, h, w, _) = self.dims;
        n * h * w
    }
}

/// What the backward of one layer needs, in forward order.
enum Record {
    /// The stem's gathered patches and its convolution's output (with bias), its norm's input.
    Stem { patches: Tensor, conv: Map },
    /// The downsample before stage `stage`: its norm's input and the normed 2x2 patches.
    Downsample {
        stage: usize,
        input: Map,
        patches: Vec<f32>,
        out_hw: (usize, usize),
    },
    /// Block `block` of stage `stage`: its input, the depthwise's output, the normed rows, `fc1`'s
    /// product (before its bias) and the GELU's output.
    Block {
        stage: usize,
        block: usize,
        input: Map,
        dw_out: Vec<f32>,
        normed: Vec<f32>,
        hidden: Vec<f32>,
        act: Vec<f32>,
    },
    /// The pooled features (`head.norm`'s input) of the last map, of `dims`.
    Head {
        pooled: Vec<f32>,
        dims: (usize, usize, usize, usize),
    },
}

/// The activations of a [`forward`] pass that its backward needs, each with its layer group.
pub struct Tape {
    records: Vec<(usize, Record)>,
}

/// Pooled features of `x` `[N, 3, H, W]` through `net`; layers of groups from `record_from` on
/// are recorded on the tape (none when `None`: an inference pass).
pub fn forward(net: &ConvNeXt, x: &Tensor, record_from: Option<usize>) -> Result<(Tensor, Tape)> {
    let pool = &net.pool;
    let params = &net.parts.params;
    pool.begin_pass();
    let recorded = |group: usize| record_from.is_some_and(|first| group >= first);
    let mut records = Vec::new();

    let stem_w = params.var("stem.0.weight").as_tensor().detach();
    let (conv, patches) = stem_patches(x, &stem_w, stem_w.dim(2)?, [0; 4])?;
    let dims = conv.dims4()?;
    let mut conv = Map {
        data: conv.flatten_all()?.to_vec1()?,
        dims,
    };
    let bias = values(params, "stem.0.bias")?;
    let unbiased = std::mem::take(&mut conv.data);
    conv.data = pool.take(unbiased.len());
    bias_rows(&mut conv.data, Some(&unbiased), &bias);
    let mut h = Map {
        data: pool.take(conv.data.len()),
        dims,
    };
    norm_rows(
        &conv.data,
        &values(params, "stem.1.weight")?,
        &values(params, "stem.1.bias")?,
        &mut h.data,
    );
    if recorded(0) {
        records.push((0, Record::Stem { patches, conv }));
    } else {
        pool.give(conv.data);
    }

    for (si, stage) in net.stages.iter().enumerate() {
        let group = si + 1;
        if stage.downsample {
            let (out, record) = downsample_forward(net, si, h, recorded(group))?;
            h = out;
            if let Some(r) = record {
                records.push((group, r));
            }
        }
        for (bi, block) in stage.blocks.iter().enumerate() {
            let w = BlockWeights::load(params, &block.prefix, block.kernel)?;
            let (out, record) = block_forward(pool, &w, h, recorded(group))?;
            h = out;
            if let Some((input, dw_out, normed, hidden, act)) = record {
                records.push((
                    group,
                    Record::Block {
                        stage: si,
                        block: bi,
                        input,
                        dw_out,
                        normed,
                        hidden,
                        act,
                    },
                ));
            }
        }
    }

    let (n, hh, ww, c) = h.dims;
    let pooled: Vec<f32> = h
        .data
        .par_chunks(hh * ww * c)
        .flat_map_iter(|image| {
            let mut sums = vec![0f32; c];
            for px in image.chunks(c) {
                sums.iter_mut().zip(px).for_each(|(s, v)| *s += v);
            }
            let inv = 1.0 / (hh * ww) as f32;
            sums.into_iter().map(move |s| s * inv)
        })
        .collect();
    pool.give(h.data);
    let mut features = vec![0f32; n * c];
    norm_rows(
        &pooled,
        &values(params, "head.norm.weight")?,
        &values(params, "head.norm.bias")?,
        &mut features,
    );
    let head_group = net.stages.len() + 1;
    if recorded(head_group) {
        records.push((
            head_group,
            Record::Head {
                pooled,
                dims: h.dims,
            },
        ));
    }
    let features = Tensor::from_vec(features, (n, c), &Device::Cpu)?;
    Ok((features, Tape { records }))
}

/// The activations a block's backward needs: input, depthwise output, normed, hidden, GELU.
type BlockActivations = (Map, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

/// One block on `x`; with `record`, what its backward needs.
fn block_forward(
    pool: &BufferPool,
    w: &BlockWeights,
    x: Map,
    record: bool,
) -> Result<(Map, Option<BlockActivations>)> {
    let (_, h, wd, c) = x.dims;
    let rows = x.rows();
    let hidden_c = w.fc1_bias.len();
    let k = w.kernel;
    let geo = DwGeometry::symmetric(h, wd, k, 1, k / 2);
    let mut dw_out = pool.take(rows * c);
    depthwise::forward_into(&x.data, &w.dw, Some(&w.dw_bias), x.dims, geo, &mut dw_out);
    let mut normed = pool.take(rows * c);
    norm_rows(&dw_out, &w.norm_w, &w.norm_b, &mut normed);
    let mut hidden = pool.take(rows * hidden_c);
    matmul_into(
        &mut hidden,
        MatRef::new(&normed, rows, c),
        MatRef::new(&w.fc1, hidden_c, c).t(),
        false,
    );
    let mut act = pool.take(rows * hidden_c);
    act.par_chunks_mut(hidden_c * ROWS_PER_TASK)
        .zip(hidden.par_chunks(hidden_c * ROWS_PER_TASK))
        .for_each(|(a, z)| {
            wide(|| {
                for (a, z) in a.chunks_mut(hidden_c).zip(z.chunks(hidden_c)) {
                    for ((a, &z), &b) in a.iter_mut().zip(z).zip(&w.fc1_bias) {
                        *a = gelu_f32(z + b);
                    }
                }
            })
        });
    let mut out = pool.take(rows * c);
    bias_rows(&mut out, Some(&x.data), &w.fc2_bias_scaled);
    matmul_into(
        &mut out,
        MatRef::new(&act, rows, hidden_c),
        MatRef::new(&w.fc2_scaled, c, hidden_c).t(),
        true,
    );
    let out = Map {
        data: out,
        dims: x.dims,
    };
    if record {
        return Ok((out, Some((x, dw_out, normed, hidden, act))));
    }
    for buf in [x.data, dw_out, normed, hidden, act] {
        pool.give(buf);
    }
    Ok((out, None))
}

/// The weights of the downsample before stage `stage`: norm weight and bias, the kernel in
/// patch order `[Co, K, K, Ci]`, the bias, and `(Co, K)`.
type DownsampleWeights = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, (usize, usize));

fn downsample_weights(net: &ConvNeXt, stage: usize) -> Result<DownsampleWeights> {
    let params = &net.parts.params;
    let p = format!("{}.downsample", net.stages[stage].prefix);
    let conv = params.var(&format!("{p}.1.weight"));
    let (co, ci, k, _) = conv.as_tensor().dims4()?;
    let kernel = permute_kernel(&values(params, &format!("{p}.1.weight"))?, co, ci, k, true);
    Ok((
        values(params, &format!("{p}.0.weight"))?,
        values(params, &format!("{p}.0.bias"))?,
        kernel,
        values(params, &format!("{p}.1.bias"))?,
        (co, k),
    ))
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

/// LayerNorm, then the `k`x`k` stride-`k` convolution, on `x`.
fn downsample_forward(
    net: &ConvNeXt,
    stage: usize,
    x: Map,
    record: bool,
) -> Result<(Map, Option<Record>)> {
    let pool = &net.pool;
    let (norm_w, norm_b, kernel, bias, (co, k)) = downsample_weights(net, stage)?;
    let (n, h, w, ci) = x.dims;
    let (oh, ow) = (h / k, w / k);
    let patch = k * k * ci;
    let mut patches = pool.take(n * oh * ow * patch);
    patches
        .par_chunks_mut(ow * patch)
        .enumerate()
        .for_each(|(prow, out)| {
            let (b, oy) = (prow / oh, prow % oh);
            for y in oy * k..(oy + 1) * k {
                for xx in 0..ow * k {
                    let slot = (y % k) * k + xx % k;
                    let src = &x.data[((b * h + y) * w + xx) * ci..][..ci];
                    let dst = &mut out[(xx / k) * patch + slot * ci..][..ci];
                    normalize_row(src, &norm_w, &norm_b, NORM_EPS, dst);
                }
            }
        });
    let rows = n * oh * ow;
    let mut out = pool.take(rows * co);
    bias_rows(&mut out, None, &bias);
    matmul_into(
        &mut out,
        MatRef::new(&patches, rows, patch),
        MatRef::new(&kernel, co, patch).t(),
        true,
    );
    let out = Map {
        data: out,
        dims: (n, oh, ow, co),
    };
    if record {
        let r = Record::Downsample {
            stage,
            input: x,
            patches,
            out_hw: (oh, ow),
        };
        return Ok((out, Some(r)));
    }
    pool.give(x.data);
    pool.give(patches);
    Ok((out, None))
}

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
                    let sums = norm_backward(&mut pooled, &norm_w, |r| Some(&g[r * c..][..c]));
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
                            for px in image.chunks_mut(c) {
                                px.iter_mut().zip(gp).for_each(|(v, g)| *v = g * inv);
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
                    let sums = norm_backward(&mut conv.data, &norm_w, |r| Some(&g[r * c..][..c]));
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
        let gb_scaled = column_sums(&g, &g, c, |g, _| g);
        let mut gw_scaled = vec![0f32; c * hidden_c];
        matmul_into(
            &mut gw_scaled,
            MatRef::new(&g, rows, c).t(),
            MatRef::new(&act, rows, hidden_c),
            false,
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
    );
    let partials: Vec<Vec<f32>> = act
        .par_chunks_mut(hidden_c * ROWS_PER_TASK)
        .zip(hidden.par_chunks(hidden_c * ROWS_PER_TASK))
        .map(|(ga, z)| {
            wide(|| {
                let mut sums = vec![0f32; hidden_c];
                for (ga, z) in ga.chunks_mut(hidden_c).zip(z.chunks(hidden_c)) {
                    let lanes = ga.iter_mut().zip(z).zip(&w.fc1_bias).zip(&mut sums);
                    for (((ga, &z), &b), s) in lanes {
                        *ga *= gelu_grad(z + b);
                        *s += *ga;
                    }
                }
                sums
            })
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
        );
        out.put(&name("mlp.fc1.weight"), gw1)?;
    }
    // normed becomes the gradient of the norm's output; dw_out that of its input.
    matmul_into(
        &mut normed,
        MatRef::new(&act, rows, hidden_c),
        MatRef::new(&w.fc1, hidden_c, c),
        false,
    );
    pool.give(act);
    let sums = norm_backward(&mut dw_out, &w.norm_w, |r| Some(&normed[r * c..][..c]));
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
        out.put(&format!("{p}.1.bias"), column_sums(&g, &g, co, |g, _| g))?;
        let mut gw = vec![0f32; co * patch];
        matmul_into(
            &mut gw,
            MatRef::new(&g, rows, co).t(),
            MatRef::new(&patches, rows, patch),
            false,
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
    );
    pool.give(g);
    let sums = norm_backward(&mut input.data, &norm_w, |px| {
        let (b, y, x) = (px / (h * w), px / w % h, px % w);
        let (prow, slot) = patch_slot((b, y, x), k, (oh, ow))?;
        Some(&patches[prow * patch + slot * ci..][..ci])
    });
    pool.give(patches);
    if trainable {
        out.put_norm(&format!("{p}.0"), &sums, ci)?;
    }
    Ok(input.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::convnext::ConvNeXtSpec;
    use crate::model::Backbone;
    use rand::{Rng, SeedableRng};

    /// A ConvNeXt of a few narrow blocks with seeded random weights, every group trainable.
    fn tiny_convnext() -> ConvNeXt {
        let spec = ConvNeXtSpec {
            depths: [1, 1, 2, 1],
            dims: [8, 16, 16, 24],
            conv_mlp: true,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut tensors = Vec::new();
        let mut add = |name: String, shape: &[usize], centre: f32| {
            let n = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| centre + rng.random_range(-0.5f32..0.5))
                .collect();
            tensors.push((name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap()));
        };
        let d = spec.dims;
        add("stem.0.weight".into(), &[d[0], 3, 4, 4], 0.0);
        add("stem.0.bias".into(), &[d[0]], 0.0);
        let norm = |add: &mut dyn FnMut(String, &[usize], f32), p: &str, c: usize| {
            add(format!("{p}.weight"), &[c], 1.0);
            add(format!("{p}.bias"), &[c], 0.0);
        };
        norm(&mut add, "stem.1", d[0]);
        for (si, (&depth, &c)) in spec.depths.iter().zip(&d).enumerate() {
            if si > 0 {
                norm(&mut add, &format!("stages.{si}.downsample.0"), d[si - 1]);
                add(
                    format!("stages.{si}.downsample.1.weight"),
                    &[c, d[si - 1], 2, 2],
                    0.0,
                );
                add(format!("stages.{si}.downsample.1.bias"), &[c], 0.0);
            }
            for bi in 0..depth {
                let p = format!("stages.{si}.blocks.{bi}");
                add(format!("{p}.conv_dw.weight"), &[c, 1, 7, 7], 0.0);
                add(format!("{p}.conv_dw.bias"), &[c], 0.0);
                norm(&mut add, &format!("{p}.norm"), c);
                add(format!("{p}.mlp.fc1.weight"), &[4 * c, c, 1, 1], 0.0);
                add(format!("{p}.mlp.fc1.bias"), &[4 * c], 0.0);
                add(format!("{p}.mlp.fc2.weight"), &[c, 4 * c, 1, 1], 0.0);
                add(format!("{p}.mlp.fc2.bias"), &[c], 0.0);
                add(format!("{p}.gamma"), &[c], 0.5);
            }
        }
        norm(&mut add, "head.norm", d[3]);
        let params = Params::from_tensors(tensors).unwrap();
        let mut net = ConvNeXt::new("convnext_tiny_test", spec, params).unwrap();
        for i in 0..net.parts.groups.len() {
            net.set_trainable(i, true);
        }
        net
    }

    /// The tape's gradient of `sum(features * r)` against central finite differences of the
    /// inference pass, on a few elements of every tensor (folded layer scale, fused depthwise
    /// residual, norms writing into and reading from the downsample's patches).
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let net = tiny_convnext();
        // 36 px: stage 0 runs at 9x9, whose last row and column the first downsample drops.
        let x = Tensor::randn(0f32, 1.0, (2, 3, 36, 36), &Device::Cpu)?;
        let (features, tape) = forward(&net, &x, Some(0))?;
        let r = Tensor::randn(0f32, 1.0, features.shape(), &Device::Cpu)?;
        let leaf = candle_core::Var::from_tensor(&features)?;
        let mut grads = leaf.as_tensor().mul(&r)?.sum_all()?.backward()?;
        let g = grads.get(leaf.as_tensor()).expect("a gradient").clone();
        tape.backward(&net, &g, &mut grads)?;
        let loss = || -> Result<f64> {
            let y = forward(&net, &x, None)?.0;
            Ok(y.mul(&r)?.sum_all()?.to_scalar::<f32>()? as f64)
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let eps = 1e-2f32;
        for (_, var) in net.trainable_vars() {
            let analytic = grads
                .get(var.as_tensor())
                .expect("a taped gradient")
                .flatten_all()?
                .to_vec1::<f32>()?;
            let base = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            for _ in 0..3 {
                let i = rng.random_range(0..base.len());
                let probe = |delta: f32| -> Result<f64> {
                    let mut v = base.clone();
                    v[i] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu)?)?;
                    loss()
                };
                let numeric = ((probe(eps)? - probe(-eps)?) / (2.0 * eps as f64)) as f32;
                var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu)?)?;
                assert!(
                    (analytic[i] - numeric).abs() <= 2e-2 * numeric.abs().max(1.0),
                    "{:?} element {i}: tape {} vs finite difference {numeric}",
                    var.dims(),
                    analytic[i]
                );
            }
        }
        Ok(())
    }
}
