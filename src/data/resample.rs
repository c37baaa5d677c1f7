//! Resizing as Pillow's `Image.resize` does it (`libImaging/Resample.c`), to the bit: timm's eval
//! transform and most Python deployments resize with Pillow, so a model trained here sees the
//! same pixels they feed it. A horizontal then a vertical pass, each a convolution with the
//! filter stretched by the scale when shrinking (antialiasing), weights in fixed point with 22
//! fraction bits, and the intermediate rounded to 8 bits as Pillow keeps it.

use image::RgbImage;
use std::ops::Range;

/// Fraction bits of the fixed-point weights: 8 bits of pixel and 2 of headroom in an `i32`.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A resampling filter: its kernel and the half-width of its support at scale 1.
#[derive(Debug, Clone, Copy)]
pub struct Filter {
    kernel: fn(f64) -> f64,
    support: f64,
}

/// Pillow's `BICUBIC` (Keys' cubic with a = -0.5).
pub const BICUBIC: Filter = Filter {
    kernel: bicubic,
    support: 2.0,
};

/// Pillow's `BILINEAR` (the triangle).
pub const BILINEAR: Filter = Filter {
    kernel: bilinear,
    support: 1.0,
};

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// For each of a run of output positions along one axis: the first input index it reads, and
/// its weights (Pillow's `precompute_coeffs` and `normalize_coeffs_8bpc`).
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

impl Taps {
    /// The taps of output positions `outputs` of a resize from `in_size` to `out_size`.
    fn new(in_size: usize, out_size: usize, filter: Filter, outputs: Range<usize>) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter.support * filter_scale;
        let mut first = Vec::with_capacity(outputs.len());
        let mut weights = Vec::with_capacity(outputs.len());
        for out in outputs {
            let center = (out as f64 + 0.5) * scale;
            // C's (int) truncation of a value that is clamped at 0 right after.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> = (lo..hi)
                .map(|x| (filter.kernel)((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = raw.iter().sum();
            let one = (1u32 << PRECISION_BITS) as f64;
            let fixed = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    // C's (int) truncation after adding a half away from zero.
                    if w < 0.0 {
                        (-0.5 + w * one) as i32
                    } else {
                        (0.5 + w * one) as i32
                    }
                })
                .collect();
            first.push(lo);
            weights.push(fixed);
        }
        Self { first, weights }
    }
}

/// A fixed-point sum to a pixel value: Pillow's `clip8`.
#[inline]
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The starting value of a fixed-point sum: a half, so that the shift rounds.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// `img` resized to `w` x `h` with `filter`, bit for bit as Pillow's `Image.resize` with the
/// same filter and no `box` or `reducing_gap`.
pub fn resize(img: &RgbImage, w: u32, h: u32, filter: Filter) -> RgbImage {
    resize_region(img, (w, h), filter, (0, 0, w, h))
}

/// The region `(left, top, width, height)` of [`resize`]'s `w` x `h` output, computed alone:
/// the pixels of that crop of the whole resize, for the work of the region (every output pixel
/// is a sum over the input that does not depend on its neighbours).
pub fn resize_region(
    img: &RgbImage,
    (w, h): (u32, u32),
    filter: Filter,
    (left, top, region_w, region_h): (u32, u32, u32, u32),
) -> RgbImage {
    assert!(
        left + region_w <= w && top + region_h <= h,
        "resize_region: the region lies outside the output"
    );
    if region_w == 0 || region_h == 0 {
        return RgbImage::new(region_w, region_h);
    }
    crate::vectorized! {
        let (in_w, in_h) = (img.width() as usize, img.height() as usize);
        let cols = left as usize..(left + region_w) as usize;
        let out_rows = top as usize..(top + region_h) as usize;
        let src = img.as_raw();
        let horizontal = (w as usize != in_w).then(|| Taps::new(in_w, w as usize, filter, cols.clone()));
        let vertical = (h as usize != in_h).then(|| Taps::new(in_h, h as usize, filter, out_rows.clone()));
        // Rows of the input the vertical pass reads; the horizontal pass computes only those.
        let rows = match &vertical {
            Some(t) => t.first[0]..t.first[t.first.len() - 1] + t.weights[t.weights.len() - 1].len(),
            None => out_rows,
        };
        let stride = cols.len() * 3;
        let mut mid = vec![0u8; rows.len() * stride];
        for (row, out) in rows.clone().zip(mid.chunks_exact_mut(stride)) {
            let line = &src[row * in_w * 3..(row + 1) * in_w * 3];
            let Some(taps) = &horizontal else {
                out.copy_from_slice(&line[cols.start * 3..cols.end * 3]);
                continue;
            };
            for ((px, &start), weights) in out.chunks_exact_mut(3).zip(&taps.first).zip(&taps.weights) {
                let mut sum = [HALF; 3];
                for (k, p) in weights.iter().zip(line[start * 3..].chunks_exact(3)) {
                    for c in 0..3 {
                        sum[c] += p[c] as i32 * k;
                    }
                }
                for c in 0..3 {
                    px[c] = clip8(sum[c]);
                }
            }
        }
        let Some(taps) = vertical else {
            return RgbImage::from_raw(region_w, region_h, mid)
                .expect("the horizontal pass fills every row");
        };
        let mut out = vec![0u8; region_h as usize * stride];
        let mut sums = vec![HALF; stride];
        for ((line, &first), weights) in out.chunks_exact_mut(stride).zip(&taps.first).zip(&taps.weights) {
            sums.fill(HALF);
            let top = first - rows.start;
            for (i, k) in weights.iter().enumerate() {
                let row = &mid[(top + i) * stride..(top + i + 1) * stride];
                for (s, &p) in sums.iter_mut().zip(row) {
                    *s += p as i32 * k;
                }
            }
            for (o, &s) in line.iter_mut().zip(&sums) {
                *o = clip8(s);
            }
        }
        RgbImage::from_raw(region_w, region_h, out).expect("the vertical pass fills every row")
    }
}

