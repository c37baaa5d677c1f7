//! One binary for every x86-64 CPU: tltui is compiled for baseline x86-64 and its kernels pick
//! AVX-512, AVX2+FMA or the baseline at run time (`src/simd.rs`).
//!
//! 1. Natively, each level that the CPU has (capped with `TLTUI_SIMD`) trains and validates to
//!    the same bits on every family's kernels: vectorising never reorders an operation.
//! 2. Under `qemu-x86_64` emulating a Haswell (AVX2+FMA, no AVX-512) and `qemu64` (SSE2 only),
//!    the same binary starts, reports the level it picked, and predicts what it predicts
//!    natively: the same class, every probability within 1e-4 (the matrix kernels of the `gemm`
//!    crate pick their own level too, and sum in another order).

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const TLTUI: &str = env!("CARGO_BIN_EXE_tltui");

/// The kernels' level a `tltui --version` run reports, e.g. "AVX2+FMA".
fn reported_kernels(version: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&version.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("kernels: "))
        .unwrap_or_else(|| panic!("no kernels line in --version: {text}"))
        .to_string()
}

/// The `validation` events (loss and accuracy, as printed) of a headless run's JSON lines.
fn validations(stdout: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "validation")
        .map(|e| (e["loss"].to_string(), e["accuracy"].to_string()))
        .collect()
}

/// One warm-up epoch then one fine-tune epoch of `weights` on `dataset`, kernels capped at
/// `level`: the validation results.
fn train_at(level: &str, dataset: &Path, weights: &Path, dir: &Path) -> Vec<(String, String)> {
    let out = common::succeeded(
        Command::new(TLTUI)
            .env("TLTUI_SIMD", level)
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .arg(dataset)
            .arg("--headless")
            .arg("--json")
            .arg("--weights")
            .arg(weights)
            .arg("--checkpoint-dir")
            .arg(dir.join(format!("checkpoints-{level}")))
            .args(["--warmup-epochs", "1", "--finetune-epochs", "1"])
            .args(["--batch-size", "4", "--seed", "3"]),
    );
    let found = validations(&out.stdout);
    assert_eq!(found.len(), 2, "{}", String::from_utf8_lossy(&out.stdout));
    found
}

#[test]
fn every_level_trains_to_the_same_bits() {
    let version = common::succeeded(Command::new(TLTUI).arg("--version"));
    let native = reported_kernels(&version);
    let levels: Vec<&str> = match native.as_str() {
        "AVX-512" => vec!["baseline", "avx2", "avx512"],
        "AVX2+FMA" => vec!["baseline", "avx2"],
        _ => {
            eprintln!("skipped: this CPU has only the baseline kernels ({native})");
            return;
        }
    };
    let t = tempfile::tempdir().unwrap();
    let dataset = t.path().join("shapes");
    common::shapes_dataset(&dataset, &["red", "blue"], 6);
    for arch in [
        "tf_efficientnet_lite0",
        "mobilenetv3_large_100",
        "resnet18",
        "convnext_atto",
        "vit_tiny_patch16_224",
    ] {
        let dir = t.path().join(arch);
        let weights = common::write_random_model(&dir.join("model"), arch, 64);
        let runs: Vec<_> = levels
            .iter()
            .map(|level| (level, train_at(level, &dataset, &weights, &dir)))
            .collect();
        for (level, found) in &runs[1..] {
            assert_eq!(
                found, &runs[0].1,
                "{arch}: {level} differs from {}",
                runs[0].0
            );
        }
    }
}

/// `qemu-x86_64`, or `None` (reason printed) outside CI; in CI its absence fails the test.
fn qemu() -> Option<PathBuf> {
    let found = Command::new("qemu-x86_64")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("qemu-x86_64".into());
    }
    common::skip_outside_ci("no qemu-x86_64 on PATH (.ci/run installs Debian's qemu-user)");
    None
}

/// `predict --json --top 2` over `images` (the binary run under `emulator` when given): per
/// image, its path and (class, probability) pairs, most probable first.
fn predictions(
    emulator: Option<(&Path, &str)>,
    checkpoint: &Path,
    images: &Path,
) -> Vec<(String, Vec<(String, f64)>)> {
    let mut command = match emulator {
        Some((qemu, cpu)) => {
            let mut c = Command::new(qemu);
            c.args(["-cpu", cpu, TLTUI]);
            c
        }
        None => Command::new(TLTUI),
    };
    command
        .arg("predict")
        .arg(checkpoint)
        .arg(images)
        .args(["--json", "--top", "2"]);
    let out = common::succeeded(&mut command);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let top = p["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["class"].as_str().unwrap().to_string(),
                        c["probability"].as_f64().unwrap(),
                    )
                })
                .collect();
            (p["path"].as_str().unwrap().to_string(), top)
        })
        .collect()
}

#[test]
fn one_binary_predicts_alike_on_older_cpus() {
    let Some(qemu) = qemu() else { return };
    let t = tempfile::tempdir().unwrap();
    let run = common::shapes_checkpoint(t.path(), &["red", "blue"], 6, &[]);
    let images = run.dataset.join("red");
    let native = predictions(None, &run.checkpoint, &images);
    assert_eq!(native.len(), 6);
    for (cpu, kernels) in [
        ("Haswell", "AVX2+FMA"),
        ("qemu64", "SSE2 (baseline x86-64)"),
    ] {
        let version =
            common::succeeded(Command::new(&qemu).args(["-cpu", cpu, TLTUI, "--version"]));
        assert_eq!(reported_kernels(&version), kernels, "under -cpu {cpu}");
        let emulated = predictions(Some((&qemu, cpu)), &run.checkpoint, &images);
        assert_eq!(emulated.len(), native.len(), "under -cpu {cpu}");
        for ((path, want), (_, got)) in native.iter().zip(&emulated) {
            assert_eq!(want[0].0, got[0].0, "{path} under -cpu {cpu}");
            for ((class, p), (_, q)) in want.iter().zip(got) {
                assert!(
                    (p - q).abs() <= 1e-4,
                    "{path} {class} under -cpu {cpu}: {q} against {p} natively"
                );
            }
        }
    }
}
