//! Multi-head self-attention from a ViT's packed qkv projection, one task per image and head:
//! the scores `q k^T` of that head, their scaled softmax in place and the weighted sum of `v`,
//! while the head's scores are still in cache. Done as separate batched products and a softmax,
//! every stage reads and writes all heads' `[T, T]` scores (15 MB for 32 images of ViT-Tiny)
//! through memory, and the products of 197-row matrices ran at half their speed on hot data.
//! The heads' outputs are written side by side, as the projection takes them, so no transpose
//! follows.

use super::batched_matmul::batched_matmul;
use super::softmax::{
    scaled_softmax_backward, scaled_softmax_last_dim, softmax_backward_row, softmax_row,
};
use super::{contiguous_f32, matmul, SharedPtr};
use candle_core::{bail, Layout, Result, Tensor};
use rayon::prelude::*;

/// The attention of the first `rows` query tokens of each of `n` images, from `qkv` `[N*T, 3*D]`
/// laid out `[N, T, 3, heads, head dim]`: the heads' outputs `[N*rows, D]`, and the softmax
/// weights `[N, heads, rows, T]` when `keep_weights` (for the backward). The scores are scaled
/// by `1 / sqrt(head dim)`.
pub fn self_attention(
    qkv: &Tensor,
    n: usize,
    heads: usize,
    rows: usize,
    keep_weights: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (nt, three_d) = qkv.dims2()?;
    let (t, d) = (nt / n.max(1), three_d / 3);
    let hd = d / heads.max(1);
    if n == 0 || nt != n * t || three_d != 3 * d || d != heads * hd || rows == 0 || rows > t {
        bail!(
            "self_attention: qkv {:?} for {n} images of {heads} heads, {rows} rows",
            qkv.dims()
        );
    }
    let scale = (hd as f32).powf(-0.5);
    if !qkv.device().is_cpu() {
        return composed(qkv, (n, t, heads, rows), scale, keep_weights);
    }
    let qkv = qkv.contiguous()?;
    let (storage, layout) = qkv.storage_and_layout();
    let qkv_data = cpu_f32(&storage, layout)?;
    let mut out = Vec::<f32>::with_capacity(n * rows * d);
    let weights_len = if keep_weights {
        n * heads * rows * t
    } else {
        0
    };
    let mut weights = Vec::<f32>::with_capacity(weights_len);
    // SAFETY: task (image, head) writes only its head's columns of its image's rows of `out`
    // and its own `[rows, T]` block of `weights`; both vectors outlive the loop.
    let outputs = unsafe { SharedPtr::new((out.as_mut_ptr(), weights.as_mut_ptr())) };
    (0..n * heads)
        .into_par_iter()
        .for_each_init(Vec::new, |scratch, task| {
            let (out_ptr, weights_ptr) = outputs.get();
            let (image, head) = (task / heads, task % heads);
            let q = &qkv_data[image * t * three_d + head * hd..];
            let (k, v) = (&q[d..], &q[2 * d..]);
            let scores: &mut [f32] = if keep_weights {
                // SAFETY: this task's block of `weights`, inside its capacity; no other task
                // touches it, and the product below writes it whole before it is read.
                unsafe {
                    std::slice::from_raw_parts_mut(weights_ptr.add(task * rows * t), rows * t)
                }
            } else {
                scratch.resize(rows * t, 0.0);
                scratch
            };
            // SAFETY: q and k are `rows x hd` and `T x hd` matrices of row stride 3D inside
            // `qkv_data` (checked shape), `scores` holds rows x T values, and `out`'s block for this
            // task (rows of stride D, hd columns) lies inside its capacity and belongs to this task.
            unsafe {
                matmul(
                    (rows, t, hd),
                    (scores.as_mut_ptr(), t),
                    false,
                    (q.as_ptr(), three_d, 1),
                    (k.as_ptr(), 1, three_d),
                    false,
                );
                crate::vectorized! { scores.chunks_mut(t).for_each(|row| softmax_row(row, scale)) };
                matmul(
                    (rows, hd, t),
                    (out_ptr.add(image * rows * d + head * hd), d),
                    false,
                    (scores.as_ptr(), t, 1),
                    (v.as_ptr(), three_d, 1),
                    false,
                );
            }
        });
    // SAFETY: the tasks together wrote every element of both (every image and head).
    unsafe {
        out.set_len(n * rows * d);
        weights.set_len(weights_len);
    }
    let out = Tensor::from_vec(out, (n * rows, d), qkv.device())?;
    let weights = keep_weights
        .then(|| Tensor::from_vec(weights, (n, heads, rows, t), qkv.device()))
        .transpose()?;
    Ok((out, weights))
}

