//! Reading one image file into RGB8, whatever its format, orientation or colour model.

use super::fingerprint::Fingerprint;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use std::io::Cursor;
use std::os::raw::c_int;
use std::path::Path;

/// Largest allocation a single decode may make, in bytes.
const MAX_DECODE_ALLOC: u64 = 1 << 30;

/// Decodes `path` to RGB8 with its EXIF orientation applied. Grayscale, alpha, 16-bit, palette
/// and CMYK images are converted; animations give their first frame. Images over `max_pixels`
/// are refused before their pixels are decoded. The error is a reason fit for a skip report.
pub fn decode_rgb(path: &Path, max_pixels: u64) -> Result<RgbImage, String> {
    decode_read(&read_file(path)?, max_pixels)
}

/// [`decode_rgb`], and the image's [`Fingerprint`] from the same read of the file.
pub fn decode_fingerprinted(
    path: &Path,
    max_pixels: u64,
) -> Result<(RgbImage, Fingerprint), String> {
    let bytes = read_file(path)?;
    let image = decode_read(&bytes, max_pixels)?;
    let fingerprint = Fingerprint::new(&bytes, &image);
    Ok((image, fingerprint))
}

/// The bytes of an image file, or of an image in a parquet file ([`super::parquet`]).
fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = match super::parquet::image_bytes(path) {
        Some(bytes) => bytes?,
        None => std::fs::read(path).map_err(|e| format!("cannot read file: {e}"))?,
    };
    if bytes.is_empty() {
        return Err("empty file (0 bytes)".into());
    }
    Ok(bytes)
}

fn decode_read(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, String> {
    // Decoders are third-party code fed untrusted bytes: a panic there skips the file.
    std::panic::catch_unwind(|| decode_bytes(bytes, max_pixels))
        .unwrap_or_else(|_| Err("the image decoder crashed on this file".into()))
}

fn decode_bytes(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, String> {
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| format!("cannot read file: {e}"))
    };
    let probe = reader()?;
    let Some(format) = probe.format() else {
        return Err("not an image: the content matches no supported format".into());
    };
    if format == image::ImageFormat::Jpeg && !has_jpeg_end(bytes) {
        return Err("truncated JPEG: the end-of-image marker is missing".into());
    }
    let (w, h) = probe
        .into_dimensions()
        .map_err(|e| format!("corrupt {format:?} header: {e}"))?;
    if w as u64 * h as u64 > max_pixels {
        return Err(format!(
            "image too large: {w}x{h} is over the limit of {:.0} megapixels (data.max_megapixels)",
            max_pixels as f64 / 1e6
        ));
    }
    let mut reader = reader()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| format!("corrupt {format:?}: {e}"))?;
    let orientation = decoder.orientation().ok();
    let libjpeg = (format == image::ImageFormat::Jpeg)
        .then(|| decode_jpeg_libjpeg(bytes))
        .flatten();
    let mut img = match libjpeg {
        Some(rgb) => DynamicImage::ImageRgb8(rgb),
        None => DynamicImage::from_decoder(decoder)
            .map_err(|e| format!("corrupt or truncated {format:?}: {e}"))?,
    };
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// A JPEG decoded to RGB by libjpeg-turbo's decoder (as mozjpeg builds it): the pixels Pillow
/// and OpenCV decode, which timm's transforms and Python deployments start from. `None` when
/// libjpeg reports any problem, a warning included (corrupt data it would paper over), or
/// cannot give RGB (CMYK, arithmetic coding): the `image` crate's decoder then decides.
fn decode_jpeg_libjpeg(bytes: &[u8]) -> Option<RgbImage> {
    /// libjpeg's error exit, and any warning (level -1), unwind to the `catch_unwind` below.
    unsafe extern "C-unwind" fn fail(_: &mut mozjpeg_sys::jpeg_common_struct) {
        std::panic::resume_unwind(Box::new("libjpeg error"));
    }
    unsafe extern "C-unwind" fn warn(_: &mut mozjpeg_sys::jpeg_common_struct, level: c_int) {
        if level < 0 {
            std::panic::resume_unwind(Box::new("libjpeg warning"));
        }
    }
    std::panic::catch_unwind(|| {
        // SAFETY: jpeg_std_error only fills in the struct it is given.
        let mut errors: mozjpeg_sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
        unsafe { mozjpeg_sys::jpeg_std_error(&mut errors) };
        errors.error_exit = Some(fail);
        errors.emit_message = Some(warn);
        let mut started = mozjpeg::Decompress::builder()
            .with_err(errors)
            .from_mem(bytes)
            .ok()?
            .rgb()
            .ok()?;
        let (w, h) = (started.width() as u32, started.height() as u32);
        let pixels = started.read_scanlines::<u8>().ok()?;
        started.finish().ok()?;
        RgbImage::from_raw(w, h, pixels)
    })
    .ok()
    .flatten()
}

