//! What an image is, for finding copies: a hash of the file's bytes (exact copies) and a
//! perceptual hash of its pixels (near copies: re-encoded, resized, lightly cropped or brightened).
//!
//! The perceptual hash is `image_hasher`'s DCT pHash: the image in grey, shrunk to 16x16, its
//! 2-D DCT, the 8x8 lowest frequencies thresholded at their median: 64 bits, half of them set, so
//! distances are even. Two pictures of one photo differ in a few bits; two different photos in
//! about half of them (on Dog-Cat's 1,399 photos no two distinct ones come closer than 12).

use image::RgbImage;
use image_hasher::{FilterType, HashAlg, Hasher, HasherConfig};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::sync::LazyLock;

/// Perceptual hashes this many bits apart or closer are near copies of one picture.
pub const NEAR_DISTANCE: u32 = 8;

/// Side the image is area-averaged down to before the hasher's own resize, so that the cost
/// does not grow with the photo's size.
const PRESHRINK: u32 = 64;

static HASHER: LazyLock<Hasher> = LazyLock::new(|| {
    HasherConfig::new()
        .hash_alg(HashAlg::Median)
        .preproc_dct()
        .hash_size(8, 8)
        .resize_filter(FilterType::Triangle)
        .to_hasher()
});

/// The content hash and perceptual hash of one image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint {
    /// First 128 bits of the SHA-256 of the file's bytes.
    pub content: u128,
    /// 64-bit DCT perceptual hash of the decoded pixels.
    pub perceptual: u64,
}

impl Fingerprint {
    /// Fingerprints a file from its bytes and its decoded pixels.
    pub fn new(bytes: &[u8], image: &RgbImage) -> Self {
        let digest = sha2::Sha256::digest(bytes);
        let content = u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"));
        Self {
            content,
            perceptual: perceptual_hash(image),
        }
    }

    /// Bits in which the perceptual hashes differ.
    pub fn distance(&self, other: &Self) -> u32 {
        (self.perceptual ^ other.perceptual).count_ones()
    }

    /// Whether `other` is an exact copy (same bytes) or a near copy of this image.
    pub fn twin(&self, other: &Self) -> Option<Likeness> {
        if self.content == other.content {
            Some(Likeness::Exact)
        } else if self.distance(other) <= NEAR_DISTANCE {
            Some(Likeness::Near)
        } else {
            None
        }
    }
}

/// How alike two images are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Likeness {
    /// Byte-for-byte the same file.
    Exact,
    /// The same picture, re-encoded, resized, lightly cropped or brightened.
    Near,
}

fn perceptual_hash(image: &RgbImage) -> u64 {
    let hash = HASHER.hash_image(&grey_thumbnail(image));
    let mut word = [0u8; 8];
    let bytes = hash.as_bytes();
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(word)
}

/// The image area-averaged to fit `PRESHRINK` x `PRESHRINK` (SIMD, via fast_image_resize), then
/// in grey; small images are only turned grey.
fn grey_thumbnail(image: &RgbImage) -> image::GrayImage {
    use fast_image_resize::{images::Image, PixelType, ResizeAlg, ResizeOptions, Resizer};
    if image.width() <= PRESHRINK && image.height() <= PRESHRINK {
        return image::imageops::grayscale(image);
    }
    let src = Image::from_vec_u8(
        image.width(),
        image.height(),
        image.as_raw().clone(),
        PixelType::U8x3,
    )
    .expect("buffer matches its size");
    let mut dst = Image::new(PRESHRINK, PRESHRINK, PixelType::U8x3);
    let options =
        ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fast_image_resize::FilterType::Box));
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .expect("same pixel type");
    let small = RgbImage::from_raw(PRESHRINK, PRESHRINK, dst.into_vec()).expect("buffer matches");
    image::imageops::grayscale(&small)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_is_near_itself_resized_and_far_from_its_mirror() {
        let img = crate::data::decode::tests::gradient(120, 90);
        let mut spot = img.clone();
        for y in 10..40 {
            for x in 15..50 {
                spot.put_pixel(x, y, image::Rgb([250, 250, 250]));
            }
        }
        let a = Fingerprint::new(b"a", &spot);
        let small = image::imageops::resize(&spot, 96, 72, image::imageops::FilterType::Triangle);
        assert!(a.distance(&Fingerprint::new(b"b", &small)) <= NEAR_DISTANCE);
        let mirrored = image::imageops::flip_horizontal(&spot);
        assert!(a.twin(&Fingerprint::new(b"c", &mirrored)).is_none());
        assert_eq!(a.twin(&Fingerprint::new(b"a", &img)), Some(Likeness::Exact));
    }
}