/// The gradient `[N*T, 3*D]` of [`self_attention`]'s `qkv` from the softmax `weights`
/// `[N, heads, rows, T]` it kept and the gradient `gheads` `[N*rows, D]` of its output. Per image
/// and head: `gA = gout v^T`, `gv = A^T gout`, the softmax's backward in place of `gA`, then
/// `gq = gS k` (zero below the query rows) and `gk = gS^T q`, each written into its columns of
/// the packed gradient.
pub fn self_attention_backward(qkv: &Tensor, weights: &Tensor, gheads: &Tensor) -> Result<Tensor> {
    let (n, heads, rows, t) = weights.dims4()?;
    let (nt, three_d) = qkv.dims2()?;
    let d = three_d / 3;
    let hd = d / heads.max(1);
    if nt != n * t || three_d != 3 * d || d != heads * hd || gheads.dims() != [n * rows, d] {
        bail!(
            "self_attention_backward: qkv {:?}, weights {:?}, gradient {:?}",
            qkv.dims(),
            weights.dims(),
            gheads.dims()
        );
    }
    let scale = (hd as f32).powf(-0.5);
    if !qkv.device().is_cpu() {
        return composed_backward(qkv, weights, gheads, scale);
    }
    let (qkv, weights, gheads) = (
        qkv.contiguous()?,
        weights.contiguous()?,
        gheads.contiguous()?,
    );
    let (qkv_storage, qkv_layout) = qkv.storage_and_layout();
    let (weights_storage, weights_layout) = weights.storage_and_layout();
    let (gheads_storage, gheads_layout) = gheads.storage_and_layout();
    let qkv_data = cpu_f32(&qkv_storage, qkv_layout)?;
    let weights_data = cpu_f32(&weights_storage, weights_layout)?;
    let gheads_data = cpu_f32(&gheads_storage, gheads_layout)?;
    let mut grad = Vec::<f32>::with_capacity(nt * three_d);
    // SAFETY: task (image, head) writes only its head's columns of q, k and v in its image's
    // rows of `grad`, which outlives the loop.
    let grad_ptr = unsafe { SharedPtr::new(grad.as_mut_ptr()) };
    (0..n * heads)
        .into_par_iter()
        .for_each_init(Vec::new, |gscores, task| {
            let (image, head) = (task / heads, task % heads);
            let q = &qkv_data[image * t * three_d + head * hd..];
            let (k, v) = (&q[d..], &q[2 * d..]);
            let a = &weights_data[task * rows * t..][..rows * t];
            let gout = &gheads_data[image * rows * d + head * hd..];
            // This task's q, k and v columns of its image's rows of the gradient.
            let gq = grad_ptr.get().wrapping_add(image * t * three_d + head * hd);
            let (gk, gv) = (gq.wrapping_add(d), gq.wrapping_add(2 * d));
            gscores.resize(rows * t, 0.0);
            // SAFETY: q, k, v are `T x hd` matrices of row stride 3D inside `qkv_data`, `gout` a
            // `rows x hd` one of row stride D inside `gheads_data`, `a` and `gscores` hold rows x T
            // values, and the blocks of `grad` written belong to this task and lie inside its
            // capacity (checked shapes).
            unsafe {
                matmul(
                    (rows, t, hd),
                    (gscores.as_mut_ptr(), t),
                    false,
                    (gout.as_ptr(), d, 1),
                    (v.as_ptr(), 1, three_d),
                    false,
                );
                matmul(
                    (t, hd, rows),
                    (gv, three_d),
                    false,
                    (a.as_ptr(), 1, t),
                    (gout.as_ptr(), d, 1),
                    false,
                );
                crate::vectorized! {
                    for (g, a) in gscores.chunks_mut(t).zip(a.chunks(t)) {
                        softmax_backward_row(g, a, scale);
                    }
                }
                matmul(
                    (rows, hd, t),
                    (gq, three_d),
                    false,
                    (gscores.as_ptr(), t, 1),
                    (k.as_ptr(), three_d, 1),
                    false,
                );
                for row in rows..t {
                    std::ptr::write_bytes(gq.add(row * three_d), 0, hd);
                }
                matmul(
                    (t, hd, rows),
                    (gk, three_d),
                    false,
                    (gscores.as_ptr(), 1, t),
                    (q.as_ptr(), three_d, 1),
                    false,
                );
            }
        });
    // SAFETY: the tasks together wrote every element (all images, heads and q, k, v columns).
    unsafe { grad.set_len(nt * three_d) };
    Tensor::from_vec(grad, (nt, three_d), qkv.device())
}

/// The f32 values a contiguous CPU tensor's storage and layout cover.
fn cpu_f32<'a>(storage: &'a candle_core::Storage, layout: &Layout) -> Result<&'a [f32]> {
    let candle_core::Storage::Cpu(storage) = storage else {
        bail!("self_attention: a CPU tensor without CPU storage");
    };
    contiguous_f32(storage, layout)
}

