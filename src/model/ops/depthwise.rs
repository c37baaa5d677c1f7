//! Depthwise 2-D convolution on channels-last (NHWC) tensors, with its own backward.
//!
//! candle 0.11 runs a grouped convolution as one convolution per channel and its backward pads
//! and concatenates full-size tensors; this op loops over output rows with the channel as the
//! innermost, vectorisable dimension.

use super::{contiguous_f32, sum_in_order};
use crate::model::layers::same_padding;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Geometry of one depthwise convolution: kernel, stride and the zero padding before each axis
/// (padding after is whatever the output size implies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DwGeometry {
    pub kernel: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl DwGeometry {
    /// TensorFlow "SAME" padding: output `ceil(size / stride)`, the odd pixel padded after.
    pub fn same(h: usize, w: usize, kernel: usize, stride: usize) -> Self {
        let (pad_top, _) = same_padding(h, kernel, stride);
        let (pad_left, _) = same_padding(w, kernel, stride);
        Self {
            kernel,
            stride,
            pad_top,
            pad_left,
            out_h: h.div_ceil(stride),
            out_w: w.div_ceil(stride),
        }
    }

    /// Symmetric padding of `pad` pixels (PyTorch's convention).
    pub fn symmetric(h: usize, w: usize, kernel: usize, stride: usize, pad: usize) -> Self {
        Self {
            kernel,
            stride,
            pad_top: pad,
            pad_left: pad,
            out_h: (h + 2 * pad - kernel) / stride + 1,
            out_w: (w + 2 * pad - kernel) / stride + 1,
        }
    }

    /// Input position of output `o` at kernel tap `k`, when it falls inside `0..n`.
    #[inline]
    fn input_at(&self, o: usize, k: usize, pad: usize, n: usize) -> Option<usize> {
        (o * self.stride + k).checked_sub(pad).filter(|&i| i < n)
    }

    /// Output position that reads input `i` at kernel tap `k`, when there is one.
    #[inline]
    fn output_at(&self, i: usize, k: usize, pad: usize, n_out: usize) -> Option<usize> {
        let t = (i + pad).checked_sub(k)?;
        (t % self.stride == 0 && t / self.stride < n_out).then_some(t / self.stride)
    }
}

/// Depthwise convolution of `x` `[N, H, W, C]` with `weight` `[K, K, C]`: `[N, OH, OW, C]`.
pub fn depthwise_conv2d(x: &Tensor, weight: &Tensor, geo: DwGeometry) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return super::portable::depthwise_conv2d(x, weight, geo);
    }
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, DepthwiseConv { geo })
}

/// Depthwise convolution of the map `x` `[N, H, W, C]` (`dims`) with the kernel `w` `[K, K, C]`
/// and an optional `bias` `[C]`, written over `out` `[N, OH, OW, C]`.
pub(crate) fn forward_into(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    (n, h, wd, c): (usize, usize, usize, usize),
    g: DwGeometry,
    out: &mut [f32],
) {
    let k = g.kernel;
    out[..n * g.out_h * g.out_w * c]
        .par_chunks_mut(g.out_w * c)
        .enumerate()
        .for_each(|(row, out_row)| {
            crate::vectorized! {
                let (b, oy) = (row / g.out_h, row % g.out_h);
                match bias {
                    Some(bias) => out_row.chunks_mut(c).for_each(|o| o.copy_from_slice(bias)),
                    None => out_row.fill(0.0),
                }
                for ky in 0..k {
                    let Some(iy) = g.input_at(oy, ky, g.pad_top, h) else {
                        continue;
                    };
                    let x_row = &x[(b * h + iy) * wd * c..][..wd * c];
                    for kx in 0..k {
                        let taps = &w[(ky * k + kx) * c..][..c];
                        for ox in 0..g.out_w {
                            let Some(ix) = g.input_at(ox, kx, g.pad_left, wd) else {
                                continue;
                            };
                            let o = &mut out_row[ox * c..][..c];
                            let i = &x_row[ix * c..][..c];
                            for ((o, i), t) in o.iter_mut().zip(i).zip(taps) {
                                *o += i * t;
                            }
                        }
                    }
                }
            }
        });
}

