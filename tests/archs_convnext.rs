//! A random-weight ConvNeXt warms up and fine-tunes (its agreement with timm is checked in
//! `archs_golden.rs`).

mod common;

use std::process::Command;

/// A headless warm-up and fine-tune on generated shapes with a random-weight ConvNeXt: every
/// loss is finite and the fine-tune epochs end lower than the warm-up began.
#[test]
fn random_convnext_warms_up_and_fine_tunes_headless() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("shapes");
    common::shapes_dataset(&dataset, &["red", "blue"], 16);
    let weights = common::write_random_model(&dir.path().join("model"), "convnext_atto", 64);
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[train]\nwarmup_lr = 0.01\ndropout = 0.0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tltui"))
        .arg(&dataset)
        .args(["--headless", "--json", "--weights"])
        .arg(&weights)
        .arg("--checkpoint-dir")
        .arg(dir.path().join("checkpoints"))
        .arg("--config")
        .arg(&config)
        .args(["--warmup-epochs", "8", "--finetune-epochs", "2"])
        .args(["--val-fraction", "0.25", "--batch-size", "8"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let mut losses: Vec<(String, u64, f64)> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["event"] == "batch" {
            let loss = e["loss"].as_f64().unwrap_or(f64::NAN);
            assert!(loss.is_finite(), "non-finite loss in {line}");
            let phase = e["phase"].as_str().unwrap().to_string();
            losses.push((phase, e["epoch"].as_u64().unwrap(), loss));
        }
    }
    let mean = |phase: &str, epoch: u64| {
        let l: Vec<f64> = losses
            .iter()
            .filter(|(p, e, _)| p == phase && *e == epoch)
            .map(|(_, _, l)| *l)
            .collect();
        assert!(!l.is_empty(), "no {phase} batches in epoch {epoch}");
        l.iter().sum::<f64>() / l.len() as f64
    };
    let (first, warm_end, tuned) = (mean("warmup", 1), mean("warmup", 8), mean("finetune", 2));
    println!("mean loss: warm-up epoch 1 {first:.4}, epoch 8 {warm_end:.4}, fine-tune epoch 2 {tuned:.4}");
    assert!(warm_end < first, "warm-up loss did not fall");
    assert!(tuned < first, "fine-tune loss did not fall below the start");
}

/// A ConvNeXt name outside timm's table is sized from its checkpoint: atto's weights under
/// another name give atto's output, and a stage one block shorter builds with that depth.
#[test]
fn convnext_variants_are_sized_from_the_checkpoint() {
    use candle_core::{Device, Tensor};
    use tltui::model::{build_backbone, Params};
    let weights = common::random_weights("convnext_atto");
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let pooled = |arch: &str, tensors: Vec<(String, Tensor)>| {
        let params = Params::from_tensors(tensors).unwrap();
        build_backbone(&common::model_config(arch), params)
            .and_then(|b| Ok(b.forward(&x, false)?))
            .map(|y| y.flatten_all().unwrap().to_vec1::<f32>().unwrap())
    };
    let atto = pooled("convnext_atto", weights.clone()).unwrap();
    assert_eq!(pooled("convnext_large", weights.clone()).unwrap(), atto);
    let shorter: Vec<_> = weights
        .into_iter()
        .filter(|(k, _)| !k.starts_with("stages.2.blocks.5."))
        .collect();
    assert!(
        pooled("convnext_atto", shorter.clone()).is_err(),
        "timm's atto has six blocks in stage 2"
    );
    let y = pooled("convnext_custom", shorter).unwrap();
    assert!(y.iter().all(|v| v.is_finite()) && y != atto);
}