/// `img` resized to `w` x `h` taking, for each output pixel, the input pixel under its centre.
pub fn resize_nearest(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    let pick = |out: u32, out_size: u32, in_size: u32| {
        (((out as f64 + 0.5) * in_size as f64 / out_size as f64) as u32).min(in_size - 1)
    };
    RgbImage::from_fn(w, h, |x, y| {
        *img.get_pixel(pick(x, w, in_w), pick(y, h, in_h))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_is_the_crop_of_the_whole_resize() {
        let img = RgbImage::from_fn(53, 41, |x, y| {
            image::Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (255 - x * 4) as u8])
        });
        for filter in [BICUBIC, BILINEAR] {
            for (w, h) in [(30, 23), (80, 60), (53, 20), (20, 41), (53, 41)] {
                let whole = resize(&img, w, h, filter);
                for (left, top, rw, rh) in
                    [(0, 0, w, h), (3, 5, w - 7, h - 9), (w - 1, h - 1, 1, 1)]
                {
                    let region = resize_region(&img, (w, h), filter, (left, top, rw, rh));
                    let crop = image::imageops::crop_imm(&whole, left, top, rw, rh).to_image();
                    assert_eq!(region, crop, "{w}x{h} at ({left}, {top}) {rw}x{rh}");
                }
            }
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (inp, out) in [(500, 256), (256, 500), (375, 256), (7, 3)] {
            let taps = Taps::new(inp, out, BICUBIC, 0..out);
            for w in &taps.weights {
                let total: i32 = w.iter().sum();
                assert!((total - (1 << PRECISION_BITS)).abs() <= w.len() as i32);
            }
        }
    }

    #[test]
    fn a_constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 10, 97]));
        for (w, h) in [(16, 9), (80, 50), (37, 11), (5, 23)] {
            let out = resize(&img, w, h, BICUBIC);
            assert_eq!(out.dimensions(), (w, h));
            assert!(out.pixels().all(|p| p.0 == [200, 10, 97]), "{w}x{h}");
        }
    }

    #[test]
    fn halving_with_the_triangle_averages_neighbours_over_its_stretched_support() {
        // Shrinking 4 -> 2 stretches the triangle to support 2: output 0 reads inputs 0..3 with
        // weights 3/8, 3/8, 1/8 (after normalising 0.75, 0.75, 0.25).
        let img = RgbImage::from_fn(4, 1, |x, _| {
            image::Rgb([[0u8, 80, 160, 240][x as usize]; 3])
        });
        let out = resize(&img, 2, 1, BILINEAR);
        let want: f64 = (0.0 * 0.75 + 80.0 * 0.75 + 160.0 * 0.25) / 1.75;
        assert_eq!(out.get_pixel(0, 0).0[0], want.round() as u8);
    }

    #[test]
    fn nearest_picks_the_pixel_under_each_centre() {
        let img = RgbImage::from_fn(4, 2, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let out = resize_nearest(&img, 2, 1);
        assert_eq!(out.get_pixel(0, 0).0, [1, 1, 0]);
        assert_eq!(out.get_pixel(1, 0).0, [3, 1, 0]);
    }
}