/// Whether a JPEG's tail holds its end-of-image marker (FF D9). Entropy-coded data never
/// contains it, so a file cut short lacks it; a little trailing padding after it is allowed.
fn has_jpeg_end(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb, Rgba};

    /// A small RGB test picture with a gradient, so that conversions are visible.
    pub fn gradient(w: u32, h: u32) -> RgbImage {
        ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128])
        })
    }

    fn save(img: &DynamicImage, name: &str, dir: &Path) -> std::path::PathBuf {
        let p = dir.join(name);
        img.save(&p).unwrap();
        p
    }

    #[test]
    fn odd_formats_become_rgb8() {
        let t = tempfile::tempdir().unwrap();
        let rgb = DynamicImage::ImageRgb8(gradient(20, 10));
        let gray = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(8, 8, Luma([77])));
        let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_pixel(8, 8, Rgba([1, 2, 3, 0])));
        let deep = DynamicImage::ImageRgb16(ImageBuffer::from_pixel(8, 8, Rgb([65535, 0, 32768])));
        for (img, name) in [
            (&rgb, "a.jpg"),
            (&gray, "g.jpg"),
            (&rgba, "t.png"),
            (&deep, "d.png"),
            (&rgb, "b.bmp"),
            (&rgb, "w.tiff"),
        ] {
            let p = save(img, name, t.path());
            let out = decode_rgb(&p, 1 << 30).unwrap();
            assert_eq!(
                (out.width(), out.height()),
                (img.width(), img.height()),
                "{name}"
            );
        }
        let d = decode_rgb(&t.path().join("d.png"), 1 << 30).unwrap();
        assert_eq!(d.get_pixel(0, 0).0, [255, 0, 128]);
        let g = decode_rgb(&t.path().join("g.jpg"), 1 << 30).unwrap();
        let p = g.get_pixel(3, 3).0;
        assert!(p[0] == p[1] && p[1] == p[2]);
    }

    #[test]
    fn bad_files_give_reasons() {
        let t = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = t.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let empty = write("empty.jpg", b"");
        assert!(decode_rgb(&empty, 1 << 30).unwrap_err().contains("empty"));
        let text = write("text.jpg", b"hello, I am not a picture");
        assert!(decode_rgb(&text, 1 << 30)
            .unwrap_err()
            .contains("not an image"));
        let good = save(
            &DynamicImage::ImageRgb8(gradient(64, 64)),
            "good.jpg",
            t.path(),
        );
        let bytes = std::fs::read(&good).unwrap();
        let cut = write("cut.jpg", &bytes[..bytes.len() / 3]);
        assert!(decode_rgb(&cut, 1 << 30).is_err());
        assert!(decode_rgb(&good, 100).unwrap_err().contains("too large"));
        assert!(decode_rgb(&t.path().join("missing.jpg"), 1 << 30).is_err());
    }
}
