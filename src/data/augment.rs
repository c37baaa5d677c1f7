//! Training augmentation: random-resized-crop (or center crop), zoom, rotation and horizontal flip
//! as one affine resampling of the working-resolution image, then a brightness factor.

use super::preprocess::Preprocess;
use crate::config::AugmentConfig;
use image::RgbImage;
use rand::Rng;

/// One sample's drawn augmentation.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentParams {
    /// Crop box in working-resolution pixels: left, top, width, height.
    pub crop: [f32; 4],
    /// Scale of the sampled region around the crop's center (< 1 zooms in).
    pub zoom: f32,
    /// Rotation in radians, counter-clockwise.
    pub angle: f32,
    pub flip: bool,
    /// Factor applied to pixel values.
    pub brightness: f32,
}

impl AugmentParams {
    /// The identity of an eval transform: the center crop of side `size`.
    pub fn center(w: u32, h: u32, size: u32) -> Self {
        let s = size.min(w).min(h) as f32;
        Self {
            crop: [(w as f32 - s) / 2.0, (h as f32 - s) / 2.0, s, s],
            zoom: 1.0,
            angle: 0.0,
            flip: false,
            brightness: 1.0,
        }
    }

    /// Draws a sample's augmentation for an image of `w` x `h` working pixels.
    pub fn sample(cfg: &AugmentConfig, w: u32, h: u32, size: u32, rng: &mut impl Rng) -> Self {
        let mut p = Self::center(w, h, size);
        if cfg.random_resized_crop {
            p.crop = random_resized_crop(cfg, w as f32, h as f32, rng);
        }
        if cfg.zoom_range > 0.0 {
            p.zoom = rng.random_range(1.0 - cfg.zoom_range..=1.0 + cfg.zoom_range);
        }
        if cfg.rotation_degrees > 0.0 {
            let d = cfg.rotation_degrees;
            p.angle = rng.random_range(-d..=d).to_radians();
        }
        p.flip = cfg.horizontal_flip && rng.random_bool(0.5);
        let [lo, hi] = cfg.brightness_range;
        if hi > lo {
            p.brightness = rng.random_range(lo..=hi);
        }
        p
    }
}

/// torchvision's RandomResizedCrop box: area fraction and log-uniform aspect ratio, ten tries,
/// then the largest centered box of an allowed ratio.
fn random_resized_crop(cfg: &AugmentConfig, w: f32, h: f32, rng: &mut impl Rng) -> [f32; 4] {
    let area = w * h;
    let (lr0, lr1) = (cfg.crop_ratio[0].ln(), cfg.crop_ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.random_range(cfg.crop_scale[0]..=cfg.crop_scale[1]);
        let ratio = if lr1 > lr0 {
            rng.random_range(lr0..=lr1).exp()
        } else {
            cfg.crop_ratio[0]
        };
        let cw = (target * ratio).sqrt();
        let ch = (target / ratio).sqrt();
        if cw <= w && ch <= h {
            let left = rng.random_range(0.0..=w - cw);
            let top = rng.random_range(0.0..=h - ch);
            return [left, top, cw, ch];
        }
    }
    let ratio = (w / h).clamp(cfg.crop_ratio[0], cfg.crop_ratio[1]);
    let (cw, ch) = if w / h > ratio {
        (h * ratio, h)
    } else {
        (w, w / ratio)
    };
    [(w - cw) / 2.0, (h - ch) / 2.0, cw, ch]
}

