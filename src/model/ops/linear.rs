//! `nn.Linear` on rows with its bias, and optionally a residual, added by the matrix product
//! itself: the output starts as the bias rows (plus the residual) and the product accumulates
//! into it. candle's matmul writes a zero-filled buffer that a bias pass and an addition then
//! read and write again.

use super::channel_affine::bias_rows;
use super::{contiguous_f32, matmul};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// `x @ weight^T + bias (+ residual)` for rows `x` `[M, K]` (any strides), a weight `[N, K]` (any
/// strides), `bias` `[N]` and a `residual` `[M, N]`.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let y = x.matmul(&weight.t()?)?.broadcast_add(bias)?;
        return match residual {
            Some(r) => y + r,
            None => Ok(y),
        };
    }
    let op = Linear {
        bias: bias.flatten_all()?.to_vec1()?,
    };
    match residual {
        None => x.apply_op2_no_bwd(weight, &op),
        Some(r) => x.apply_op3_no_bwd(weight, &r.contiguous()?, &op),
    }
}

/// `a @ b` for rank-2 `a` `[M, K]` and `b` `[K, N]` of any strides (a transposed view costs no
/// copy), the output's tiles spread over rayon's threads; without a backward, for the
/// hand-written backward passes.
pub fn product(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !a.device().is_cpu() {
        return a.matmul(b);
    }
    a.apply_op2_no_bwd(b, &Product)
}

/// The operation of [`product`].
struct Product;

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (&[m, _], &[_, n]) = (l1.dims(), l2.dims()) else {
            bail!(
                "matmul takes rank-2 tensors, got {:?} and {:?}",
                l1.dims(),
                l2.dims()
            );
        };
        let mut dst = Vec::with_capacity(m * n);
        // SAFETY: `dst` has room for the m x n product, which (not accumulating) writes every
        // element before the length covers them.
        unsafe {
            product_into((dst.as_mut_ptr(), m * n), false, (s1, l1), (s2, l2), true)?;
            dst.set_len(m * n);
        }
        Ok((CpuStorage::F32(dst), Shape::from((m, n))))
    }
}

/// `dst = x @ w^T` (`dst += x @ w^T` when `accumulate`) for rows `x` `[M, K]` and a weight `w`
/// `[N, K]` (`x @ w` for `w` `[K, N]` when `w_is_k_by_n`), any strides, into the `[M, N]` rows
/// at `dst`, given with their length.
///
/// # Safety
/// `dst` must be valid for writes of its length in values, and initialised when `accumulate`.
unsafe fn product_into(
    (dst, dst_len): (*mut f32, usize),
    accumulate: bool,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    w_is_k_by_n: bool,
) -> Result<()> {
    let (x, w) = (s1.as_slice::<f32>()?, s2.as_slice::<f32>()?);
    let (&[m, k], &[wr, wc], &[xr, xc], &[wrs, wcs]) =
        (l1.dims(), l2.dims(), l1.stride(), l2.stride())
    else {
        bail!(
            "a product of rank-2 tensors, got {:?} and {:?}",
            l1.dims(),
            l2.dims()
        );
    };
    // The weight as a K x N matrix: its (row, column) strides.
    let (k2, n, rhs_strides) = if w_is_k_by_n {
        (wr, wc, (wrs, wcs))
    } else {
        (wc, wr, (wcs, wrs))
    };
    if k != k2 || dst_len != m * n {
        bail!("a product of shapes {:?} and {:?}", l1.dims(), l2.dims());
    }
    let reach = |l: &Layout, (r, c): (usize, usize), (sr, sc)| {
        l.start_offset() + (r.max(1) - 1) * sr + (c.max(1) - 1) * sc
    };
    if reach(l1, (m, k), (xr, xc)) >= x.len() || reach(l2, (wr, wc), (wrs, wcs)) >= w.len() {
        bail!("a product's layout outside its storage");
    }
    // SAFETY: the strides keep every element read inside `x` and `w` (checked above), and
    // `dst` holds exactly m x n row-major values (the caller's word).
    unsafe {
        matmul(
            (m, n, k),
            (dst, n),
            accumulate,
            (x[l1.start_offset()..].as_ptr(), xr, xc),
            (
                w[l2.start_offset()..].as_ptr(),
                rhs_strides.0,
                rhs_strides.1,
            ),
            true,
        )
    }
    Ok(())
}

struct Linear {
    bias: Vec<f32>,
}

impl Linear {
    /// `dst += x @ w^T` for the `[M, N]` rows `dst`.
    fn accumulate(
        &self,
        dst: &mut [f32],
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        if l2.dims().first() != Some(&self.bias.len()) {
            bail!(
                "linear: a weight {:?} for {} outputs",
                l2.dims(),
                self.bias.len()
            );
        }
        // SAFETY: `dst` is an initialised slice of its length.
        unsafe {
            product_into(
                (dst.as_mut_ptr(), dst.len()),
                true,
                (s1, l1),
                (s2, l2),
                false,
            )
        }
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, n) = (l1.dims()[0], self.bias.len());
        let mut dst = vec![0f32; m * n];
        bias_rows(&mut dst, None, &self.bias);
        self.accumulate(&mut dst, s1, l1, s2, l2)?;
        Ok((CpuStorage::F32(dst), Shape::from((m, n))))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let residual = contiguous_f32(s3, l3)?;
        let mut dst = vec![0f32; residual.len()];
        bias_rows(&mut dst, Some(residual), &self.bias);
        self.accumulate(&mut dst, s1, l1, s2, l2)?;
        Ok((CpuStorage::F32(dst), l3.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::max_abs_diff;
    use candle_core::Device;

    #[test]
    fn matches_candle_with_and_without_a_residual() -> Result<()> {
        let dev = Device::Cpu;
        // More rows than one fill task holds; the weight as a transposed view too.
        let x = Tensor::randn(0f32, 1.0, (150, 12), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (7, 12), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 7, &dev)?;
        let r = Tensor::randn(0f32, 1.0, (150, 7), &dev)?;
        let want = x.matmul(&w.t()?)?.broadcast_add(&b)?;
        assert!(max_abs_diff(&linear(&x, &w, &b, None)?, &want)? < 1e-5);
        assert!(max_abs_diff(&linear(&x, &w, &b, Some(&r))?, &(&want + &r)?)? < 1e-5);
        let wt = w.t()?.contiguous()?.t()?;
        assert!(max_abs_diff(&linear(&x, &wt, &b, None)?, &want)? < 1e-5);
        let xt = x.t()?.contiguous()?.t()?;
        assert!(max_abs_diff(&linear(&xt, &w, &b, None)?, &want)? < 1e-5);
        Ok(())
    }
}
