//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the crate, or `None` (with the reason printed) when it is absent, as in a
/// user's own clone. CI makes sure it is present.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if dir.join("README.md").exists() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: {} not found (the test data beside the repository; see README)",
            dir.display()
        );
        None
    }
}

/// The pretrained lite0 files in `../shared/hub`.
#[path = "hub_stub.rs"]
pub mod hub_stub;
#[path = "tmux.rs"]
pub mod tmux;

pub fn lite0_dir(shared: &std::path::Path) -> PathBuf {
    shared.join("hub/timm/tf_efficientnet_lite0.in1k")
}

use candle_core::{Device, Tensor};
use tltui::data::PretrainedCfg;
use tltui::model::{build_backbone, ModelConfig, Params};

/// A timm config for `arch` with a square input of `size` pixels.
pub fn model_config_sized(arch: &str, size: usize) -> ModelConfig {
    ModelConfig {
        architecture: arch.to_string(),
        num_features: None,
        pretrained_cfg: PretrainedCfg {
            input_size: [3, size, size],
            interpolation: "bicubic".into(),
            crop_pct: 0.875,
            crop_mode: "center".into(),
            mean: [0.5; 3],
            std: [0.5; 3],
        },
    }
}

pub fn model_config(arch: &str) -> ModelConfig {
    model_config_sized(arch, 224)
}

/// Random weights in timm's layout, found by building the model and adding each tensor its
/// error message asks for (so the tests do not restate the architecture).
pub fn random_weights(arch: &str) -> Vec<(String, Tensor)> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for _ in 0..2000 {
        let params = Params::from_tensors(tensors.clone()).unwrap();
        let err = match build_backbone(&model_config(arch), params) {
            Ok(_) => return tensors,
            Err(e) => e.to_string(),
        };
        let name = err
            .split('"')
            .nth(1)
            .unwrap_or_else(|| panic!("{err}"))
            .to_string();
        let shape: Vec<usize> = err
            .rsplit_once("expected shape [")
            .unwrap_or_else(|| panic!("{err}"))
            .1
            .trim_end_matches(')')
            .trim_end_matches(']')
            .split(", ")
            .map(|d| d.parse().unwrap())
            .collect();
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let seed = name_seed(&format!("{arch}/{name}"));
        let t = if name.contains("bn") || name.contains("downsample.1") {
            (seeded_uniform(seed, &shape) + 0.5).unwrap()
        } else {
            (seeded_normal(seed, &shape) / (fan_in as f64).sqrt()).unwrap()
        };
        tensors.push((name, t));
    }
    panic!("{arch}: no model after 2000 tensors");
}

/// A seed for the tensor called `name` (FNV-1a), so random weights are the same on every run.
fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Uniform draws in [0, 1) from splitmix64 seeded with `seed`.
fn seeded_draws(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
        })
        .collect()
}

/// A tensor of `shape` with uniform values in [0, 1), the same for the same `seed`.
pub fn seeded_uniform(seed: u64, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let values: Vec<f32> = seeded_draws(seed, n)
        .into_iter()
        .map(|u| u as f32)
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// A tensor of `shape` with standard normal values (Box-Muller), the same for the same `seed`.
pub fn seeded_normal(seed: u64, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let u = seeded_draws(seed, n + n % 2);
    let values: Vec<f32> = u
        .chunks(2)
        .flat_map(|p| {
            let radius = (-2.0 * (1.0 - p[0]).ln()).sqrt();
            let angle = std::f64::consts::TAU * p[1];
            [radius * angle.cos(), radius * angle.sin()]
        })
        .take(n)
        .map(|v| v as f32)
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// `|want - got| / |want|` in the Euclidean norm over the whole tensor: one activation that
/// rounds to the other side of a kink moves one position's share of a gradient, a wrong
/// backward moves all of it.
pub fn norm_relative_error(want: &Tensor, got: &Tensor) -> f32 {
    let norm = |t: &Tensor| {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt()
    };
    norm(&(want - got).unwrap()) / norm(want).max(1e-12)
}

/// Writes `model.safetensors` (random `arch` weights) and `config.json` into `dir`; returns the
/// weights path.
pub fn write_random_model(dir: &std::path::Path, arch: &str, size: usize) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&random_weights(arch).into_iter().collect(), &weights).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&model_config_sized(arch, size)).unwrap(),
    )
    .unwrap();
    weights
}

