//! Max-pooling with overlapping windows (kernel > stride): on NCHW tensors, with a backward that
//! candle's own max-pool lacks for that case, and on channels-last slices for the backbones that
//! run without a candle graph.

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

    /// Calls `f(iy, ix)` for each input cell of output cell (oy, ox)'s window inside the input,
    /// rows first.
    #[inline(always)]
    fn window(&self, h: usize, w: usize, oy: usize, ox: usize, mut f: impl FnMut(usize, usize)) {
        for ky in 0..self.kernel {
            let Some(iy) = (oy * self.stride + ky)
                .checked_sub(self.pad)
                .filter(|&i| i < h)
            else {
                continue;
            };
            for kx in 0..self.kernel {
                if let Some(ix) = (ox * self.stride + kx)
                    .checked_sub(self.pad)
                    .filter(|&i| i < w)
                {
                    f(iy, ix);
                }
            }
        }
    }

    /// Index within the plane of the largest input in output cell (oy, ox); the first on ties.
    fn argmax(&self, plane: &[f32], h: usize, w: usize, oy: usize, ox: usize) -> usize {
        let mut best = (f32::NEG_INFINITY, usize::MAX);
        self.window(h, w, oy, ox, |iy, ix| {
            let v = plane[iy * w + ix];
            if v > best.0 || best.1 == usize::MAX {
                best = (v, iy * w + ix);
            }
        });
        best.1
    }
}

/// Max-pool of the channels-last batch `x` of `dims` `[N, H, W, C]`, and the pooled dims.
pub fn max_pool_nhwc(x: &[f32], dims: [usize; 4], geo: PoolGeometry) -> (Vec<f32>, [usize; 4]) {
    let [n, h, w, c] = dims;
    let (oh, ow) = (geo.out(h), geo.out(w));
    let mut out = vec![f32::NEG_INFINITY; n * oh * ow * c];
    out.par_chunks_mut(ow * c).enumerate().for_each(|(row, o)| {
        crate::vectorized! {
            let (b, oy) = (row / oh, row % oh);
            for (ox, o) in o.chunks_exact_mut(c).enumerate() {
                geo.window(h, w, oy, ox, #[inline(always)] |iy, ix| {
                    let cell = &x[((b * h + iy) * w + ix) * c..][..c];
                    o.iter_mut().zip(cell).for_each(|(o, &v)| *o = o.max(v));
                });
            }
        }
    });
    (out, [n, oh, ow, c])
}

/// The gradient of [`max_pool_nhwc`]'s input `x` from `g`, its output's: each output's gradient
/// goes to its window's maximum (the first on ties, as [`max_pool2d`]'s backward).
pub fn max_pool_nhwc_backward(
    x: &[f32],
    dims: [usize; 4],
    geo: PoolGeometry,
    g: &[f32],
) -> Vec<f32> {
    let [_, h, w, c] = dims;
    let (oh, ow) = (geo.out(h), geo.out(w));
    let mut gx = vec![0f32; x.len()];
    gx.par_chunks_mut(h * w * c)
        .enumerate()
        .for_each(|(b, gx)| {
            crate::vectorized! {
                let image = &x[b * h * w * c..][..h * w * c];
                let mut best = vec![(f32::NEG_INFINITY, usize::MAX); c];
                for oy in 0..oh {
                    for ox in 0..ow {
                        best.fill((f32::NEG_INFINITY, usize::MAX));
                        geo.window(h, w, oy, ox, #[inline(always)] |iy, ix| {
                            let at = (iy * w + ix) * c;
                            for (ch, best) in best.iter_mut().enumerate() {
                                let v = image[at + ch];
                                if v > best.0 || best.1 == usize::MAX {
                                    *best = (v, at + ch);
                                }
                            }
                        });
                        let go = &g[((b * oh + oy) * ow + ox) * c..][..c];
                        for (&(_, at), &gv) in best.iter().zip(go) {
                            gx[at] += gv;
                        }
                    }
                }
            }
        });
    gx
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
    use crate::model::ops::testing::{check_gradients, check_slice_gradient};
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

    #[test]
    fn channels_last_matches_nchw_and_finite_differences() -> Result<()> {
        let dims = [2, 7, 6, 3];
        let x: Vec<f32> = (0..2 * 7 * 6 * 3)
            .map(|i| ((i * 53) % 252) as f32 * 0.1)
            .collect();
        let nhwc = Tensor::from_vec(x.clone(), (2, 7, 6, 3), &Device::Cpu)?;
        let want = max_pool2d(&nhwc.permute((0, 3, 1, 2))?, RESNET)?
            .permute((0, 2, 3, 1))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (y, pooled) = max_pool_nhwc(&x, dims, RESNET);
        assert_eq!((y, pooled), (want, [2, 4, 3, 3]));
        let r: Vec<f32> = (0..2 * 4 * 3 * 3).map(|i| (i % 7) as f32 - 3.0).collect();
        let gx = max_pool_nhwc_backward(&x, dims, RESNET, &r);
        check_slice_gradient(&x, &r, |x| max_pool_nhwc(x, dims, RESNET).0, &gx);
        Ok(())
    }
}
