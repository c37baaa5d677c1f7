//! `tltui embed` against timm: the seeded random-weight `convnext_atto` of
//! `../shared/reference/archs` run on lossless pictures of timm's resized test images gives
//! timm's pooled features; the JPEGs themselves come close; a Hub id works like a local file.

mod common;

use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

const ARCH_DIR: &str = "reference/archs/convnext_atto.d2_in1k";

/// Runs `tltui embed ARGS --json` and returns (path, features) per output line and stderr.
fn embed(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> (Vec<(String, Vec<f32>)>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tltui"))
        .arg("embed")
        .args(args)
        .arg("--json")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let features = serde_json::from_value(v["features"].clone()).unwrap();
            (v["path"].as_str().unwrap().to_string(), features)
        })
        .collect();
    (rows, stderr)
}

/// `|got - want| / |want|` (L2).
fn relative_l2(got: &[f32], want: &[f32]) -> f32 {
    let diff: f32 = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum();
    let norm: f32 = want.iter().map(|b| b * b).sum();
    (diff / norm).sqrt()
}

/// Pictures of timm's resized images: the golden center crop, undone to 0..=255 pixels (timm
/// normalises `pixel / 255`, so this is exact), in a square canvas of the resize side
/// `floor(224 / 0.875) = 256`. The eval transform then resizes nothing and crops exactly the
/// golden crop, so only the crop and the normalisation remain.
fn resized_pngs(input: &Tensor, out: &Path) -> Vec<PathBuf> {
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    let (size, resize) = (224u32, 256u32);
    let offset = (resize - size) / 2;
    (0..2)
        .map(|i| {
            let x: Vec<Vec<Vec<f32>>> = input.get(i).unwrap().to_vec3().unwrap();
            let img = image::RgbImage::from_fn(resize, resize, |px, py| {
                let (Some(cx), Some(cy)) = (px.checked_sub(offset), py.checked_sub(offset)) else {
                    return image::Rgb([128; 3]);
                };
                if cx >= size || cy >= size {
                    return image::Rgb([128; 3]);
                }
                image::Rgb([0, 1, 2].map(|c| {
                    let v = x[c][cy as usize][cx as usize] * std[c] + mean[c];
                    (v * 255.0).round().clamp(0.0, 255.0) as u8
                }))
            });
            let path = out.join(format!("resized_{i}.png"));
            img.save(&path).unwrap();
            path
        })
        .collect()
}

#[test]
fn embed_reproduces_timm_pooled_features() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let dir = shared.join(ARCH_DIR);
    let golden =
        candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).unwrap();
    let pooled: Vec<Vec<f32>> = golden["pooled"].to_vec2().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let weights = dir.join("model.safetensors");

    let pngs = resized_pngs(&golden["input"], tmp.path());
    let broken = tmp.path().join("broken.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let (rows, stderr) = embed(
        &[
            "--weights".as_ref(),
            weights.as_os_str(),
            pngs[0].as_os_str(),
            pngs[1].as_os_str(),
            broken.as_os_str(),
        ],
        &[],
    );
    assert_eq!(rows.len(), 2, "{stderr}");
    assert!(
        stderr.contains("skipped") && stderr.contains(&broken.display().to_string()),
        "{stderr}"
    );
    for (i, (path, features)) in rows.iter().enumerate() {
        assert_eq!(path, &pngs[i].display().to_string());
        let err = relative_l2(features, &pooled[i]);
        println!("{path}: relative L2 {err:.2e} against timm's pooled features");
        assert!(err <= 1e-2, "{path}: relative L2 {err}");
    }

    // The JPEGs themselves: our decoder and resize against PIL's.
    let jpegs: Vec<PathBuf> = ["test_cat.jpg", "test_dog.jpg"]
        .iter()
        .map(|n| shared.join("datasets/Dog-Cat-Classifier").join(n))
        .collect();
    let (rows, _) = embed(
        &[
            "--weights".as_ref(),
            weights.as_os_str(),
            jpegs[0].as_os_str(),
            jpegs[1].as_os_str(),
        ],
        &[],
    );
    for (i, (path, features)) in rows.iter().enumerate() {
        let err = relative_l2(features, &pooled[i]);
        println!("{path}: relative L2 {err:.2e} against timm's pooled features");
        assert!(err <= 2e-2, "{path}: relative L2 {err}");
    }
}

#[test]
fn embed_fetches_a_hub_backbone_like_a_local_file() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let dir = shared.join(ARCH_DIR);
    let stub = common::hub_stub::HubStub::serve_dir("timm/convnext_atto.d2_in1k", &dir);
    let cache = tempfile::tempdir().unwrap();
    let image = shared.join("datasets/Dog-Cat-Classifier/test_cat.jpg");
    let (local, _) = embed(
        &[
            "--weights".as_ref(),
            dir.join("model.safetensors").as_os_str(),
            image.as_os_str(),
            "--image-size".as_ref(),
            "160".as_ref(),
        ],
        &[],
    );
    let (hub, stderr) = embed(
        &[
            "--backbone".as_ref(),
            "timm/convnext_atto.d2_in1k".as_ref(),
            image.as_os_str(),
            "--image-size".as_ref(),
            "160".as_ref(),
        ],
        &[
            ("HF_ENDPOINT", &stub.endpoint),
            ("HF_HUB_CACHE", &cache.path().display().to_string()),
            ("NO_PROXY", "127.0.0.1,localhost"),
            ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1"),
        ],
    );
    assert!(stderr.contains("model.safetensors"), "{stderr}");
    assert_eq!(local.len(), 1);
    assert_eq!(local[0].1.len(), 320);
    assert_eq!(local[0].1, hub[0].1);
}
