//! Every supported architecture builds from a timm-layout file, runs forward and backward, and
//! counts its parameters as timm does.

mod common;

use candle_core::{DType, Device, Tensor};
use common::model_config as config;
use tltui::model::{build_backbone, Params};

fn check(arch: &str, classifier_params: usize, timm_total: usize) {
    let mut b = build_backbone(
        &config(arch),
        Params::from_tensors(common::random_weights(arch)).unwrap(),
    )
    .unwrap();
    let total: usize = b.parts().groups.iter().map(|g| g.params).sum();
    assert_eq!(
        total + classifier_params,
        timm_total,
        "{arch} parameter count"
    );
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
    let vars = b.trainable_vars();
    assert!(
        vars.iter().all(|(_, v)| grads.get(v.as_tensor()).is_some()),
        "{arch}: every trainable tensor gets a gradient"
    );
    // Frozen: no graph at all.
    for i in 0..b.parts().groups.len() {
        b.set_trainable(i, false);
    }
    let frozen = b.forward(&x, true).unwrap();
    assert!(!frozen.track_op());
    assert_eq!(frozen.dtype(), DType::F32);
}

#[test]
fn resnet18() {
    check("resnet18", 512 * 1000 + 1000, 11_689_512);
}

#[test]
fn resnet34() {
    check("resnet34", 512 * 1000 + 1000, 21_797_672);
}

#[test]
fn resnet50() {
    check("resnet50", 2048 * 1000 + 1000, 25_557_032);
}

#[test]
fn efficientnet_b0() {
    check("efficientnet_b0", 1280 * 1000 + 1000, 5_288_548);
}

#[test]
fn efficientnet_lite_family() {
    check("tf_efficientnet_lite0", 1280 * 1000 + 1000, 4_652_008);
    check("tf_efficientnet_lite2", 1280 * 1000 + 1000, 6_092_072);
}

#[test]
fn mobilenet_families() {
    check("mobilenetv1_100", 1024 * 1000 + 1000, 4_231_976);
    check("mobilenetv2_100", 1280 * 1000 + 1000, 3_504_872);
    check("mobilenetv3_large_100", 1280 * 1000 + 1000, 5_483_032);
    check("tf_mobilenetv3_large_100", 1280 * 1000 + 1000, 5_483_032);
    check("mobilenetv3_small_100", 1024 * 1000 + 1000, 2_542_856);
}

/// A checkpoint deeper or wider than the arch definition sizes the model: here MobileNetV2 with
/// a fifth block in stage 3 and its stem and first block 8 channels wider.
#[test]
fn the_checkpoint_sizes_the_model() {
    let mut weights: std::collections::BTreeMap<String, Tensor> =
        common::random_weights("mobilenetv2_100")
            .into_iter()
            .collect();
    let extra: Vec<(String, Tensor)> = weights
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix("blocks.3.3.")
                .map(|rest| (format!("blocks.3.4.{rest}"), t.clone()))
        })
        .collect();
    let extra_params: usize = extra
        .iter()
        .filter(|(k, _)| !k.contains("running"))
        .map(|(_, t)| t.elem_count())
        .sum();
    weights.extend(extra);
    let widen = |t: &Tensor, dim: usize| {
        let pad = Tensor::ones_like(&t.narrow(dim, 0, 8).unwrap()).unwrap();
        Tensor::cat(&[t, &pad], dim).unwrap()
    };
    for k in [
        "conv_stem.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
    ] {
        weights.insert(k.into(), widen(&weights[k], 0));
    }
    for k in [
        "blocks.0.0.conv_dw.weight",
        "blocks.0.0.bn1.weight",
        "blocks.0.0.bn1.bias",
    ] {
        weights.insert(k.into(), widen(&weights[k], 0));
    }
    for k in ["blocks.0.0.bn1.running_mean", "blocks.0.0.bn1.running_var"] {
        weights.insert(k.into(), widen(&weights[k], 0));
    }
    weights.insert(
        "blocks.0.0.conv_pw.weight".into(),
        widen(&weights["blocks.0.0.conv_pw.weight"], 1),
    );
    let b = build_backbone(
        &config("mobilenetv2_100"),
        Params::from_tensors(weights).unwrap(),
    )
    .unwrap();
    let total: usize = b.parts().groups.iter().map(|g| g.params).sum();
    let widened = 8 * 3 * 3 * 3 + 2 * 8 + 8 * 9 + 2 * 8 + 16 * 8;
    assert_eq!(total, 3_504_872 - 1_281_000 + extra_params + widened);
    let x = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &Device::Cpu).unwrap();
    assert_eq!(b.forward(&x, false).unwrap().dims(), &[1, 1280]);
}

