//! ViT and DINOv2: timm's golden outputs from the seeded float16 weights in
//! `../shared/reference/archs/`, gradients through every trainable tensor (the resampled position
//! embeddings included), and a headless warm-up and fine-tune on a generated dataset.

mod common;

use candle_core::{Device, Tensor};
use common::model_config as config;
use tltui::model::{build_backbone, ModelConfig, Params};

/// Runs the reference model in `folder` on each golden input and compares its pooled features.
fn check_golden(folder: &str, pairs: &[(&str, &str)]) {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let dir = shared.join("reference/archs").join(folder);
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let params = Params::load(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let backbone = build_backbone(&config, params).unwrap();
    let golden =
        candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).unwrap();
    for (input, pooled) in pairs {
        let got = backbone.forward(&golden[*input], false).unwrap();
        let err = common::relative_error(&golden[*pooled], &got);
        println!("{folder} {input} -> {pooled}: max error relative to the largest value {err:.2e}");
        assert!(err <= 1e-4, "{folder} {pooled}: relative error {err}");
    }
}

#[test]
fn vit_tiny_reproduces_timm() {
    check_golden(
        "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
        &[("input", "pooled")],
    );
}

/// At its native 518 px, and at 224 px with the position embeddings resampled from 37x37 to
/// 16x16 patches.
#[test]
fn dinov2_small_reproduces_timm_at_518_and_224() {
    check_golden(
        "vit_small_patch14_dinov2.lvd142m",
        &[("input", "pooled"), ("input_224", "pooled_224")],
    );
}

/// Builds `arch` from random weights, checks the parameter count against timm's (without the
/// classifier), then at 64 px (position embeddings resampled) every trainable tensor gets a
/// gradient, and a frozen backbone records no graph.
fn check_gradients(arch: &str, timm_params: usize) {
    let mut b = build_backbone(
        &config(arch),
        Params::from_tensors(common::random_weights(arch)).unwrap(),
    )
    .unwrap();
    let groups = &b.parts().groups;
    assert_eq!(
        groups.iter().map(|g| g.params).sum::<usize>(),
        timm_params,
        "{arch} parameter count"
    );
    assert_eq!(groups.len(), 8, "patch embed, six block groups, norm");
    for i in 0..b.parts().groups.len() {
        b.set_trainable(i, true);
    }
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let features = b.forward(&x, true).unwrap();
    assert_eq!(features.dims(), &[2, b.parts().num_features]);
    let grads = features
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (_, v) in b.trainable_vars() {
        let g = grads.get(v.as_tensor());
        assert!(
            g.is_some_and(|g| g
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0),
            "{arch}: a {:?} tensor gets no gradient",
            v.dims()
        );
    }
    for i in 0..b.parts().groups.len() {
        b.set_trainable(i, false);
    }
    assert!(!b.forward(&x, true).unwrap().track_op());
}

#[test]
fn vit_tiny_gradients_reach_every_trainable_tensor() {
    check_gradients("vit_tiny_patch16_224", 5_524_416);
}

#[test]
fn dinov2_small_gradients_reach_every_trainable_tensor() {
    check_gradients("vit_small_patch14_dinov2", 22_056_192);
}

/// DINOv2 runs at 224 px on the CPU unless a size is asked for, and says so.
#[test]
fn dinov2_defaults_to_224_on_the_cpu() {
    let mut dinov2 = config("vit_small_patch14_dinov2");
    dinov2.pretrained_cfg.input_size = [3, 518, 518];
    let (size, note) = dinov2.image_size(0, &Device::Cpu);
    assert_eq!(size, 224);
    assert!(note.is_some_and(|n| n.contains("518")));
    assert_eq!(dinov2.image_size(336, &Device::Cpu), (336, None));
    assert_eq!(
        config("vit_tiny_patch16_224").image_size(0, &Device::Cpu),
        (0, None)
    );
}

/// A random-weight ViT at 64 px (4x4 patches) warms up and fine-tunes headlessly: every batch
/// loss is finite, the warm-up's falls, and fine-tuning every group keeps it below where it began.
#[test]
fn vit_tiny_warms_up_and_fine_tunes() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("shapes");
    common::shapes_dataset(&dataset, &["red", "blue", "green"], 16);
    let weights = common::write_random_model(&dir.path().join("model"), "vit_tiny_patch16_224", 64);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[train]\nwarmup_lr = 0.01\ndropout = 0.0\n[augment]\nfinetune = false\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tltui"))
        .arg(&dataset)
        .args(["--headless", "--json", "--weights"])
        .arg(&weights)
        .arg("--config")
        .arg(&config)
        .arg("--checkpoint-dir")
        .arg(dir.path().join("checkpoints"))
        .args(["--warmup-epochs", "12", "--finetune-epochs", "2"])
        .args(["--val-fraction", "0.25", "--batch-size", "8"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batches: Vec<(String, u64, f64)> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "batch")
        .map(|e| {
            (
                e["phase"].as_str().unwrap().to_string(),
                e["epoch"].as_u64().unwrap(),
                e["loss"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(batches.iter().all(|(_, _, l)| l.is_finite()), "{batches:?}");
    let mean = |phase: &str, epoch: u64| {
        let l: Vec<f64> = batches
            .iter()
            .filter(|(p, e, _)| p == phase && *e == epoch)
            .map(|(_, _, l)| *l)
            .collect();
        assert!(!l.is_empty(), "no {phase} epoch {epoch} in {batches:?}");
        l.iter().sum::<f64>() / l.len() as f64
    };
    let (first, warm, tuned) = (mean("warmup", 1), mean("warmup", 12), mean("finetune", 2));
    println!(
        "mean batch loss: warm-up epoch 1 {first:.3}, epoch 12 {warm:.3}, fine-tune epoch 2 {tuned:.3}"
    );
    assert!(warm < first && tuned < first, "{batches:?}");
}
