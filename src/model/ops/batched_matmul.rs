//! Batched matrix products of many small matrices (a ViT's per-head attention products,
//! `[N * heads, T, d]`). candle multiplies the batches one after another, each product split over
//! rayon's threads: for 197x64 matrices the threads spend more time waking and yielding than
//! multiplying. Here the batches are spread over the threads and each product runs on one.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `a @ b` for `a` `[B, M, K]` and `b` `[B, K, N]`, any strides (a transposed view costs no
/// copy).
pub fn batched_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !a.device().is_cpu() {
        return a.matmul(b);
    }
    a.apply_op2(b, BatchedMatMul)
}

struct BatchedMatMul;

/// A rank-3 operand: its slice from the layout's start, and its batch, row and column strides.
struct Operand<'a> {
    data: &'a [f32],
    strides: [usize; 3],
}

impl<'a> Operand<'a> {
    fn new(storage: &'a CpuStorage, layout: &Layout) -> Result<Self> {
        let data = &storage.as_slice::<f32>()?[layout.start_offset()..];
        let &[sb, sr, sc] = layout.stride() else {
            bail!(
                "batched_matmul takes rank-3 tensors, got {:?}",
                layout.dims()
            );
        };
        let last = layout
            .dims()
            .iter()
            .zip([sb, sr, sc])
            .map(|(&d, s)| d.saturating_sub(1) * s)
            .sum::<usize>();
        if layout.dims().contains(&0) || last >= data.len() {
            bail!("batched_matmul: layout {layout:?} outside its storage");
        }
        Ok(Self {
            data,
            strides: [sb, sr, sc],
        })
    }

    /// Pointer to batch `i`'s first element.
    fn batch(&self, i: usize) -> *const f32 {
        self.data[i * self.strides[0]..].as_ptr()
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
        let (&[batch, m, k], &[batch2, k2, n]) = (l1.dims(), l2.dims()) else {
            bail!("batched_matmul takes rank-3 tensors");
        };
        if batch != batch2 || k != k2 {
            bail!("batched_matmul: shapes {:?} and {:?}", l1.dims(), l2.dims());
        }
        let (a, b) = (Operand::new(s1, l1)?, Operand::new(s2, l2)?);
        let mut dst = vec![0f32; batch * m * n];
        dst.par_chunks_mut(m * n).enumerate().for_each(|(i, d)| {
            // SAFETY: `Operand::new` checked that every element the strides reach lies inside
            // the slices, and `d` holds exactly one m x n row-major product.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    d.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.batch(i),
                    a.strides[2] as isize,
                    a.strides[1] as isize,
                    b.batch(i),
                    b.strides[2] as isize,
                    b.strides[1] as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
        });
        Ok((CpuStorage::F32(dst), Shape::from((batch, m, n))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let ga = batched_matmul(grad, &b.transpose(1, 2)?)?;
        let gb = batched_matmul(&a.transpose(1, 2)?, grad)?;
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
    fn refuses_mismatched_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &dev)?;
        let b = Tensor::zeros((2, 5, 6), candle_core::DType::F32, &dev)?;
        assert!(batched_matmul(&a, &b).is_err());
        Ok(())
    }
}