#[test]
fn unsupported_architecture_lists_the_supported_ones() {
    let err = build_backbone(&config("swin_tiny_patch4_window7_224"), Params::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("unsupported")
            && err.contains("resnet50")
            && err.contains("tf_efficientnet_lite0"),
        "{err}"
    );
}

#[test]
fn pretrained_lite0_file_matches_timm_count() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let params = Params::load(
        &common::lite0_dir(&shared).join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(params.count(|_| true), 4_652_008);
}

/// A backbone's hand-written backward agrees with candle's autograd, for every trainable tensor,
/// with all groups trainable and with only the last three.
fn taped_backward_matches_autograd(arch: &str) {
    taped_backward_matches_autograd_at(arch, 64);
}

/// [`taped_backward_matches_autograd`] on inputs of `size` x `size` pixels.
fn taped_backward_matches_autograd_at(arch: &str, size: usize) {
    // Both are f32 sums over every position of the batch through a dozen activation kinks (an
    // activation within rounding of a kink takes the other side's gradient, and a CPU with
    // other vector widths rounds elsewhere): one such position has moved the largest entry of
    // MobileNetV2's last expansion gradient by 1.7e-2, while the tensor's norm moves far less.
    // A wrong backward is off by O(1) in the norm.
    let (worst, dims) = taped_backward_difference(arch, size);
    assert!(
        worst < 1e-3,
        "{arch}: the gradient of a {dims:?} tensor differs by {worst} (relative)"
    );
}