/// [`self_attention`] from candle operations, for devices other than the CPU.
fn composed(
    qkv: &Tensor,
    (n, t, heads, rows): (usize, usize, usize, usize),
    scale: f32,
    keep_weights: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let [q, k, v] = split_heads(qkv, n, t, heads)?;
    let scores = batched_matmul(&q.narrow(2, 0, rows)?, &k.t()?)?;
    let weights = scaled_softmax_last_dim(&scores, scale)?;
    let out = batched_matmul(&weights, &v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((n * rows, qkv.dim(1)? / 3))?;
    Ok((out, keep_weights.then_some(weights)))
}

/// [`self_attention_backward`] from candle operations, for devices other than the CPU.
fn composed_backward(
    qkv: &Tensor,
    weights: &Tensor,
    gheads: &Tensor,
    scale: f32,
) -> Result<Tensor> {
    let (n, heads, rows, t) = weights.dims4()?;
    let [q, k, v] = split_heads(qkv, n, t, heads)?;
    let (q, hd) = (q.narrow(2, 0, rows)?, q.dim(3)?);
    let gout = gheads.reshape((n, rows, heads, hd))?.transpose(1, 2)?;
    let gweights = batched_matmul(&gout, &v.t()?)?;
    let gv = batched_matmul(&weights.t()?, &gout)?;
    let gscores = scaled_softmax_backward(weights, &gweights, scale)?;
    let mut gq = batched_matmul(&gscores, &k)?;
    let gk = batched_matmul(&gscores.t()?, &q)?;
    if rows < t {
        let rest = Tensor::zeros((n, heads, t - rows, hd), gq.dtype(), gq.device())?;
        gq = Tensor::cat(&[&gq, &rest], 2)?;
    }
    Tensor::stack(&[gq, gk, gv], 0)?
        .permute((1, 3, 0, 2, 4))?
        .contiguous()?
        .reshape(qkv.shape())
}

/// Per-head views `[N, heads, T, head dim]` of q, k and v in the packed projection `qkv`.
fn split_heads(qkv: &Tensor, n: usize, t: usize, heads: usize) -> Result<[Tensor; 3]> {
    let hd = qkv.dim(1)? / (3 * heads);
    let parts = qkv
        .reshape((n, t, 3, heads, hd))?
        .permute((2, 0, 3, 1, 4))?;
    Ok([parts.get(0)?, parts.get(1)?, parts.get(2)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::max_abs_diff;
    use candle_core::{Device, Var};

    #[test]
    fn fused_attention_matches_the_composed_one() -> Result<()> {
        // 3 images, 4 heads of 8 dims, 11 tokens; all query rows and the class token's alone.
        let qkv = Tensor::randn(0f32, 1.0, (3 * 11, 3 * 32), &Device::Cpu)?;
        for rows in [11, 1] {
            let (out, weights) = self_attention(&qkv, 3, 4, rows, true)?;
            let (want_out, want_weights) = composed(&qkv, (3, 11, 4, rows), 8f32.powf(-0.5), true)?;
            assert!(max_abs_diff(&out, &want_out)? < 1e-5);
            assert!(max_abs_diff(&weights.unwrap(), &want_weights.unwrap())? < 1e-6);
            let (unkept, none) = self_attention(&qkv, 3, 4, rows, false)?;
            assert!(none.is_none());
            assert_eq!(max_abs_diff(&unkept, &out)?, 0.0);
        }
        assert!(self_attention(&qkv, 3, 5, 11, false).is_err());
        Ok(())
    }

    #[test]
    fn fused_backward_matches_the_composed_one_and_finite_differences() -> Result<()> {
        let qkv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2 * 9, 3 * 12), &Device::Cpu)?)?;
        for rows in [9, 1] {
            let (_, weights) = self_attention(qkv.as_tensor(), 2, 3, rows, true)?;
            let weights = weights.unwrap();
            let gheads = Tensor::randn(0f32, 1.0, (2 * rows, 12), &Device::Cpu)?;
            let fused = self_attention_backward(qkv.as_tensor(), &weights, &gheads)?;
            let composed = composed_backward(qkv.as_tensor(), &weights, &gheads, 0.5)?;
            assert!(max_abs_diff(&fused, &composed)? < 1e-5);
        }
        // The composed backward against candle's own gradient of the composed forward.
        let scale = 4f32.powf(-0.5);
        let (out, weights) = composed(qkv.as_tensor(), (2, 9, 3, 9), scale, true)?;
        let r = Tensor::randn(0f32, 1.0, out.shape(), &Device::Cpu)?;
        let grads = (&out * &r)?.sum_all()?.backward()?;
        let want = grads.get(qkv.as_tensor()).unwrap();
        let got = self_attention_backward(qkv.as_tensor(), &weights.unwrap().detach(), &r)?;
        assert!(max_abs_diff(&got, want)? < 1e-5);
        Ok(())
    }
}
