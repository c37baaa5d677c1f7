//! The eval transform of a backbone's `pretrained_cfg`, as timm applies it: resize the shorter
//! side to `floor(size / crop_pct)`, center-crop `size`, normalise with `mean` and `std`.

use super::resample;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The preprocessing fields of a timm `config.json`'s `pretrained_cfg`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainedCfg {
    pub input_size: [usize; 3],
    #[serde(default = "default_interpolation")]
    pub interpolation: String,
    #[serde(default = "default_crop_pct")]
    pub crop_pct: f64,
    #[serde(default = "default_crop_mode")]
    pub crop_mode: String,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

fn default_interpolation() -> String {
    "bicubic".into()
}
fn default_crop_pct() -> f64 {
    0.875
}
fn default_crop_mode() -> String {
    "center".into()
}

/// Resampling filter used to reach the working resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Interpolation {
    Bicubic,
    Bilinear,
    Nearest,
}

/// A resolved eval transform: sizes in pixels, per-channel normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Side of the square network input.
    pub size: u32,
    /// Length the shorter side is resized to before the center crop.
    pub resize: u32,
    /// Resize both sides to `resize` instead of keeping the aspect ratio (timm's `squash`).
    pub squash: bool,
    pub interpolation: Interpolation,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// Resolves `cfg`; `image_size` (when non-zero) replaces its input size, keeping `crop_pct`.
    pub fn from_cfg(cfg: &PretrainedCfg, image_size: u32) -> Result<Self, String> {
        let size = if image_size > 0 {
            image_size
        } else {
            cfg.input_size[1] as u32
        };
        let interpolation = match cfg.interpolation.as_str() {
            "bicubic" => Interpolation::Bicubic,
            "bilinear" => Interpolation::Bilinear,
            "nearest" => Interpolation::Nearest,
            other => {
                return Err(format!(
                    "unsupported interpolation {other:?} in pretrained_cfg"
                ))
            }
        };
        let squash = match cfg.crop_mode.as_str() {
            "center" => false,
            "squash" => true,
            other => return Err(format!("unsupported crop_mode {other:?} in pretrained_cfg")),
        };
        if !(0.1..=1.0).contains(&cfg.crop_pct) || !(8..=2048).contains(&size) {
            return Err("pretrained_cfg has an unusable crop_pct or input_size".into());
        }
        Ok(Self {
            size,
            resize: (size as f64 / cfg.crop_pct).floor() as u32,
            squash,
            interpolation,
            mean: cfg.mean,
            std: cfg.std,
        })
    }

    /// Values per image in the network input (`3 * size * size`).
    pub fn input_len(&self) -> usize {
        3 * (self.size as usize).pow(2)
    }

    /// Resizes to the working resolution: shorter side `resize` (torchvision's rounding), or
    /// `resize` x `resize` when squashing.
    pub fn to_working(&self, img: &RgbImage) -> RgbImage {
        let (nw, nh) = self.working_size(img.dimensions());
        resize_rgb(img, nw, nh, self.interpolation)
    }

    /// The working resolution of an image of `(w, h)` (see [`Preprocess::to_working`]).
    fn working_size(&self, (w, h): (u32, u32)) -> (u32, u32) {
        let (nw, nh) = if self.squash {
            (self.resize, self.resize)
        } else if w <= h {
            (
                self.resize,
                (self.resize as u64 * h as u64 / w as u64) as u32,
            )
        } else {
            (
                (self.resize as u64 * w as u64 / h as u64) as u32,
                self.resize,
            )
        };
        (nw.max(1), nh.max(1))
    }

    /// Center-crops a working-resolution image and writes it normalised, channels first, to `out`.
    pub fn crop_normalize(&self, img: &RgbImage, out: &mut [f32]) {
        let s = self.size;
        let (img, (left, top)) = self.center_crop(img);
        let plane = (s * s) as usize;
        let (scale, shift) = self.affine();
        for y in 0..s {
            for x in 0..s {
                let p = img.get_pixel(left + x, top + y).0;
                let i = (y * s + x) as usize;
                for c in 0..3 {
                    out[c * plane + i] = p[c] as f32 * scale[c] + shift[c];
                }
            }
        }
    }

    /// The eval transform of a decoded image, `[3, size, size]` flattened.
    pub fn eval(&self, img: &RgbImage) -> Vec<f32> {
        let mut out = vec![0.0; self.input_len()];
        self.crop_normalize(&self.eval_pixels(img), &mut out);
        out
    }

    /// The pixels the eval transform feeds the network: the center crop of
    /// [`Preprocess::to_working`], resized for the crop only ([`resample::resize_region`]).
    pub fn eval_pixels(&self, img: &RgbImage) -> RgbImage {
        let s = self.size;
        let (nw, nh) = self.working_size(img.dimensions());
        let filter = match self.interpolation {
            Interpolation::Bicubic => Some(resample::BICUBIC),
            Interpolation::Bilinear => Some(resample::BILINEAR),
            Interpolation::Nearest => None,
        };
        match filter {
            Some(filter) if nw >= s && nh >= s => {
                let (left, top) = center_crop_origin((nw, nh), s);
                resample::resize_region(img, (nw, nh), filter, (left, top, s, s))
            }
            _ => {
                let working = self.to_working(img);
                let (working, (left, top)) = self.center_crop(&working);
                image::imageops::crop_imm(&*working, left, top, s, s).to_image()
            }
        }
    }

    /// The working-resolution image the center crop is taken from, and the crop's origin in it:
    /// an image smaller than the crop is first resized to fit (only reachable for squash with a
    /// crop_pct of 1.0 rounding down).
    fn center_crop<'a>(&self, working: &'a RgbImage) -> (Cow<'a, RgbImage>, (u32, u32)) {
        let s = self.size;
        let (w, h) = working.dimensions();
        let working = if w < s || h < s {
            Cow::Owned(resize_rgb(working, s.max(w), s.max(h), self.interpolation))
        } else {
            Cow::Borrowed(working)
        };
        let origin = center_crop_origin(working.dimensions(), s);
        (working, origin)
    }

    /// The picture a normalised `[3, size, size]` input shows: [`Preprocess::affine`] undone.
    pub fn to_rgb(&self, input: &[f32]) -> RgbImage {
        let s = self.size;
        let plane = (s * s) as usize;
        let (scale, shift) = self.affine();
        RgbImage::from_fn(s, s, |x, y| {
            let i = (y * s + x) as usize;
            image::Rgb([0, 1, 2].map(|c| {
                ((input[c * plane + i] - shift[c]) / scale[c])
                    .round()
                    .clamp(0.0, 255.0) as u8
            }))
        })
    }

    /// Per-channel `(scale, shift)` taking a 0..=255 pixel value to the normalised input.
    pub fn affine(&self) -> ([f32; 3], [f32; 3]) {
        let scale = [0, 1, 2].map(|c| 1.0 / (255.0 * self.std[c]));
        let shift = [0, 1, 2].map(|c| -self.mean[c] / self.std[c]);
        (scale, shift)
    }
}

