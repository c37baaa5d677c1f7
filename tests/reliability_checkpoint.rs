//! Checkpoint faults: a process killed mid-write, a disk that fills, a directory that cannot be
//! written. The previous checkpoint always survives and loads.

use candle_core::{Device, Tensor};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use tltui::config::Config;
use tltui::data::{Preprocess, PretrainedCfg};
use tltui::model::{Head, Params};
use tltui::train::checkpoint::{self, atomic_write_with, Checkpoint, CheckpointMeta};

fn meta(epoch: usize) -> CheckpointMeta {
    let cfg = PretrainedCfg {
        input_size: [3, 32, 32],
        interpolation: "bicubic".into(),
        crop_pct: 0.875,
        crop_mode: "center".into(),
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    CheckpointMeta {
        task: tltui::data::Task::SingleLabel,
        format: checkpoint::FORMAT,
        classes: vec!["a".into(), "b".into()],
        backbone: "test".into(),
        architecture: "resnet18".into(),
        preprocess: Preprocess::from_cfg(&cfg, 0).unwrap(),
        pretrained_cfg: cfg,
        phase: None,
        epoch,
        val_accuracy: None,
        class_root: "data".into(),
        val_fraction: 0.2,
        seed: 0,
        config: Config::default(),
        record: Default::default(),
        recipe: None,
    }
}

/// Checkpoint bytes whose weights all equal `value`.
fn bytes(value: f32) -> Vec<u8> {
    let dev = Device::Cpu;
    let params = Params::from_tensors([(
        "w".to_string(),
        Tensor::full(value, (256, 256), &dev).unwrap(),
    )])
    .unwrap();
    let head = Head::from_tensors(
        &Tensor::full(value, (2, 4), &dev).unwrap(),
        &Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap(),
        0.0,
    )
    .unwrap();
    checkpoint::serialize(&params, &head, &meta(value as usize)).unwrap()
}

fn loads_with(path: &Path, value: f32) {
    let c = Checkpoint::load(path, &Device::Cpu).expect("the previous checkpoint loads");
    let w = c
        .params
        .var("w")
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(w.iter().all(|v| *v == value));
    assert_eq!(c.meta.epoch, value as usize);
}

/// Run by `killed_mid_write_keeps_the_previous_checkpoint` in a child process: writes a good
/// checkpoint, then starts another whose writer stalls halfway, waiting to be killed.
#[test]
#[ignore = "helper: runs in a child process that the parent kills"]
fn child_writer() {
    let Ok(dir) = std::env::var("TLTUI_CHILD_WRITER_DIR") else {
        return;
    };
    let path = Path::new(&dir).join("best.safetensors");
    checkpoint::atomic_write(&path, &bytes(1.0)).unwrap();
    let _ = atomic_write_with(&path, &bytes(2.0), |f, b| {
        f.write_all(&b[..b.len() / 2])?;
        f.flush()?;
        std::fs::write(Path::new(&dir).join("halfway"), b"")?;
        std::thread::sleep(Duration::from_secs(60));
        f.write_all(&b[b.len() / 2..])
    });
}

#[test]
fn killed_mid_write_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--ignored", "--nocapture"])
        .env("TLTUI_CHILD_WRITER_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !dir.path().join("halfway").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the child never reached the write"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let path = dir.path().join("best.safetensors");
    loads_with(&path, 1.0);
    // The next save clears the dead process's temp file and succeeds.
    checkpoint::atomic_write(&path, &bytes(3.0)).unwrap();
    loads_with(&path, 3.0);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
}

#[test]
fn full_disk_is_an_error_and_the_previous_checkpoint_survives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("best.safetensors");
    checkpoint::atomic_write(&path, &bytes(1.0)).unwrap();
    let err = atomic_write_with(&path, &bytes(2.0), |f, b| {
        f.write_all(&b[..1000])?;
        Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
    })
    .unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    loads_with(&path, 1.0);
}

#[test]
fn unwritable_places_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let dev = Device::Cpu;
    let params = Params::from_tensors([(
        "w".to_string(),
        Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap(),
    )])
    .unwrap();
    let head = Head::from_tensors(
        &Tensor::zeros((2, 4), candle_core::DType::F32, &dev).unwrap(),
        &Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap(),
        0.0,
    )
    .unwrap();
    let err = checkpoint::save(&file.join("best.safetensors"), &params, &head, &meta(0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot write checkpoint") && err.contains("plain-file"),
        "{err}"
    );
}
