//! ViT and DINOv2: timm's golden outputs from the seeded float16 weights in
//! `../shared/reference/archs/`, gradients through every trainable tensor (the resampled position
//! embeddings included), a headless warm-up and fine-tune on a generated dataset, ViTs outside
//! timm's table sized from their checkpoint, and the variants this ViT does not compute refused.

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

/// Pooled features of `arch` built from `tensors` on `x`, or the build's error.
fn pooled(arch: &str, tensors: Vec<(String, Tensor)>, x: &Tensor) -> anyhow::Result<Vec<f32>> {
    let backbone = build_backbone(&config(arch), Params::from_tensors(tensors)?)?;
    Ok(backbone.forward(x, false)?.flatten_all()?.to_vec1()?)
}

/// ViT-Tiny's reference weights under names outside the table (one with its size word, one
/// without, whose heads are the width over 64) are sized from the checkpoint and give the table
/// name's output bit for bit.
#[test]
fn vit_names_outside_the_table_are_sized_from_the_checkpoint() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let dir = shared.join("reference/archs/vit_tiny_patch16_224.augreg_in21k_ft_in1k");
    let tensors: Vec<(String, Tensor)> =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .collect();
    let golden =
        candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).unwrap();
    let x = &golden["input"];
    let table = pooled("vit_tiny_patch16_224", tensors.clone(), x).unwrap();
    for arch in ["vit_tiny_patch16_224_custom", "vit_custom"] {
        assert_eq!(pooled(arch, tensors.clone(), x).unwrap(), table, "{arch}");
    }
}

/// `weights` with `keep` applied to each tensor (`None` drops it) and random `extra` tensors
/// added.
fn edited(
    weights: &[(String, Tensor)],
    keep: impl Fn(&str, Tensor) -> Option<Tensor>,
    extra: &[(&str, &[usize])],
) -> Vec<(String, Tensor)> {
    let mut tensors: Vec<(String, Tensor)> = weights
        .iter()
        .filter_map(|(k, t)| keep(k, t.clone()).map(|t| (k.clone(), t)))
        .collect();
    for (name, shape) in extra {
        tensors.push((
            name.to_string(),
            Tensor::randn(0f32, 0.02, *shape, &Device::Cpu).unwrap(),
        ));
    }
    tensors
}

/// A checkpoint with its last block removed builds with depth 11 under a name outside the table,
/// and is refused under timm's name (ViT-Tiny has 12 blocks); an MLP three times as wide as the
/// embedding (not timm's four) builds under both.
#[test]
fn vit_depth_and_mlp_width_come_from_the_checkpoint() {
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let tiny = common::random_weights("vit_tiny_patch16_224");
    let full = edited(&tiny, |_, t| Some(t), &[]);
    let shorter = edited(
        &tiny,
        |k, t| (!k.starts_with("blocks.11.")).then_some(t),
        &[],
    );
    let err = pooled("vit_tiny_patch16_224", shorter.clone(), &x).unwrap_err();
    assert!(err.to_string().contains("blocks.11."), "{err}");
    let y = pooled("vit_tiny_patch16_224_custom", shorter, &x).unwrap();
    assert!(y.iter().all(|v| v.is_finite()));
    assert_ne!(y, pooled("vit_tiny_patch16_224_custom", full, &x).unwrap());

    let (d, hidden) = (192, 3 * 192);
    let narrow = edited(
        &tiny,
        |k, t| {
            let shape: Option<&[usize]> = if k.ends_with("mlp.fc1.weight") {
                Some(&[hidden, d])
            } else if k.ends_with("mlp.fc1.bias") {
                Some(&[hidden])
            } else if k.ends_with("mlp.fc2.weight") {
                Some(&[d, hidden])
            } else {
                None
            };
            Some(shape.map_or(t, |s| Tensor::randn(0f32, 0.05, s, &Device::Cpu).unwrap()))
        },
        &[],
    );
    for arch in ["vit_tiny_patch16_224", "vit_tiny_mlp3_custom"] {
        let y = pooled(arch, narrow.clone(), &x).unwrap();
        assert!(y.iter().all(|v| v.is_finite()), "{arch}");
    }
}

/// Weights of the variants this ViT does not compute are refused, under timm's name and under
/// one outside the table, with a message that says why.
#[test]
fn vit_variants_it_does_not_compute_are_refused() {
    let x = Tensor::randn(0f32, 1.0, (1, 3, 32, 32), &Device::Cpu).unwrap();
    let tiny = common::random_weights("vit_tiny_patch16_224");
    let d = 192;
    let cases: Vec<(&str, Vec<(String, Tensor)>)> = vec![
        (
            "register tokens",
            edited(&tiny, |_, t| Some(t), &[("reg_token", &[1, 4, d])]),
        ),
        (
            "distillation token",
            edited(&tiny, |_, t| Some(t), &[("dist_token", &[1, 1, d])]),
        ),
        (
            "no class token",
            edited(&tiny, |k, t| (k != "cls_token").then_some(t), &[]),
        ),
        (
            "fc_norm",
            edited(
                &tiny,
                |_, t| Some(t),
                &[("fc_norm.weight", &[d]), ("fc_norm.bias", &[d])],
            ),
        ),
        (
            "norm_pre",
            edited(
                &tiny,
                |_, t| Some(t),
                &[("norm_pre.weight", &[d]), ("norm_pre.bias", &[d])],
            ),
        ),
        (
            "qkv_bias=False",
            edited(
                &tiny,
                |k, t| (!k.ends_with("attn.qkv.bias")).then_some(t),
                &[],
            ),
        ),
        (
            "no_embed_class",
            edited(
                &tiny,
                |k, t| {
                    Some(if k == "pos_embed" {
                        t.narrow(1, 1, 196).unwrap()
                    } else {
                        t
                    })
                },
                &[],
            ),
        ),
        (
            "gated MLP",
            edited(
                &tiny,
                |k, t| {
                    Some(if k.ends_with("mlp.fc2.weight") {
                        Tensor::randn(0f32, 0.05, (d, 2 * d), &Device::Cpu).unwrap()
                    } else {
                        t
                    })
                },
                &[],
            ),
        ),
        (
            "\"blocks.0.attn.q_norm.weight\"",
            edited(
                &tiny,
                |_, t| Some(t),
                &[("blocks.0.attn.q_norm.weight", &[64])],
            ),
        ),
    ];
    for (reason, tensors) in cases {
        for arch in ["vit_tiny_patch16_224", "vit_tiny_patch16_224_custom"] {
            let err = pooled(arch, tensors.clone(), &x).unwrap_err().to_string();
            assert!(err.contains(reason), "{arch}, {reason}: {err}");
        }
    }
    let with_head = edited(
        &tiny,
        |_, t| Some(t),
        &[
            ("head.weight", &[10, d]),
            ("head.bias", &[10]),
            ("mask_token", &[1, d]),
        ],
    );
    assert!(pooled("vit_tiny_patch16_224_custom", with_head, &x).is_ok());
}