/// The largest relative difference between the taped and autograd gradients of any trainable
/// tensor of `arch` on random weights and `size` x `size` inputs, and that tensor's shape.
fn taped_backward_difference(arch: &str, size: usize) -> (f32, Vec<usize>) {
    let mut worst = (0f32, Vec::new());
    let weights = common::random_weights(arch);
    let x = common::seeded_normal(1, &[2, 3, size, size]);
    let groups = build_backbone(
        &config(arch),
        Params::from_tensors(weights.clone()).unwrap(),
    )
    .unwrap()
    .parts()
    .groups
    .len();
    for trainable_from in [0, groups - 3] {
        let mut b = build_backbone(
            &config(arch),
            Params::from_tensors(weights.clone()).unwrap(),
        )
        .unwrap();
        for i in 0..b.parts().groups.len() {
            b.set_trainable(i, i >= trainable_from);
        }
        let features = b.parts().num_features;
        let r = common::seeded_normal(2, &[2, features]);
        let auto_features = b.forward(&x, true).unwrap();
        let reference = auto_features
            .mul(&r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (features, tape) = b.forward_taped(&x).expect("a taped path").unwrap();
        let diff = (&features - &auto_features)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "features differ by {diff}");
        let fvar = candle_core::Var::from_tensor(&features).unwrap();
        let mut grads = fvar
            .as_tensor()
            .mul(&r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = grads.get(fvar.as_tensor()).unwrap().clone();
        b.backward_taped(tape, &g, &mut grads).unwrap();
        let vars = b.trainable_vars();
        assert!(!vars.is_empty());
        for (_, v) in vars {
            let want = reference.get(v.as_tensor()).expect("autograd gradient");
            let got = grads.get(v.as_tensor()).expect("taped gradient");
            let err = common::norm_relative_error(want, got);
            if err > worst.0 {
                worst = (err, v.dims().to_vec());
            }
        }
    }
    println!("{arch}: largest relative difference {:.2e}", worst.0);
    worst
}

#[test]
fn lite_taped_backward_matches_autograd() {
    taped_backward_matches_autograd("tf_efficientnet_lite0");
}

#[test]
fn mobilenet_v1_v2_taped_backward_matches_autograd() {
    taped_backward_matches_autograd("mobilenetv1_100");
    taped_backward_matches_autograd("mobilenetv2_100");
}

/// Hard-swish, SiLU, squeeze-excite, MobileNetV3's pooled `conv_head` and its `cn` block.
#[test]
fn squeeze_excite_taped_backward_matches_autograd() {
    taped_backward_matches_autograd("mobilenetv3_large_100");
    taped_backward_matches_autograd("mobilenetv3_small_100");
    taped_backward_matches_autograd("efficientnet_b0");
}

/// On CUDA a training pass goes through candle's graph and the portable ops; its gradients
/// agree with the CPU's hand-written backward.
#[cfg(feature = "cuda")]
#[test]
fn lite_training_gradients_on_cuda_match_the_cpu() {
    let Ok(gpu) = Device::new_cuda(0) else {
        println!("skipped: no CUDA device");
        return;
    };
    let weights = common::random_weights("tf_efficientnet_lite0");
    let on = |device: &Device| {
        let tensors = weights
            .iter()
            .map(|(k, t)| (k.clone(), t.to_device(device).unwrap()));
        let mut b = build_backbone(
            &config("tf_efficientnet_lite0"),
            Params::from_tensors(tensors).unwrap(),
        )
        .unwrap();
        for i in 0..b.parts().groups.len() {
            b.set_trainable(i, true);
        }
        b
    };
    let (cpu, cuda) = (on(&Device::Cpu), on(&gpu));
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let r = Tensor::randn(0f32, 1.0, (2, 1280), &Device::Cpu).unwrap();
    let gradients = |b: &dyn tltui::model::Backbone, device: &Device| {
        let pass = tltui::model::TrainingPass::run(b, &x.to_device(device).unwrap(), true).unwrap();
        let mut grads = pass
            .features
            .mul(&r.to_device(device).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        pass.backward(b, &mut grads).unwrap();
        b.trainable_vars()
            .into_iter()
            .map(|(_, v)| {
                grads
                    .get(v.as_tensor())
                    .expect("a gradient")
                    .to_device(&Device::Cpu)
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let (want, got) = (
        gradients(cpu.as_ref(), &Device::Cpu),
        gradients(cuda.as_ref(), &gpu),
    );
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        let err = common::relative_error(w, g);
        assert!(
            err < 1e-3,
            "gradient of a {:?} tensor differs by {err} (relative)",
            w.dims()
        );
    }
}

#[test]
fn convnext_conv_mlp_and_linear_mlp() {
    check("convnext_atto", 320 * 1000 + 1000, 3_695_520);
    check("convnext_tiny", 768 * 1000 + 1000, 28_589_128);
}

/// BatchNorm in inference mode, folded into the convolutions of basic blocks.
#[test]
fn resnet18_taped_backward_matches_autograd() {
    taped_backward_matches_autograd("resnet18");
}

/// Bottleneck blocks. Sixteen of them put 49 ReLUs between the input and the pooled features:
/// on unseeded random weights the two backward passes agree within 5e-6 in about half the runs,
/// and where an activation sits within rounding of its kink (the tape sums its convolutions in
/// another order than candle) the flipped gradient path has put a BatchNorm vector up to 0.18
/// apart. A wrong backward misses on every draw, so one of three draws must come within 5e-2.
#[test]
fn resnet50_taped_backward_matches_autograd() {
    let draws: Vec<(f32, Vec<usize>)> = (0..3)
        .map(|_| taped_backward_difference("resnet50", 64))
        .collect();
    assert!(
        draws.iter().any(|(worst, _)| *worst < 5e-2),
        "every draw differs: {draws:?}"
    );
}

/// ViT's and DINOv2's blocks (DINOv2's layer scale, its patch 14 on a 4x4 grid), the position
/// embeddings resampled.
#[test]
fn vit_taped_backward_matches_autograd() {
    taped_backward_matches_autograd("vit_tiny_patch16_224");
    taped_backward_matches_autograd_at("vit_small_patch14_dinov2", 56);
}

/// ConvNeXt's blocks: depthwise 7x7, channels-last LayerNorm, the MLP with the layer scale.
#[test]
fn convnext_taped_backward_matches_autograd() {
    taped_backward_matches_autograd("convnext_atto");
}
