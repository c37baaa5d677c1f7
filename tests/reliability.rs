//! A generated corpus of bad and odd files mixed into a good dataset: `inspect` and a headless
//! warm-up finish, every bad file is reported with its path and reason, odd but valid formats are
//! decoded, memory stays bounded; dataset-level problems end with one clear message.

mod common;

use image::{DynamicImage, ImageBuffer, Luma, Rgb};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tltui(args: &[&OsStr], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tltui"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

fn good_jpeg() -> Vec<u8> {
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(ImageBuffer::from_fn(64, 48, |x, y| {
        Rgb([x as u8 * 4, y as u8 * 5, 90])
    }))
    .write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    bytes
}

/// A 12000x9000 PNG written row by row, so the test itself never holds it in memory.
fn huge_png(path: &Path) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut enc = png::Encoder::new(file, 12000, 9000);
    enc.set_color(png::ColorType::Rgb);
    enc.set_compression(png::Compression::Fastest);
    let mut w = enc.write_header().unwrap().into_stream_writer().unwrap();
    let row = vec![128u8; 12000 * 3];
    for _ in 0..9000 {
        std::io::Write::write_all(&mut w, &row).unwrap();
    }
    w.finish().unwrap();
}

fn palette_png(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(file, 16, 16);
    enc.set_color(png::ColorType::Indexed);
    enc.set_palette(vec![255, 0, 0, 0, 0, 255]);
    enc.set_trns(vec![0, 255]);
    let mut w = enc.write_header().unwrap();
    let data: Vec<u8> = (0..256).map(|i| (i % 2) as u8).collect();
    w.write_image_data(&data).unwrap();
}

