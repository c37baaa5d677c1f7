//! Max-pooling on NCHW tensors with overlapping windows (kernel > stride), with a backward that
//! candle's own max-pool lacks for that case.

use super::contiguous_f32;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Window geometry: square kernel, stride, symmetric padding (padded cells never win).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl PoolGeometry {
    fn out(&self, n: usize) -> usize {
        (n + 2 * self.pad - self.kernel) / self.stride + 1
    }

    /// Index within the plane of the largest input in output cell (oy, ox); the first on ties.
    fn argmax(&self, plane: &[f32], h: usize, w: usize, oy: usize, ox: usize) -> usize {
        let mut best = (f32::NEG_INFINITY, usize::MAX);
        for ky in 0..self.kernel {
            let Some(iy) = (oy * self.stride + ky)
                .checked_sub(self.pad)
                .filter(|&i| i < h)
            else {
                continue;
            };
            for kx in 0..self.kernel {
                let Some(ix) = (ox * self.stride + kx)
                    .checked_sub(self.pad)
                    .filter(|&i| i < w)
                else {
                    continue;
                };
                let v = plane[iy * w + ix];
                if v > best.0 || best.1 == usize::MAX {
                    best = (v, iy * w + ix);
                }
            }
        }
        best.1
    }
}

/// Max-pool of `x` `[N, C, H, W]`.
pub fn max_pool2d(x: &Tensor, geo: PoolGeometry) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return super::portable::max_pool2d(x, geo);
    }
    x.contiguous()?.apply_op1(MaxPool { geo })
}

struct MaxPool {
    geo: PoolGeometry,
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let (n, c, h, w) = l.shape().dims4()?;
        let (oh, ow) = (self.geo.out(h), self.geo.out(w));
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(p, o)| {
            let plane = &x[p * h * w..][..h * w];
            for oy in 0..oh {
                for ox in 0..ow {
                    o[oy * ow + ox] = plane[self.geo.argmax(plane, h, w, oy, ox)];
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(
            &grad.contiguous()?,
            &MaxPoolGrad { geo: self.geo },
        )?))
    }
}

/// (input, grad of output) to grad of input: each output's gradient goes to its window's max.
struct MaxPoolGrad {
    geo: PoolGeometry,
}

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1)?;
        let g = contiguous_f32(s2, l2)?;
        let (n, c, h, w) = l1.shape().dims4()?;
        let (_, _, oh, ow) = l2.shape().dims4()?;
        let mut gx = vec![0f32; n * c * h * w];
        gx.par_chunks_mut(h * w).enumerate().for_each(|(p, out)| {
            let plane = &x[p * h * w..][..h * w];
            let gp = &g[p * oh * ow..][..oh * ow];
            for oy in 0..oh {
                for ox in 0..ow {
                    out[self.geo.argmax(plane, h, w, oy, ox)] += gp[oy * ow + ox];
                }
            }
        });
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::check_gradients;
    use candle_core::{Device, Var};

    const RESNET: PoolGeometry = PoolGeometry {
        kernel: 3,
        stride: 2,
        pad: 1,
    };

    #[test]
    fn forward_picks_window_maxima() -> Result<()> {
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu)?.reshape((1, 1, 4, 4))?;
        let y = max_pool2d(&x, RESNET)?;
        assert_eq!(
            y.flatten_all()?.to_vec1::<f32>()?,
            vec![5.0, 7.0, 13.0, 15.0]
        );
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        // Distinct values spaced wider than the probe step, so no window's maximum changes.
        let v: Vec<f32> = (0..2 * 3 * 7 * 6)
            .map(|i| ((i * 53) % 252) as f32 * 0.1)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(v, (2, 3, 7, 6), &Device::Cpu)?)?;
        check_gradients(&[&x], |t| max_pool2d(t[0], RESNET))
    }
}
