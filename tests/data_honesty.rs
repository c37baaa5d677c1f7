//! The split and the accuracy it reports can be trusted on messy folders: the class root is not a
//! folder of augmented copies, derived files and copies stay on one side of the split, a given
//! split is measured for leakage, and symlink loops are not followed. Datasets are generated here.

mod common;

use image::{imageops, RgbImage};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// A photo-like picture: overlapping soft blobs of seeded colours and places over a textured
/// background, different for every `seed`.
fn photo(seed: u64, w: u32, h: u32) -> RgbImage {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let blobs: Vec<(f32, f32, f32, [f32; 3])> = (0..7)
        .map(|_| {
            (
                rng.random_range(0.0..1.0),
                rng.random_range(0.0..1.0),
                rng.random_range(0.1..0.4),
                [0; 3].map(|_: i32| rng.random_range(0.0..255.0)),
            )
        })
        .collect();
    let base: [f32; 3] = [0; 3].map(|_: i32| rng.random_range(40.0..200.0));
    RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let texture = ((x * 7 + y * 13) % 11) as f32 * 1.5;
        let mut c = base.map(|b| b + texture);
        for (bx, by, r, col) in &blobs {
            let d = ((u - bx).powi(2) + (v - by).powi(2)).sqrt();
            let a = (1.0 - d / r).clamp(0.0, 1.0);
            for k in 0..3 {
                c[k] = c[k] * (1.0 - a) + col[k] * a;
            }
        }
        image::Rgb(c.map(|v| v.clamp(0.0, 255.0) as u8))
    })
}

/// The same scene in one palette: a distinct picture whose colours match `photo(seed)`'s.
fn same_colours(seed: u64, layout: u64, w: u32, h: u32) -> RgbImage {
    let palette = photo(seed, w, h);
    let shape = photo(layout, w, h);
    let mut sorted: Vec<[u8; 3]> = palette.pixels().map(|p| p.0).collect();
    sorted.sort_by_key(|p| p.iter().map(|&v| v as u32).sum::<u32>());
    let mut order: Vec<(u32, usize)> = shape
        .pixels()
        .enumerate()
        .map(|(i, p)| (p.0.iter().map(|&v| v as u32).sum(), i))
        .collect();
    order.sort();
    let mut out = RgbImage::new(w, h);
    for (rank, (_, i)) in order.into_iter().enumerate() {
        let (x, y) = (i as u32 % w, i as u32 / w);
        out.put_pixel(x, y, image::Rgb(sorted[rank]));
    }
    out
}

fn save_jpeg(img: &RgbImage, path: &Path, quality: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(file, quality);
    enc.encode_image(img).unwrap();
}

fn crop(img: &RgbImage, fraction: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (dx, dy) = ((w as f32 * fraction) as u32, (h as f32 * fraction) as u32);
    imageops::crop_imm(img, dx, dy, w - 2 * dx, h - 2 * dy).to_image()
}

fn brighter(img: &RgbImage, factor: f32) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        p.0 = p.0.map(|v| (v as f32 * factor).min(255.0) as u8);
    }
    out
}

fn shifted(img: &RgbImage, dx: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| *img.get_pixel((x + dx).min(w - 1), y))
}