fn cmyk_jpeg(path: &Path) {
    let data: Vec<u8> = (0..32 * 32)
        .flat_map(|i| [(i % 200) as u8, 30, 60, 10])
        .collect();
    jpeg_encoder::Encoder::new_file(path, 90)
        .unwrap()
        .encode(&data, 32, 32, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
}

fn animated_gif(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = image::codecs::gif::GifEncoder::new(file);
    let frames = (0..2).map(|i| {
        image::Frame::new(ImageBuffer::from_pixel(
            12,
            12,
            image::Rgba([i * 200, 50, 50, 255]),
        ))
    });
    enc.encode_frames(frames).unwrap();
}

struct Corpus {
    root: PathBuf,
    /// (file, words its skip reason must contain)
    bad: Vec<(PathBuf, &'static str)>,
    odd: Vec<PathBuf>,
}

fn corpus(dir: &Path) -> Corpus {
    let root = dir.join("scraped");
    common::shapes_dataset(&root, &["cat", "dog"], 8);
    let jpeg = good_jpeg();
    let put = |rel: &str, bytes: &[u8]| {
        let p = root.join(rel);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut bad = vec![
        (
            put("cat/truncated.jpg", &jpeg[..jpeg.len() / 2]),
            "truncated",
        ),
        (put("cat/empty.jpg", b""), "empty"),
        (
            put("cat/notes.jpg", b"just some text, not a picture\n"),
            "not an image",
        ),
        (
            put(
                "dog/error.png",
                b"<!DOCTYPE html><html><body>503 Service Unavailable</body></html>",
            ),
            "not an image",
        ),
    ];
    let huge = root.join("dog/huge.png");
    huge_png(&huge);
    bad.push((huge, "too large"));
    let looped = root.join("dog/loop.jpg");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    bad.push((looped, "cannot read"));
    std::fs::create_dir_all(root.join("bird")).unwrap();
    bad.push((put("bird/only.jpg", &jpeg[..100]), "truncated"));
    std::fs::create_dir_all(root.join("empty_class")).unwrap();

    let mut odd = Vec::new();
    let deep = root.join("cat/deep16.png");
    DynamicImage::ImageRgb16(ImageBuffer::from_pixel(20, 20, Rgb([60000u16, 100, 30000])))
        .save(&deep)
        .unwrap();
    odd.push(deep);
    let gray = root.join("dog/gray.jpg");
    DynamicImage::ImageLuma8(ImageBuffer::from_fn(24, 24, |x, _| Luma([x as u8 * 10])))
        .save(&gray)
        .unwrap();
    odd.push(gray);
    let cmyk = root.join("dog/cmyk.jpg");
    cmyk_jpeg(&cmyk);
    odd.push(cmyk);
    let pal = root.join("cat/palette.png");
    palette_png(&pal);
    odd.push(pal);
    let gif = root.join("dog/anim.gif");
    animated_gif(&gif);
    odd.push(gif);
    let tiny = root.join("cat/tiny.png");
    DynamicImage::ImageRgb8(ImageBuffer::from_pixel(1, 1, Rgb([1, 2, 3])))
        .save(&tiny)
        .unwrap();
    odd.push(tiny);
    let odd_name = root
        .join("cat")
        .join(OsStr::from_bytes(b"caf\xe9-latin1.jpg"));
    std::fs::write(&odd_name, &jpeg).unwrap();
    odd.push(odd_name);
    std::fs::copy(root.join("cat/0.png"), root.join("dog/copied-from-cat.png")).unwrap();
    Corpus { root, bad, odd }
}

fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn max_child_rss_mb() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

#[test]
fn bad_corpus_is_reported_and_nothing_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(dir.path());
    let cache = dir.path().join("cache");

    let out = tltui(
        &[
            OsStr::new("inspect"),
            c.root.as_os_str(),
            OsStr::new("--json"),
        ],
        &cache,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "inspect failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let skipped: Vec<(String, String)> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (path, why) in &c.bad {
        let hit = skipped.iter().find(|(p, _)| *p == lossy(path));
        let (_, reason) =
            hit.unwrap_or_else(|| panic!("{} not reported; skipped: {skipped:?}", path.display()));
        assert!(
            reason.contains(why),
            "{}: reason {reason:?} lacks {why:?}",
            path.display()
        );
    }
    for path in &c.odd {
        assert!(
            !skipped.iter().any(|(p, _)| *p == lossy(path)),
            "{} was skipped: {skipped:?}",
            path.display()
        );
    }
    let classes: Vec<&str> = report["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        classes,
        vec!["cat", "dog"],
        "empty and all-corrupt classes are left out"
    );
    let warnings = report["warnings"].to_string();
    for w in ["bird", "empty_class", "more than one class"] {
        assert!(warnings.contains(w), "no warning about {w}: {warnings}");
    }
    let rss = max_child_rss_mb();
    assert!(
        rss < 1024.0,
        "inspect peaked at {rss:.0} MB with a 12000x9000 image present"
    );

    let model = common::write_random_model(&dir.path().join("model"), "tf_efficientnet_lite0", 64);
    let out = tltui(
        &[
            c.root.as_os_str(),
            OsStr::new("--headless"),
            OsStr::new("--json"),
            OsStr::new("--warmup-epochs"),
            OsStr::new("1"),
            OsStr::new("--finetune-epochs"),
            OsStr::new("0"),
            OsStr::new("--weights"),
            model.as_os_str(),
            OsStr::new("--checkpoint-dir"),
            dir.path().join("ck").as_os_str(),
        ],
        &cache,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "headless warm-up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "summary");
    assert!(last["warmup_val_accuracy"].is_number(), "{last}");
    let rss = max_child_rss_mb();
    assert!(rss < 1024.0, "peak memory {rss:.0} MB");
}

/// One readable line on stderr, non-zero exit, no panic.
fn assert_clear_error(out: &Output, words: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one message: {stderr}");
    assert!(stderr.contains(words), "{stderr:?} lacks {words:?}");
}

#[test]
fn dataset_level_errors_are_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let missing = dir.path().join("missing");
    let file = dir.path().join("file.jpg");
    std::fs::write(&file, b"x").unwrap();
    let no_images = dir.path().join("no-images");
    std::fs::create_dir_all(no_images.join("a")).unwrap();
    std::fs::write(no_images.join("a/readme.txt"), b"x").unwrap();
    let one_class = dir.path().join("one-class");
    common::shapes_dataset(&one_class, &["only"], 3);
    for (path, words) in [
        (&missing, "does not exist"),
        (&file, "is a file"),
        (&no_images, "no images"),
        (&one_class, "only one class"),
    ] {
        assert_clear_error(
            &tltui(&[OsStr::new("inspect"), path.as_os_str()], &cache),
            words,
        );
        let out = tltui(
            &[
                path.as_os_str(),
                OsStr::new("--headless"),
                OsStr::new("--weights"),
                file.as_os_str(),
            ],
            &cache,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(words) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

#[test]
fn unreadable_directory_is_reported_when_permissions_apply() {
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipped: running as root, where directory permissions do not stop reads");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("d");
    common::shapes_dataset(&root, &["a", "b"], 3);
    let locked = root.join("a/locked");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::write(locked.join("x.jpg"), good_jpeg()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = tltui(
        &[
            OsStr::new("inspect"),
            root.as_os_str(),
            OsStr::new("--json"),
        ],
        &dir.path().join("c"),
    );
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("locked") && text.contains("cannot read directory"),
        "{text}"
    );
}