/// A dataset of coloured shapes: class `i` is a disc of colour `i` on a noisy background.
pub fn shapes_dataset(dir: &std::path::Path, classes: &[&str], per_class: usize) {
    use rand::{Rng, SeedableRng};
    let colours = [
        [220u8, 40, 40],
        [40, 60, 220],
        [40, 200, 60],
        [230, 200, 40],
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for (ci, class) in classes.iter().enumerate() {
        let cdir = dir.join(class);
        std::fs::create_dir_all(&cdir).unwrap();
        for i in 0..per_class {
            let (cx, cy, r) = (
                rng.random_range(20.0..44.0),
                rng.random_range(20.0..44.0),
                rng.random_range(8.0..18.0f32),
            );
            let noise: Vec<u8> = (0..64 * 64 * 3).map(|_| rng.random_range(0..60)).collect();
            let img = image::RgbImage::from_fn(64, 64, |x, y| {
                let inside = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) < r * r;
                let k = ((y * 64 + x) * 3) as usize;
                if inside {
                    image::Rgb(colours[ci % colours.len()])
                } else {
                    image::Rgb([noise[k], noise[k + 1], noise[k + 2]])
                }
            });
            img.save(cdir.join(format!("{i}.png"))).unwrap();
        }
    }
}

/// What [`shapes_checkpoint`] made: the dataset, the backbone's weights, the final checkpoint,
/// and what the run printed.
pub struct ShapesRun {
    pub dataset: PathBuf,
    pub weights: PathBuf,
    pub checkpoint: PathBuf,
    pub stdout: Vec<u8>,
}

/// Trains two warm-up epochs (batch 8, Lite0 of random weights) on a [`shapes_dataset`] of
/// `classes` in `dir`, with `extra` flags.
pub fn shapes_checkpoint(
    dir: &std::path::Path,
    classes: &[&str],
    per_class: usize,
    extra: &[&str],
) -> ShapesRun {
    shapes_checkpoint_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_tltui")),
        dir,
        classes,
        per_class,
        extra,
    )
}

/// [`shapes_checkpoint`] run by the `tltui` at `binary` (an installed one), the HF and tltui
/// caches in `dir`.
pub fn shapes_checkpoint_with(
    binary: &std::path::Path,
    dir: &std::path::Path,
    classes: &[&str],
    per_class: usize,
    extra: &[&str],
) -> ShapesRun {
    let dataset = dir.join("shapes");
    shapes_dataset(&dataset, classes, per_class);
    let weights = write_random_model(&dir.join("model"), "tf_efficientnet_lite0", 64);
    let checkpoints = dir.join("checkpoints");
    let out = succeeded(
        std::process::Command::new(binary)
            .arg(&dataset)
            .arg("--headless")
            .arg("--weights")
            .arg(&weights)
            .arg("--checkpoint-dir")
            .arg(&checkpoints)
            .args(["--warmup-epochs", "2", "--finetune-epochs", "0"])
            .args(["--batch-size", "8"])
            .args(extra)
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .env("HF_HOME", dir.join("hf"))
            .env("HF_HUB_OFFLINE", "1"),
    );
    ShapesRun {
        dataset,
        weights,
        checkpoint: checkpoints.join("final.safetensors"),
        stdout: out.stdout,
    }
}

/// Largest difference of `got` from `want`, relative to `want`'s largest magnitude.
pub fn relative_error(want: &Tensor, got: &Tensor) -> f32 {
    let max = |t: &Tensor| {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    max(&(want - got).unwrap()) / max(want).max(1e-6)
}

/// Each class's (or label's) images, train and validation together, from a dataset report's
/// `classes` (`inspect --json`, the `dataset_ready` event), in report order.
pub fn class_totals(report: &serde_json::Value) -> Vec<(String, u64)> {
    report["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let n = c["train"].as_u64().unwrap() + c["val"].as_u64().unwrap();
            (c["name"].as_str().unwrap().to_string(), n)
        })
        .collect()
}

/// Runs `command`, failing the test with its stderr unless it succeeds; its output.
pub fn succeeded(command: &mut std::process::Command) -> std::process::Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A Python that imports onnx, onnxruntime, numpy and PIL (`TLTUI_ONNX_PYTHON`, the CI venv,
/// `python3`), or `None` (reason printed) outside CI.
pub fn onnx_python() -> Option<PathBuf> {
    python_with(
        "TLTUI_ONNX_PYTHON",
        &["onnx", "onnxruntime", "numpy", "PIL"],
    )
}

/// A Python that imports `modules` (the one `variable` names, the CI venv, `python3`), or
/// `None` (reason printed) outside CI; in CI its absence fails the test.
pub fn python_with(variable: &str, modules: &[&str]) -> Option<PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates: Vec<PathBuf> = std::env::var_os(variable)
        .map(PathBuf::from)
        .into_iter()
        .chain([root.join("target/ci-venv/bin/python"), "python3".into()])
        .collect();
    let import = format!("import {}", modules.join(", "));
    for py in &candidates {
        let ok = std::process::Command::new(py)
            .args(["-c", &import])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py.clone());
        }
    }
    skip_outside_ci(&format!(
        "no Python with {} among {candidates:?} (.ci/run installs them; or set {variable})",
        modules.join(", ")
    ));
    None
}

/// Prints why a test skips; in CI, where `.ci/run` installs what the tests need, fails it instead.
pub fn skip_outside_ci(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
}