fn inspect(dataset: &Path, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tltui"))
        .arg("inspect")
        .arg(dataset)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn file_name(v: &Value) -> String {
    Path::new(v.as_str().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn split_layout_wins_over_a_folder_of_augmented_copies() {
    let t = tempfile::tempdir().unwrap();
    for (ci, class) in ["cat", "dog"].iter().enumerate() {
        for i in 0..10u64 {
            let seed = ci as u64 * 100 + i;
            let img = photo(seed, 160, 120);
            let stem = format!("image_{:04}", seed);
            save_jpeg(
                &img,
                &t.path().join(format!("train/{class}/{stem}.jpg")),
                90,
            );
            let aug = t.path().join("train_augmented").join(class);
            save_jpeg(
                &crop(&img, 0.1),
                &aug.join(format!("{stem}-center.jpg")),
                90,
            );
            let east = imageops::flip_horizontal(&shifted(&img, 12));
            save_jpeg(&east, &aug.join(format!("{stem}-east-f.jpg")), 90);
            save_jpeg(&shifted(&img, 8), &aug.join(format!("{stem}-west.jpg")), 90);
        }
        for i in 0..4u64 {
            let seed = 1000 + ci as u64 * 100 + i;
            let path = t.path().join(format!("test/{class}/image_{seed:04}.jpg"));
            save_jpeg(&photo(seed, 160, 120), &path, 90);
        }
    }
    let r = inspect(t.path(), &[]);
    assert_eq!(r["class_root"], "train");
    assert_eq!(r["given_split"], true);
    let candidates = r["candidates"].as_array().unwrap();
    let chosen: Vec<&Value> = candidates.iter().filter(|c| c["chosen"] == true).collect();
    assert_eq!(chosen.len(), 2, "train and test are used: {chosen:?}");
    assert_eq!(chosen[1]["path"], "test");
    assert!(
        chosen[1]["reason"]
            .as_str()
            .unwrap()
            .contains("used as the validation split"),
        "{chosen:?}"
    );
    assert!(
        chosen[0]["reason"]
            .as_str()
            .unwrap()
            .contains("split layout"),
        "{chosen:?}"
    );
    let augmented = candidates
        .iter()
        .find(|c| c["path"] == "train_augmented")
        .expect("the augmented folder is listed as a runner-up");
    assert_eq!(augmented["images"], 60);
    assert!(
        augmented["reason"]
            .as_str()
            .unwrap()
            .contains("derived copy"),
        "{augmented}"
    );
    assert_eq!(
        common::class_totals(&r),
        [("cat".into(), 14), ("dog".into(), 14)]
    );

    // Chosen explicitly, the augmented folder is still split by source photo.
    let forced = inspect(
        t.path(),
        &[
            "--classes-dir",
            t.path().join("train_augmented").to_str().unwrap(),
            "--files",
        ],
    );
    assert_groups_on_one_side(&forced, 3);
}

/// Every group lies on one side of the split, and the groups have `size` files each.
fn assert_groups_on_one_side(report: &Value, size: usize) {
    let mut sides: HashMap<u64, Vec<String>> = HashMap::new();
    for f in report["files"].as_array().unwrap() {
        sides
            .entry(f["group"].as_u64().unwrap())
            .or_default()
            .push(f["split"].as_str().unwrap().to_string());
    }
    for (group, members) in &sides {
        assert_eq!(members.len(), size, "group {group}: {members:?}");
        assert!(
            members.iter().all(|m| m == &members[0]),
            "group {group} spans the split: {members:?}"
        );
    }
    let val = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["split"] == "val")
        .count();
    assert!(val > 0, "something is validated");
}

#[test]
fn derived_copies_under_suffixed_names_stay_on_one_side() {
    let t = tempfile::tempdir().unwrap();
    for (ci, class) in ["ants", "bees"].iter().enumerate() {
        let dir = t.path().join(class);
        for i in 0..12u64 {
            let seed = 500 + ci as u64 * 50 + i;
            let img = photo(seed, 128, 96);
            let stem = format!("img_{seed:04}");
            save_jpeg(&img, &dir.join(format!("{stem}.jpg")), 90);
            let flipped = imageops::flip_horizontal(&img);
            save_jpeg(&flipped, &dir.join(format!("{stem}_flip.jpg")), 90);
            save_jpeg(&crop(&img, 0.15), &dir.join(format!("{stem}_aug3.jpg")), 90);
            save_jpeg(&img, &dir.join(format!("{stem} (1).jpg")), 70);
        }
    }
    let r = inspect(
        t.path(),
        &["--files", "--val-fraction", "0.25", "--seed", "3"],
    );
    assert_groups_on_one_side(&r, 4);
    assert_eq!(r["leakage"]["val_images_with_train_twin"], 0);
}

#[test]
fn near_copies_under_unrelated_names_are_grouped_and_look_alikes_are_not() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("flowers");
    let other = t.path().join("trees");
    let mut expected: Vec<(String, String)> = Vec::new();
    for i in 0..4u64 {
        let img = photo(40 + i, 200, 150);
        let name = format!("orig_{i}.png");
        std::fs::create_dir_all(&dir).unwrap();
        img.save(dir.join(&name)).unwrap();
        let copy = match i {
            0 => {
                let p = dir.join("x9_q60.jpg");
                save_jpeg(&img, &p, 60);
                p
            }
            1 => {
                let p = dir.join("resized_k2.png");
                imageops::resize(&img, 160, 120, imageops::FilterType::Triangle)
                    .save(&p)
                    .unwrap();
                p
            }
            2 => {
                let p = dir.join("zz_cropped.png");
                crop(&img, 0.03).save(&p).unwrap();
                p
            }
            _ => {
                let p = dir.join("bright_thing.png");
                brighter(&img, 1.05).save(&p).unwrap();
                p
            }
        };
        expected.push((name, copy.file_name().unwrap().to_string_lossy().into()));
    }
    // Distinct pictures in the originals' colours.
    for i in 0..4u64 {
        same_colours(40 + i, 90 + i, 200, 150)
            .save(dir.join(format!("lookalike_{i}.png")))
            .unwrap();
    }
    std::fs::create_dir_all(&other).unwrap();
    for i in 0..8u64 {
        photo(70 + i, 200, 150)
            .save(other.join(format!("t{i}.png")))
            .unwrap();
    }
    let r = inspect(t.path(), &["--files"]);
    let mut found: Vec<(String, String)> = r["duplicates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            assert_eq!(g["kind"], "near");
            let mut names: Vec<String> = g["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(file_name)
                .collect();
            names.sort_by_key(|n| !n.starts_with("orig_"));
            assert_eq!(names.len(), 2, "{names:?}");
            (names[0].clone(), names[1].clone())
        })
        .collect();
    found.sort();
    assert_eq!(found, expected);
    assert_groups_on_one_side_loose(&r);
}

/// Copies share a group; every other file is a group of its own.
fn assert_groups_on_one_side_loose(report: &Value) {
    let mut sides: HashMap<u64, Vec<&str>> = HashMap::new();
    for f in report["files"].as_array().unwrap() {
        sides
            .entry(f["group"].as_u64().unwrap())
            .or_default()
            .push(f["split"].as_str().unwrap());
    }
    assert!(sides.values().all(|m| m.iter().all(|s| *s == m[0])));
}

#[test]
fn a_given_split_is_measured_for_leakage() {
    let t = tempfile::tempdir().unwrap();
    let mut leaked: Vec<(String, String)> = Vec::new();
    for (ci, class) in ["cat", "dog"].iter().enumerate() {
        for i in 0..8u64 {
            let seed = 300 + ci as u64 * 20 + i;
            let path = t.path().join(format!("train/{class}/{i}.jpg"));
            save_jpeg(&photo(seed, 150, 150), &path, 92);
        }
        for i in 0..4u64 {
            let path = t.path().join(format!("test/{class}/t{i}.jpg"));
            if i < 2 {
                // A copy of a training image (re-encoded, or the same file).
                let seed = 300 + ci as u64 * 20 + i * 3;
                let quality = if i == 0 { 92 } else { 75 };
                save_jpeg(&photo(seed, 150, 150), &path, quality);
                leaked.push((format!("t{i}.jpg"), format!("{}.jpg", i * 3)));
            } else {
                save_jpeg(&photo(900 + ci as u64 * 20 + i, 150, 150), &path, 92);
            }
        }
    }
    let r = inspect(t.path(), &[]);
    assert_eq!(r["given_split"], true);
    let leakage = &r["leakage"];
    assert_eq!(leakage["val_images_with_train_twin"], 4);
    let mut pairs: Vec<(String, String)> = leakage["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (file_name(&p["val"]), file_name(&p["train"])))
        .collect();
    pairs.sort();
    leaked.sort();
    assert_eq!(pairs, leaked);
    assert!(r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("4 of 8 validation images")));
}

#[cfg(unix)]
#[test]
fn a_symlink_to_the_dataset_root_is_not_followed() {
    let t = tempfile::tempdir().unwrap();
    for (ci, class) in ["cat", "dog"].iter().enumerate() {
        for i in 0..5u64 {
            let path = t.path().join(format!("{class}/{i}.jpg"));
            save_jpeg(&photo(ci as u64 * 10 + i, 64, 64), &path, 90);
        }
    }
    std::os::unix::fs::symlink("..", t.path().join("dog/loop")).unwrap();
    std::os::unix::fs::symlink("../cat/0.jpg", t.path().join("dog/again.jpg")).unwrap();
    let r = inspect(t.path(), &[]);
    assert_eq!(r["class_root"], ".");
    assert_eq!(
        common::class_totals(&r),
        [("cat".into(), 5), ("dog".into(), 5)]
    );
    let skipped: Vec<String> = r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", file_name(&s["path"]), s["reason"]))
        .collect();
    assert!(
        skipped
            .iter()
            .any(|s| s.starts_with("loop ") && s.contains("not followed")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|s| s.starts_with("again.jpg ")),
        "{skipped:?}"
    );
}

#[test]
fn dog_cat_duplicates_are_few_and_real() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let r = inspect(
        &shared.join("datasets/Dog-Cat-Classifier"),
        &["--val-fraction", "0.25", "--seed", "0"],
    );
    assert_eq!(r["class_root"], "Data/Train_Data");
    let groups = r["duplicates"].as_array().unwrap();
    println!("Dog-Cat duplicate groups: {groups:?}");
    assert!(
        !groups.is_empty() && groups.len() <= 3,
        "{} groups",
        groups.len()
    );
    assert_eq!(r["leakage"]["val_images_with_train_twin"], 0);
}
