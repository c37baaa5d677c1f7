//! Dense convolutions of channels-last maps with an inference-mode BatchNorm folded into the
//! weight, as matrix products over patches gathered one block of rows at a time (the whole patch
//! matrix is never built). The forward pass adds the BatchNorm shift, an optional residual and
//! ReLU into the product's output; the backward pass gives the input's gradient and the sums from
//! which the weight's and the BatchNorm's gradients follow. The 3x3 convolutions at stride 1 run
//! through Winograd's F(2x2, 3x3) instead ([`WinogradFilter`]), with the same epilogue and sums.

use super::channel_affine::column_sums;
use super::winograd::WinogradFilter;
use super::{image_groups, matmul_into, MatRef};
use rayon::prelude::*;
use std::ops::Range;

/// Floats of one gathered block of patches: blocks of this size stay in the caches.
#[cfg(not(test))]
const PATCH_BLOCK_FLOATS: usize = 1 << 20;
/// Small blocks in unit tests, so that their maps span several.
#[cfg(test)]
const PATCH_BLOCK_FLOATS: usize = 1 << 10;

/// A convolution applied to a channels-last batch `[n, h, w, ci]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub ci: usize,
    pub co: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvGeometry {
    /// Output height.
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.kernel) / self.stride + 1
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.kernel) / self.stride + 1
    }

    fn out_pixels(&self) -> usize {
        self.n * self.out_h() * self.out_w()
    }

    fn patch_len(&self) -> usize {
        self.kernel * self.kernel * self.ci
    }

    /// A 1x1 convolution at stride 1, whose patches are the input's rows themselves.
    fn is_pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.pad == 0
    }

    fn rows_per_block(&self) -> usize {
        (PATCH_BLOCK_FLOATS / self.patch_len()).max(16)
    }

    /// For output column `ox`: the first input column its window reads and the kernel columns
    /// `[lo, hi)` that fall inside the input.
    fn columns(&self, ox: usize) -> (isize, usize, usize) {
        let first = (ox * self.stride) as isize - self.pad as isize;
        let lo = (-first).max(0) as usize;
        let hi = (self.w as isize - first).clamp(0, self.kernel as isize) as usize;
        (first, lo, hi.max(lo))
    }

    /// Image, output row and output column of output pixel `p` (flat over the batch).
    fn position_of(&self, p: usize) -> (usize, usize, usize) {
        let (oh, ow) = (self.out_h(), self.out_w());
        (p / (oh * ow), p / ow % oh, p % ow)
    }
}

/// Copies the patches of output pixels `rows` of `x` into `out`, one row of
/// `kernel * kernel * ci` values per pixel in (ky, kx, ci) order; cells outside the input are 0.
fn gather_patches(x: &[f32], geo: &ConvGeometry, rows: Range<usize>, out: &mut [f32]) {
    let (k, ci) = (geo.kernel, geo.ci);
    for (p, dst) in rows.zip(out.chunks_exact_mut(k * k * ci)) {
        let (b, oy, ox) = geo.position_of(p);
        let (first, lo, hi) = geo.columns(ox);
        for (ky, row) in dst.chunks_exact_mut(k * ci).enumerate() {
            let iy = (oy * geo.stride + ky).checked_sub(geo.pad);
            let Some(iy) = iy.filter(|&i| i < geo.h) else {
                row.fill(0.0);
                continue;
            };
            row[..lo * ci].fill(0.0);
            let start = ((b * geo.h + iy) * geo.w) as isize + first + lo as isize;
            let start = start as usize * ci;
            row[lo * ci..hi * ci].copy_from_slice(&x[start..start + (hi - lo) * ci]);
            row[hi * ci..].fill(0.0);
        }
    }
}