/// Where a center crop of `size` x `size` starts in an image of `(w, h)`, as torchvision's
/// `CenterCrop` rounds it.
fn center_crop_origin((w, h): (u32, u32), size: u32) -> (u32, u32) {
    let offset = |n: u32| ((n - size) as f64 / 2.0).round_ties_even() as u32;
    (offset(w), offset(h))
}

/// Resizes as Pillow does with the same filter ([`resample`]), bit for bit.
pub fn resize_rgb(img: &RgbImage, w: u32, h: u32, filter: Interpolation) -> RgbImage {
    if img.dimensions() == (w, h) {
        return img.clone();
    }
    match filter {
        Interpolation::Bicubic => resample::resize(img, w, h, resample::BICUBIC),
        Interpolation::Bilinear => resample::resize(img, w, h, resample::BILINEAR),
        Interpolation::Nearest => resample::resize_nearest(img, w, h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lite0_cfg() -> PretrainedCfg {
        PretrainedCfg {
            input_size: [3, 224, 224],
            interpolation: "bicubic".into(),
            crop_pct: 0.875,
            crop_mode: "center".into(),
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    #[test]
    fn eval_resizes_the_crop_alone_to_the_same_values() {
        let img = RgbImage::from_fn(411, 297, |x, y| {
            image::Rgb([(x * 5 + y) as u8, (x ^ y) as u8, (y * 3) as u8])
        });
        for interpolation in ["bicubic", "bilinear", "nearest"] {
            for (crop_pct, crop_mode) in [(0.875, "center"), (1.0, "center"), (0.95, "squash")] {
                let cfg = PretrainedCfg {
                    interpolation: interpolation.into(),
                    crop_pct,
                    crop_mode: crop_mode.into(),
                    ..lite0_cfg()
                };
                let p = Preprocess::from_cfg(&cfg, 0).unwrap();
                for img in [img.clone(), image::imageops::rotate90(&img)] {
                    let mut whole = vec![0.0; p.input_len()];
                    p.crop_normalize(&p.to_working(&img), &mut whole);
                    assert_eq!(
                        p.eval(&img),
                        whole,
                        "{interpolation} {crop_mode} {crop_pct}"
                    );
                }
            }
        }
    }

    #[test]
    fn sizes_follow_timm() {
        let p = Preprocess::from_cfg(&lite0_cfg(), 0).unwrap();
        assert_eq!((p.size, p.resize), (224, 256));
        let img = RgbImage::new(400, 300);
        assert_eq!(p.to_working(&img).dimensions(), (341, 256));
        let p = Preprocess::from_cfg(&lite0_cfg(), 160).unwrap();
        assert_eq!((p.size, p.resize), (160, 182));
    }

    #[test]
    fn normalisation_maps_pixel_range() {
        let p = Preprocess::from_cfg(&lite0_cfg(), 32).unwrap();
        let white = RgbImage::from_pixel(40, 40, image::Rgb([255, 255, 255]));
        let out = p.eval(&white);
        assert!(out.iter().all(|v| (v - 1.0).abs() < 1e-5));
        let black = RgbImage::new(40, 40);
        assert!(p.eval(&black).iter().all(|v| (v + 1.0).abs() < 1e-5));
    }
}