struct DepthwiseConv {
    geo: DwGeometry,
}

impl CustomOp2 for DepthwiseConv {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-nhwc"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1)?;
        let w = contiguous_f32(s2, l2)?;
        let (n, h, wd, c) = l1.shape().dims4()?;
        let g = self.geo;
        let mut out = vec![0f32; n * g.out_h * g.out_w * c];
        forward_into(x, w, None, (n, h, wd, c), g, &mut out);
        Ok((CpuStorage::F32(out), Shape::from((n, g.out_h, g.out_w, c))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gx = if x.track_op() {
            Some(grad_input(grad, w, self.geo, x.dim(1)?, x.dim(2)?)?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(grad_weight(x, grad, self.geo)?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// Gradient of the input `[N, in_h, in_w, C]` from the output's gradient and the weight.
pub fn grad_input(
    grad: &Tensor,
    w: &Tensor,
    geo: DwGeometry,
    in_h: usize,
    in_w: usize,
) -> Result<Tensor> {
    grad.contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &DepthwiseGradInput { geo, in_h, in_w })
}

/// Gradient of the weight `[K, K, C]` from the input and the output's gradient.
pub fn grad_weight(x: &Tensor, grad: &Tensor, geo: DwGeometry) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&grad.contiguous()?, &DepthwiseGradWeight { geo })
}

/// Gradient with respect to the input: (grad `[N, OH, OW, C]`, weight) to `[N, H, W, C]`.
struct DepthwiseGradInput {
    geo: DwGeometry,
    in_h: usize,
    in_w: usize,
}

impl CustomOp2 for DepthwiseGradInput {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let gy = contiguous_f32(s1, l1)?;
        let w = contiguous_f32(s2, l2)?;
        let (n, _, _, c) = l1.shape().dims4()?;
        let (h, wd) = (self.in_h, self.in_w);
        let mut gx = vec![0f32; n * h * wd * c];
        grad_input_add(gy, w, (n, h, wd, c), self.geo, &mut gx);
        Ok((CpuStorage::F32(gx), Shape::from((n, h, wd, c))))
    }
}

/// Adds the gradient of the input `[N, H, W, C]` (`in_dims`) to `gx`, from the output's
/// gradient `gy` `[N, OH, OW, C]` and the kernel `w` `[K, K, C]`.
pub(crate) fn grad_input_add(
    gy: &[f32],
    w: &[f32],
    (n, h, wd, c): (usize, usize, usize, usize),
    g: DwGeometry,
    gx: &mut [f32],
) {
    let (oh, ow, k) = (g.out_h, g.out_w, g.kernel);
    gx[..n * h * wd * c]
        .par_chunks_mut(wd * c)
        .enumerate()
        .for_each(|(row, gx_row)| {
            crate::vectorized! {
                let (b, iy) = (row / h, row % h);
                for ky in 0..k {
                    let Some(oy) = g.output_at(iy, ky, g.pad_top, oh) else {
                        continue;
                    };
                    let gy_row = &gy[(b * oh + oy) * ow * c..][..ow * c];
                    for kx in 0..k {
                        let taps = &w[(ky * k + kx) * c..][..c];
                        for ix in 0..wd {
                            let Some(ox) = g.output_at(ix, kx, g.pad_left, ow) else {
                                continue;
                            };
                            let o = &mut gx_row[ix * c..][..c];
                            let i = &gy_row[ox * c..][..c];
                            for ((o, i), t) in o.iter_mut().zip(i).zip(taps) {
                                *o += i * t;
                            }
                        }
                    }
                }
            }
        });
}

/// The gradient of the kernel `[K, K, C]` from the input `x` `[N, H, W, C]` (`dims`) and the
/// output's gradient `gy` `[N, OH, OW, C]`, summed over rows in parallel.
pub(crate) fn grad_weight_of(
    x: &[f32],
    gy: &[f32],
    (n, h, wd, c): (usize, usize, usize, usize),
    g: DwGeometry,
) -> Vec<f32> {
    let (oh, ow, k) = (g.out_h, g.out_w, g.kernel);
    // Partial sums over fixed blocks of rows, added in order: the result does not depend on
    // how rayon schedules the blocks.
    let rows_per_block = 16;
    let partials: Vec<Vec<f32>> = (0..n * oh)
        .collect::<Vec<_>>()
        .par_chunks(rows_per_block)
        .map(|rows| {
            crate::vectorized! {
                let mut acc = vec![0f32; k * k * c];
                for &row in rows {
                    let (b, oy) = (row / oh, row % oh);
                    let gy_row = &gy[(b * oh + oy) * ow * c..][..ow * c];
                    for ky in 0..k {
                        let Some(iy) = g.input_at(oy, ky, g.pad_top, h) else {
                            continue;
                        };
                        let x_row = &x[(b * h + iy) * wd * c..][..wd * c];
                        for kx in 0..k {
                            let a = &mut acc[(ky * k + kx) * c..][..c];
                            for ox in 0..ow {
                                let Some(ix) = g.input_at(ox, kx, g.pad_left, wd) else {
                                    continue;
                                };
                                let gi = &gy_row[ox * c..][..c];
                                let xi = &x_row[ix * c..][..c];
                                for ((a, gi), xi) in a.iter_mut().zip(gi).zip(xi) {
                                    *a += gi * xi;
                                }
                            }
                        }
                    }
                }
                acc
            }
        })
        .collect();
    sum_in_order(partials, k * k * c)
}

/// Gradient with respect to the weight: (input `[N, H, W, C]`, grad `[N, OH, OW, C]`) to
/// `[K, K, C]`.
struct DepthwiseGradWeight {
    geo: DwGeometry,
}

impl CustomOp2 for DepthwiseGradWeight {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1)?;
        let gy = contiguous_f32(s2, l2)?;
        let (n, h, wd, c) = l1.shape().dims4()?;
        let k = self.geo.kernel;
        let gw = grad_weight_of(x, gy, (n, h, wd, c), self.geo);
        Ok((CpuStorage::F32(gw), Shape::from((k, k, c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{check_gradients, max_abs_diff};
    use candle_core::{Device, Var};

    #[test]
    fn same_padding_follows_tensorflow() {
        let g = DwGeometry::same(224, 224, 3, 2);
        assert_eq!((g.out_h, g.pad_top), (112, 0));
        let g = DwGeometry::same(112, 112, 5, 2);
        assert_eq!((g.out_h, g.pad_top), (56, 1));
        let g = DwGeometry::same(7, 7, 3, 1);
        assert_eq!((g.out_h, g.pad_top), (7, 1));
    }

    /// candle's grouped convolution on NCHW is the reference for the forward pass.
    #[test]
    fn forward_matches_grouped_conv() -> Result<()> {
        let dev = Device::Cpu;
        for (k, s, pad) in [(3, 1, 1), (3, 2, 1), (5, 2, 2), (5, 1, 2)] {
            let x = Tensor::randn(0f32, 1.0, (2, 6, 9, 8), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (6, 1, k, k), &dev)?;
            let reference = x.conv2d(&w, pad, s, 1, 6)?;
            let geo = DwGeometry::symmetric(9, 8, k, s, pad);
            let ours = depthwise_conv2d(
                &x.permute((0, 2, 3, 1))?,
                &w.reshape((6, k * k))?.t()?.reshape((k, k, 6))?,
                geo,
            )?
            .permute((0, 3, 1, 2))?;
            assert!(max_abs_diff(&ours, &reference)? < 1e-4, "k{k} s{s}");
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        for (k, s) in [(3, 1), (3, 2), (5, 2)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 7, 6, 3), &dev)?)?;
            let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (k, k, 3), &dev)?)?;
            let geo = DwGeometry::same(7, 6, k, s);
            check_gradients(&[&x, &w], |v| depthwise_conv2d(v[0], v[1], geo))?;
        }
        Ok(())
    }
}