/// Renders `params` on a working-resolution image into `out` (`[3, size, size]`, normalised).
/// Pixels are sampled bilinearly; points outside the image take the nearest edge pixel.
pub fn render(img: &RgbImage, params: &AugmentParams, prep: &Preprocess, out: &mut [f32]) {
    let s = prep.size as usize;
    let plane = s * s;
    let (scale, shift) = prep.affine();
    let [left, top, cw, ch] = params.crop;
    let (cx, cy) = (left + cw / 2.0, top + ch / 2.0);
    let (sin, cos) = params.angle.sin_cos();
    let (w, h) = (img.width() as i64, img.height() as i64);
    let raw = img.as_raw();
    let texel = |x: i64, y: i64, c: usize| -> f32 {
        let x = x.clamp(0, w - 1);
        let y = y.clamp(0, h - 1);
        raw[((y * w + x) * 3) as usize + c] as f32
    };
    for v in 0..s {
        for u in 0..s {
            // Output position relative to the center, in units of the output side.
            let mut dx = (u as f32 + 0.5) / s as f32 - 0.5;
            let dy = (v as f32 + 0.5) / s as f32 - 0.5;
            if params.flip {
                dx = -dx;
            }
            let (ox, oy) = (dx * cw * params.zoom, dy * ch * params.zoom);
            let sx = cx + cos * ox - sin * oy - 0.5;
            let sy = cy + sin * ox + cos * oy - 0.5;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            for c in 0..3 {
                let top_row = texel(x0, y0, c) * (1.0 - fx) + texel(x0 + 1, y0, c) * fx;
                let bottom_row = texel(x0, y0 + 1, c) * (1.0 - fx) + texel(x0 + 1, y0 + 1, c) * fx;
                let value = (top_row * (1.0 - fy) + bottom_row * fy) * params.brightness;
                out[c * plane + v * s + u] = value.min(255.0) * scale[c] + shift[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::data::preprocess::{Interpolation, Preprocess};
    use image::Rgb;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn prep(size: u32) -> Preprocess {
        Preprocess {
            size,
            resize: size,
            squash: false,
            interpolation: Interpolation::Bilinear,
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
        }
    }

    /// Output in 0..=255 units (the test transform normalises with mean 0, std 1/255).
    fn run(img: &RgbImage, p: &AugmentParams, size: u32) -> Vec<f32> {
        let mut out = vec![0.0; 3 * (size * size) as usize];
        render(img, p, &prep(size), &mut out);
        out
    }

    /// White on the left half, black on the right.
    fn halves(side: u32) -> RgbImage {
        RgbImage::from_fn(side, side, |x, _| {
            if x < side / 2 {
                Rgb([255; 3])
            } else {
                Rgb([0; 3])
            }
        })
    }

    fn mean(v: &[f32]) -> f32 {
        v.iter().sum::<f32>() / v.len() as f32
    }

    #[test]
    fn identity_is_the_center_crop() {
        let img = crate::data::decode::tests::gradient(40, 40);
        let out = run(&img, &AugmentParams::center(40, 40, 40), 40);
        assert_eq!(out[5 * 40 + 7], img.get_pixel(7, 5).0[0] as f32);
    }

    #[test]
    fn flip_mirrors() {
        let img = halves(32);
        let mut p = AugmentParams::center(32, 32, 32);
        let plain = run(&img, &p, 32);
        p.flip = true;
        let flipped = run(&img, &p, 32);
        for y in 0..32 {
            for x in 0..32 {
                assert_eq!(flipped[y * 32 + x], plain[y * 32 + 31 - x]);
            }
        }
    }

    #[test]
    fn rotation_turns_the_picture() {
        let img = halves(32);
        let mut p = AugmentParams::center(32, 32, 32);
        p.angle = std::f32::consts::PI;
        let out = run(&img, &p, 32);
        assert!(out[16 * 32 + 2] < 1.0, "left is now dark");
        assert!(out[16 * 32 + 29] > 254.0, "right is now bright");
    }

    #[test]
    fn zoom_magnifies_the_center() {
        let img = RgbImage::from_fn(64, 64, |x, y| {
            if (24..40).contains(&x) && (24..40).contains(&y) {
                Rgb([255; 3])
            } else {
                Rgb([0; 3])
            }
        });
        let mut p = AugmentParams::center(64, 64, 64);
        let bright = |o: &[f32]| o[..64 * 64].iter().filter(|v| **v > 128.0).count();
        let before = bright(&run(&img, &p, 64));
        p.zoom = 0.5;
        let after = bright(&run(&img, &p, 64));
        assert!(
            (after as f32 / before as f32 - 4.0).abs() < 0.3,
            "{before} -> {after}"
        );
    }

    #[test]
    fn brightness_scales_values() {
        let img = RgbImage::from_pixel(16, 16, Rgb([100; 3]));
        let mut p = AugmentParams::center(16, 16, 16);
        p.brightness = 1.2;
        assert!((mean(&run(&img, &p, 16)) - 120.0).abs() < 1e-3);
        p.brightness = 3.0;
        assert!((mean(&run(&img, &p, 16)) - 255.0).abs() < 1e-3, "clipped");
    }

    #[test]
    fn random_resized_crop_stays_inside_and_in_range() {
        let cfg = Config::default().augment;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            let [l, t, w, h] = random_resized_crop(&cfg, 300.0, 200.0, &mut rng);
            assert!(l >= 0.0 && t >= 0.0 && l + w <= 300.001 && t + h <= 200.001);
            let area = w * h / 60000.0;
            assert!(area >= cfg.crop_scale[0] - 1e-3 && area <= cfg.crop_scale[1] + 1e-3);
            let r = w / h;
            assert!(r >= cfg.crop_ratio[0] - 1e-3 && r <= cfg.crop_ratio[1] + 1e-3);
        }
        // A crop of the white half renders white.
        let img = halves(64);
        let mut p = AugmentParams::center(64, 64, 16);
        p.crop = [0.0, 0.0, 30.0, 30.0];
        assert!(run(&img, &p, 16).iter().all(|v| *v > 254.0));
    }

    #[test]
    fn sampling_is_seeded() {
        let cfg = Config::default().augment;
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            AugmentParams::sample(&cfg, 300, 256, 224, &mut rng)
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }
}