/// Adds patch gradients `gp` of output pixels `rows` back onto the input positions they were
/// gathered from, in `gx`, the gradient of the images from `first_image` on.
#[inline(always)]
fn scatter_patches(
    gp: &[f32],
    geo: &ConvGeometry,
    rows: Range<usize>,
    first_image: usize,
    gx: &mut [f32],
) {
    let (k, ci) = (geo.kernel, geo.ci);
    for (p, src) in rows.zip(gp.chunks_exact(k * k * ci)) {
        let (b, oy, ox) = geo.position_of(p);
        let (first, lo, hi) = geo.columns(ox);
        for (ky, row) in src.chunks_exact(k * ci).enumerate() {
            let iy = (oy * geo.stride + ky).checked_sub(geo.pad);
            let Some(iy) = iy.filter(|&i| i < geo.h) else {
                continue;
            };
            let start = (((b - first_image) * geo.h + iy) * geo.w) as isize + first + lo as isize;
            let start = start as usize * ci;
            let dst = &mut gx[start..start + (hi - lo) * ci];
            dst.iter_mut()
                .zip(&row[lo * ci..hi * ci])
                .for_each(|(d, s)| *d += s);
        }
    }
}

/// A convolution with its inference-mode BatchNorm folded in.
pub struct FoldedConv {
    /// `[kernel * kernel * ci, co]`, rows in (ky, kx, ci) order: timm's weight times the
    /// BatchNorm scale of its output channel.
    weight: Vec<f32>,
    /// The BatchNorm shift `[co]`.
    shift: Vec<f32>,
    /// `weight` transformed for Winograd's F(2x2, 3x3), for a 3x3 convolution at stride 1 and
    /// padding 1, which runs through it instead of patch products.
    winograd: Option<WinogradFilter>,
    ci: usize,
    co: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
}

/// Sums over every output position of a [`FoldedConv`]'s backward pass.
pub struct PatchSums {
    /// `patches^T @ grad`, `[kernel * kernel * ci, co]`.
    pub weight: Vec<f32>,
    /// The gradient's sum per output channel: the BatchNorm shift's gradient.
    pub shift: Vec<f32>,
}

impl FoldedConv {
    /// Folds BatchNorm `scale` and `shift` into timm's weight `raw` `[co, ci, kernel, kernel]`.
    pub fn new(
        raw: &[f32],
        [co, ci, kernel]: [usize; 3],
        scale: &[f32],
        shift: Vec<f32>,
        stride: usize,
        pad: usize,
    ) -> Self {
        let taps = kernel * kernel;
        let mut weight = vec![0f32; raw.len()];
        // One task per kernel tap, whose `[ci, co]` rows are contiguous in the folded layout.
        weight
            .par_chunks_mut(ci * co)
            .enumerate()
            .for_each(|(tap, rows)| {
                crate::vectorized! {
                    for (c, row) in rows.chunks_exact_mut(co).enumerate() {
                        for (o, (w, &s)) in row.iter_mut().zip(scale).enumerate() {
                            *w = raw[(o * ci + c) * taps + tap] * s;
                        }
                    }
                }
            });
        let winograd =
            (kernel == 3 && stride == 1 && pad == 1).then(|| WinogradFilter::new(&weight, ci, co));
        Self {
            weight,
            shift,
            winograd,
            ci,
            co,
            kernel,
            stride,
            pad,
        }
    }

    /// The geometry of this convolution on a channels-last batch of `[n, h, w, ci]`.
    pub fn geometry(&self, [n, h, w, _]: [usize; 4]) -> ConvGeometry {
        ConvGeometry {
            n,
            h,
            w,
            ci: self.ci,
            co: self.co,
            kernel: self.kernel,
            stride: self.stride,
            pad: self.pad,
        }
    }

