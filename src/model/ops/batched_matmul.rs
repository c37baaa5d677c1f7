//! Batched matrix products of many small matrices (a ViT's per-head attention products,
//! `[N * heads, T, d]`). candle multiplies the batches one after another, each product split over
//! rayon's threads: for 197x64 matrices the threads spend more time waking and yielding than
//! multiplying. Here the batches are spread over the threads and each product runs on one. Two
//! batch dimensions with their own strides are taken too, so that per-head views of a packed
//! `[N, T, 3, heads, d]` projection multiply without a copy.

use super::matmul;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `a @ b` for `a` `[B, M, K]` and `b` `[B, K, N]` (or `[B0, B1, M, K]` and `[B0, B1, K, N]`), any
/// strides (a transposed or per-head view costs no copy).
pub fn batched_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !a.device().is_cpu() {
        return a.matmul(b);
    }
    a.apply_op2(b, BatchedMatMul)
}

struct BatchedMatMul;

/// A rank-3 or rank-4 operand: its slice from the layout's start, its two batch strides (the
/// inner one unused for rank 3), its row and column strides, and the inner batch count.
struct Operand<'a> {
    data: &'a [f32],
    strides: [usize; 4],
    inner_batches: usize,
}

impl<'a> Operand<'a> {
    fn new(storage: &'a CpuStorage, layout: &Layout) -> Result<Self> {
        let data = &storage.as_slice::<f32>()?[layout.start_offset()..];
        let (strides, inner_batches) = match (layout.stride(), layout.dims()) {
            (&[sb, sr, sc], _) => ([sb, 0, sr, sc], 1),
            (&[so, si, sr, sc], &[_, inner, _, _]) => ([so, si, sr, sc], inner),
            _ => bail!(
                "batched_matmul takes rank-3 or rank-4 tensors, got {:?}",
                layout.dims()
            ),
        };
        let last = layout
            .dims()
            .iter()
            .zip(layout.stride())
            .map(|(&d, s)| d.saturating_sub(1) * s)
            .sum::<usize>();
        if layout.dims().contains(&0) || last >= data.len() {
            bail!("batched_matmul: layout {layout:?} outside its storage");
        }
        Ok(Self {
            data,
            strides,
            inner_batches,
        })
    }

    /// Pointer to batch `i`'s first element (batches in row-major order of the batch dims).
    fn batch(&self, i: usize) -> *const f32 {
        let (outer, inner) = (i / self.inner_batches, i % self.inner_batches);
        self.data[outer * self.strides[0] + inner * self.strides[1]..].as_ptr()
    }
}

impl CustomOp2 for BatchedMatMul {
    fn name(&self) -> &'static str {
        "batched-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (d1, d2) = (l1.dims(), l2.dims());
        let r = d1.len();
        if r < 3 || d2.len() != r || d1[..r - 2] != d2[..r - 2] || d1[r - 1] != d2[r - 2] {
            bail!("batched_matmul: shapes {d1:?} and {d2:?}");
        }
        let batch: usize = d1[..r - 2].iter().product();
        let (m, k, n) = (d1[r - 2], d1[r - 1], d2[r - 1]);
        let (a, b) = (Operand::new(s1, l1)?, Operand::new(s2, l2)?);
        let mut dst = vec![0f32; batch * m * n];
        dst.par_chunks_mut(m * n).enumerate().for_each(|(i, d)| {
            // SAFETY: `Operand::new` checked that every element the strides reach lies inside
            // the slices, and `d` holds exactly one m x n row-major product.
            unsafe {
                matmul(
                    (m, n, k),
                    (d.as_mut_ptr(), n),
                    false,
                    (a.batch(i), a.strides[2], a.strides[3]),
                    (b.batch(i), b.strides[2], b.strides[3]),
                    false,
                )
            }
        });
        let mut shape = d1[..r - 2].to_vec();
        shape.extend([m, n]);
        Ok((CpuStorage::F32(dst), Shape::from(shape)))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let ga = batched_matmul(grad, &b.t()?)?;
        let gb = batched_matmul(&a.t()?, grad)?;
        Ok((Some(ga), Some(gb)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{check_gradients, max_abs_diff};
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_on_strided_views_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 7, 3), &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 4, 3), &dev)?)?;
        let (at, bt) = (a.as_tensor(), b.as_tensor());
        // b transposed as a view, as attention's `q @ k^T` passes it.
        let ours = batched_matmul(at, &bt.transpose(1, 2)?)?;
        let want = at.matmul(&bt.transpose(1, 2)?.contiguous()?)?;
        assert_eq!(ours.dims(), &[5, 7, 4]);
        assert!(max_abs_diff(&ours, &want)? < 1e-5);
        check_gradients(&[&a, &b], |t| batched_matmul(t[0], &t[1].transpose(1, 2)?))
    }

    #[test]
    fn per_head_views_of_a_packed_projection_match_candle() -> Result<()> {
        let dev = Device::Cpu;
        let (n, t, heads, d) = (2, 5, 3, 4);
        let qkv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n * t, 3 * heads * d), &dev)?)?;
        let part = |qkv: &Tensor, i: usize| -> Result<Tensor> {
            qkv.reshape((n, t, 3, heads, d))?
                .permute((2, 0, 3, 1, 4))?
                .get(i)
        };
        let scores = |t: &[&Tensor]| batched_matmul(&part(t[0], 0)?, &part(t[0], 1)?.t()?);
        let (q, k) = (part(qkv.as_tensor(), 0)?, part(qkv.as_tensor(), 1)?);
        let want = q.contiguous()?.matmul(&k.t()?.contiguous()?)?;
        let ours = scores(&[qkv.as_tensor()])?;
        assert_eq!(ours.dims(), &[n, heads, t, t]);
        assert!(max_abs_diff(&ours, &want)? < 1e-5);
        check_gradients(&[&qkv], scores)
    }

    #[test]
    fn refuses_mismatched_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &dev)?;
        let b = Tensor::zeros((2, 5, 6), candle_core::DType::F32, &dev)?;
        assert!(batched_matmul(&a, &b).is_err());
        Ok(())
    }
}
