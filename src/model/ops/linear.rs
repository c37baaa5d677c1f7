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
        let (x, w) = (s1.as_slice::<f32>()?, s2.as_slice::<f32>()?);
        let (&[m, k], &[n, k2], &[xr, xc], &[wr, wc]) =
            (l1.dims(), l2.dims(), l1.stride(), l2.stride())
        else {
            bail!("linear takes rank-2 x and weight");
        };
        if k != k2 || n != self.bias.len() || dst.len() != m * n {
            bail!("linear: shapes {:?} and {:?}", l1.dims(), l2.dims());
        }
        let reach = |l: &Layout, (r, c): (usize, usize), (sr, sc)| {
            l.start_offset() + (r.max(1) - 1) * sr + (c.max(1) - 1) * sc
        };
        if reach(l1, (m, k), (xr, xc)) >= x.len() || reach(l2, (n, k), (wr, wc)) >= w.len() {
            bail!("linear: a layout outside its storage");
        }
        // SAFETY: the strides keep every element read inside `x` and `w` (checked above), and
        // `dst` holds exactly m x n row-major values.
        unsafe {
            matmul(
                (m, n, k),
                (dst.as_mut_ptr(), n),
                true,
                (x[l1.start_offset()..].as_ptr(), xr, xc),
                (w[l2.start_offset()..].as_ptr(), wc, wr),
                true,
            )
        }
        Ok(())
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
