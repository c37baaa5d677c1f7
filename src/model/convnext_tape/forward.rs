//! The forward pass: stem, downsamples and blocks into pooled features, recording a [`Tape`].

use super::{
    downsample_weights, values, BlockActivations, BlockWeights, BufferPool, Map, Record, Tape,
    ROWS_PER_TASK,
};
use crate::model::convnext::{ConvNeXt, NORM_EPS};
use crate::model::layers::stem_patches;
use crate::model::ops::channel_affine::bias_rows;
use crate::model::ops::depthwise::{self, DwGeometry};
use crate::model::ops::gelu::gelu_f32;
use crate::model::ops::layer_norm::{normalize_row, normalize_rows};
use crate::model::ops::{matmul_into, MatRef};
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

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
    normalize_rows(
        &conv.data,
        &values(params, "stem.1.weight")?,
        &values(params, "stem.1.bias")?,
        NORM_EPS,
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
            crate::vectorized! {
                for px in image.chunks(c) {
                    sums.iter_mut().zip(px).for_each(|(s, v)| *s += v);
                }
            }
            let inv = 1.0 / (hh * ww) as f32;
            sums.into_iter().map(move |s| s * inv)
        })
        .collect();
    pool.give(h.data);
    let mut features = vec![0f32; n * c];
    normalize_rows(
        &pooled,
        &values(params, "head.norm.weight")?,
        &values(params, "head.norm.bias")?,
        NORM_EPS,
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
    normalize_rows(&dw_out, &w.norm_w, &w.norm_b, NORM_EPS, &mut normed);
    let mut hidden = pool.take(rows * hidden_c);
    matmul_into(
        &mut hidden,
        MatRef::new(&normed, rows, c),
        MatRef::new(&w.fc1, hidden_c, c).t(),
        false,
        true,
    );
    let mut act = pool.take(rows * hidden_c);
    act.par_chunks_mut(hidden_c * ROWS_PER_TASK)
        .zip(hidden.par_chunks(hidden_c * ROWS_PER_TASK))
        .for_each(|(a, z)| {
            crate::vectorized! {
                for (a, z) in a.chunks_mut(hidden_c).zip(z.chunks(hidden_c)) {
                    for ((a, &z), &b) in a.iter_mut().zip(z).zip(&w.fc1_bias) {
                        *a = gelu_f32(z + b);
                    }
                }
            }
        });
    let mut out = pool.take(rows * c);
    bias_rows(&mut out, Some(&x.data), &w.fc2_bias_scaled);
    matmul_into(
        &mut out,
        MatRef::new(&act, rows, hidden_c),
        MatRef::new(&w.fc2_scaled, c, hidden_c).t(),
        true,
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
            crate::vectorized! {
                let (b, oy) = (prow / oh, prow % oh);
                for y in oy * k..(oy + 1) * k {
                    for xx in 0..ow * k {
                        let slot = (y % k) * k + xx % k;
                        let src = &x.data[((b * h + y) * w + xx) * ci..][..ci];
                        let dst = &mut out[(xx / k) * patch + slot * ci..][..ci];
                        normalize_row(src, &norm_w, &norm_b, NORM_EPS, dst);
                    }
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