    /// `relu?(conv(x) * scale + shift + residual)` of the channels-last batch `x`, channels-last
    /// `[n, out_h, out_w, co]`.
    pub fn forward(
        &self,
        x: &[f32],
        geo: &ConvGeometry,
        residual: Option<&[f32]>,
        relu: bool,
    ) -> Vec<f32> {
        if let Some(winograd) = &self.winograd {
            return winograd.forward(x, [geo.n, geo.h, geo.w], &self.shift, residual, relu);
        }
        let (co, kk, total) = (self.co, geo.patch_len(), geo.out_pixels());
        let tasks = 2 * rayon::current_num_threads();
        let block = geo.rows_per_block().min(total.div_ceil(tasks)).max(1);
        let mut y = vec![0f32; total * co];
        y.par_chunks_mut(block * co)
            .enumerate()
            .for_each_init(Vec::new, |patches, (bi, out)| {
                crate::vectorized! {
                    let rows = bi * block..bi * block + out.len() / co;
                    for (o, p) in out.chunks_exact_mut(co).zip(rows.clone()) {
                        o.copy_from_slice(&self.shift);
                        if let Some(r) = residual {
                            o.iter_mut()
                                .zip(&r[p * co..][..co])
                                .for_each(|(o, r)| *o += r);
                        }
                    }
                    let lhs = if geo.is_pointwise() {
                        &x[rows.start * kk..rows.end * kk]
                    } else {
                        patches.resize(rows.len() * kk, 0.0);
                        gather_patches(x, geo, rows.clone(), patches);
                        &patches[..]
                    };
                    // `lhs` holds rows.len() x kk, the weight kk x co, `out` rows.len() x co.
                    matmul_into(
                        out,
                        MatRef::new(lhs, rows.len(), kk),
                        MatRef::new(&self.weight, kk, co),
                        true,
                        false,
                    );
                    if relu {
                        out.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                }
            });
        y
    }

    /// The backward pass of [`FoldedConv::forward`] from `gz`, the gradient of its output
    /// before the ReLU (see [`relu_mask`]), on the batch `x` it ran on: the input's gradient when
    /// `input` is set, the [`PatchSums`] when `params` is set.
    pub fn backward(
        &self,
        x: &[f32],
        geo: &ConvGeometry,
        gz: &[f32],
        input: bool,
        params: bool,
    ) -> (Option<Vec<f32>>, Option<PatchSums>) {
        if let Some(winograd) = &self.winograd {
            let (gx, weight) = winograd.backward(x, [geo.n, geo.h, geo.w], gz, input, params);
            let sums = weight.map(|weight| PatchSums {
                weight,
                shift: column_sums(
                    gz,
                    gz,
                    self.co,
                    #[inline(always)]
                    |g, _| g,
                ),
            });
            return (gx, sums);
        }
        let (co, kk) = (self.co, geo.patch_len());
        let pixels = geo.out_h() * geo.out_w();
        let image_len = geo.h * geo.w * geo.ci;
        let mut gx = vec![0f32; if input { geo.n * image_len } else { 0 }];
        let parts = image_groups(&mut gx, geo.n, image_len);
        let block = geo.rows_per_block();
        let partials: Vec<Option<PatchSums>> = parts
            .into_par_iter()
            .map(|(images, gx)| {
                crate::vectorized! {
                    let rows = images.start * pixels..images.end * pixels;
                    let mut sums = params.then(|| PatchSums {
                        weight: vec![0f32; kk * co],
                        shift: vec![0f32; co],
                    });
                    let (mut patches, mut gpatches) = (Vec::new(), Vec::new());
                    for start in rows.clone().step_by(block) {
                        let r = start..(start + block).min(rows.end);
                        let g = &gz[r.start * co..r.end * co];
                        if let Some(s) = sums.as_mut() {
                            for row in g.chunks_exact(co) {
                                s.shift.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                            }
                            let lhs = if geo.is_pointwise() {
                                &x[r.start * kk..r.end * kk]
                            } else {
                                patches.resize(r.len() * kk, 0.0);
                                gather_patches(x, geo, r.clone(), &mut patches);
                                &patches[..]
                            };
                            // `lhs` read transposed is kk x r.len(), `g` r.len() x co, the sum
                            // kk x co.
                            matmul_into(
                                &mut s.weight,
                                MatRef::new(lhs, r.len(), kk).t(),
                                MatRef::new(g, r.len(), co),
                                true,
                                false,
                            );
                        }
                        if input {
                            let local = (r.start - rows.start) * kk..(r.end - rows.start) * kk;
                            let dst = if geo.is_pointwise() {
                                &mut gx[local]
                            } else {
                                gpatches.resize(r.len() * kk, 0.0);
                                &mut gpatches[..]
                            };
                            // `g` is r.len() x co, the weight read transposed co x kk, `dst`
                            // r.len() x kk.
                            matmul_into(
                                dst,
                                MatRef::new(g, r.len(), co),
                                MatRef::new(&self.weight, kk, co).t(),
                                false,
                                false,
                            );
                            if !geo.is_pointwise() {
                                scatter_patches(&gpatches, geo, r, images.start, gx);
                            }
                        }
                    }
                    sums
                }
            })
            .collect();
        let sums = params.then(|| {
            let mut total = PatchSums {
                weight: vec![0f32; kk * co],
                shift: vec![0f32; co],
            };
            for p in partials.into_iter().flatten() {
                total
                    .weight
                    .iter_mut()
                    .zip(&p.weight)
                    .for_each(|(a, v)| *a += v);
                total
                    .shift
                    .iter_mut()
                    .zip(&p.shift)
                    .for_each(|(a, v)| *a += v);
            }
            total
        });
        (input.then_some(gx), sums)
    }

    /// The gradients of timm's weight `raw` `[co, ci, kernel, kernel]` and of the BatchNorm
    /// scale `scale` folded into it, from the backward pass's `sums`.
    pub fn param_grads(
        &self,
        raw: &[f32],
        scale: &[f32],
        sums: &PatchSums,
    ) -> (Vec<f32>, Vec<f32>) {
        let (ci, co, taps) = (self.ci, self.co, self.kernel * self.kernel);
        let filter_len = ci * taps;
        let mut gweight = vec![0f32; raw.len()];
        let mut gscale = vec![0f32; co];
        // Tasks of FILTERS_PER_TASK filters: each reads contiguous runs of a row of the sums and
        // writes its filters' gradients in order.
        const FILTERS_PER_TASK: usize = 16;
        gweight
            .par_chunks_mut(FILTERS_PER_TASK * filter_len)
            .zip(gscale.par_chunks_mut(FILTERS_PER_TASK))
            .enumerate()
            .for_each(|(task, (gfilters, gscales))| {
                crate::vectorized! {
                    let first = task * FILTERS_PER_TASK;
                    let filters = gscales.len();
                    for j in 0..filter_len {
                        let (c, tap) = (j / taps, j % taps);
                        let row = &sums.weight[(tap * ci + c) * co + first..][..filters];
                        for (k, (&s, gs)) in row.iter().zip(gscales.iter_mut()).enumerate() {
                            let o = first + k;
                            gfilters[k * filter_len + j] = s * scale[o];
                            *gs += raw[o * filter_len + j] * s;
                        }
                    }
                }
            });
        (gweight, gscale)
    }
}

/// `g *= (y > 0)`: the gradient `g` of a ReLU's output `y` taken back through the ReLU.
pub fn relu_mask(g: &mut [f32], y: &[f32]) {
    g.par_chunks_mut(1 << 14)
        .zip(y.par_chunks(1 << 14))
        .for_each(|(g, y)| {
            crate::vectorized! {
                g.iter_mut()
                    .zip(y)
                    .for_each(|(g, &y)| *g = if y > 0.0 { *g } else { 0.0 });
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{check_slice_gradient, uniform as random};
    use candle_core::{Device, Result, Tensor};

    /// (n, h, w, ci, co, kernel, stride, pad) of every convolution ResNet runs; the 3x3 ones
    /// at stride 1 (Winograd's) on odd and even sides, one pixel wide, and channels beyond one
    /// vector register.
    const CASES: [[usize; 8]; 7] = [
        [3, 9, 8, 4, 5, 3, 1, 1],
        [2, 6, 7, 17, 33, 3, 1, 1],
        [2, 1, 3, 20, 3, 3, 1, 1],
        [3, 9, 8, 4, 6, 3, 2, 1],
        [3, 7, 6, 8, 5, 1, 1, 0],
        [3, 7, 6, 8, 5, 1, 2, 0],
        [2, 13, 11, 3, 4, 7, 2, 3],
    ];

    fn case(i: usize) -> (ConvGeometry, Vec<f32>, Vec<f32>, Vec<f32>) {
        let [n, h, w, ci, co, kernel, stride, pad] = CASES[i];
        let geo = ConvGeometry {
            n,
            h,
            w,
            ci,
            co,
            kernel,
            stride,
            pad,
        };
        let raw = random(co * ci * kernel * kernel, 1);
        let scale: Vec<f32> = random(co, 2).iter().map(|v| v + 1.5).collect();
        (geo, random(n * h * w * ci, 3), raw, scale)
    }

    #[test]
    fn forward_matches_candle_convolution() -> Result<()> {
        let dev = Device::Cpu;
        for i in 0..CASES.len() {
            let (geo, x, raw, scale) = case(i);
            let shift = random(geo.co, 4);
            let conv = FoldedConv::new(
                &raw,
                [geo.co, geo.ci, geo.kernel],
                &scale,
                shift.clone(),
                geo.stride,
                geo.pad,
            );
            let (oh, ow) = (geo.out_h(), geo.out_w());
            let residual = random(geo.n * oh * ow * geo.co, 5);
            let ours = conv.forward(&x, &geo, Some(&residual), true);
            let xt =
                Tensor::from_vec(x, (geo.n, geo.h, geo.w, geo.ci), &dev)?.permute((0, 3, 1, 2))?;
            let wt = Tensor::from_vec(raw, (geo.co, geo.ci, geo.kernel, geo.kernel), &dev)?;
            let want = xt
                .contiguous()?
                .conv2d(&wt, geo.pad, geo.stride, 1, 1)?
                .permute((0, 2, 3, 1))?
                .broadcast_mul(&Tensor::new(scale.as_slice(), &dev)?)?
                .broadcast_add(&Tensor::new(shift.as_slice(), &dev)?)?
                .add(&Tensor::from_vec(residual, (geo.n, oh, ow, geo.co), &dev)?)?
                .relu()?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let err = crate::model::ops::testing::max_abs_diff_of(&ours, &want);
            assert!(err < 1e-4, "case {i}: off by {err}");
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() {
        for i in 0..CASES.len() {
            let (geo, x, raw, scale) = case(i);
            let shift = random(geo.co, 4);
            let dims = [geo.co, geo.ci, geo.kernel];
            let conv = |raw: &[f32], scale: &[f32], shift: &[f32]| {
                FoldedConv::new(raw, dims, scale, shift.to_vec(), geo.stride, geo.pad)
            };
            let folded = conv(&raw, &scale, &shift);
            let r = random(geo.out_pixels() * geo.co, 6);
            let (gx, sums) = folded.backward(&x, &geo, &r, true, true);
            let sums = sums.unwrap();
            let (gweight, gscale) = folded.param_grads(&raw, &scale, &sums);
            check_slice_gradient(
                &x,
                &r,
                |x| folded.forward(x, &geo, None, false),
                &gx.unwrap(),
            );
            check_slice_gradient(
                &raw,
                &r,
                |w| conv(w, &scale, &shift).forward(&x, &geo, None, false),
                &gweight,
            );
            check_slice_gradient(
                &scale,
                &r,
                |s| conv(&raw, s, &shift).forward(&x, &geo, None, false),
                &gscale,
            );
            check_slice_gradient(
                &shift,
                &r,
                |b| conv(&raw, &scale, b).forward(&x, &geo, None, false),
                &sums.shift,
            );
            let (only_input, no_sums) = folded.backward(&x, &geo, &r, true, false);
            assert!(no_sums.is_none());
            let (none, only_sums) = folded.backward(&x, &geo, &r, false, true);
            assert!(none.is_none());
            assert_eq!(only_sums.unwrap().weight, sums.weight);
            assert!(only_input.is_some());
        }
    }

    #[test]
    fn relu_mask_keeps_the_gradient_where_the_output_is_positive() {
        let mut g = vec![1.0, 2.0, 3.0];
        relu_mask(&mut g, &[0.5, 0.0, -1.0]);
        assert_eq!(g, vec![1.0, 0.0, 0.0]);
    }
}
