//! Every supported architecture builds from a timm-layout file, runs forward and backward, and
//! counts its parameters as timm does.

mod common;

use candle_core::{DType, Device, Tensor};
use tltui::data::PretrainedCfg;
use tltui::model::{build_backbone, Backbone, ModelConfig, Params};

fn config(arch: &str) -> ModelConfig {
    ModelConfig {
        architecture: arch.to_string(),
        num_features: None,
        pretrained_cfg: PretrainedCfg {
            input_size: [3, 224, 224],
            interpolation: "bicubic".into(),
            crop_pct: 0.875,
            crop_mode: "center".into(),
            mean: [0.5; 3],
            std: [0.5; 3],
        },
    }
}

/// Random weights in timm's layout, found by building the model and adding each tensor its
/// error message asks for (so the test does not restate the architecture).
fn random_backbone(arch: &str) -> Box<dyn Backbone> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for _ in 0..2000 {
        let params = Params::from_tensors(tensors.clone()).unwrap();
        let err = match build_backbone(&config(arch), params) {
            Ok(b) => return b,
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
        let t = if name.ends_with("running_var")
            || name.ends_with("bn1.weight")
            || name.contains(".bn")
        {
            Tensor::rand(0.5f32, 1.5, shape.as_slice(), &Device::Cpu).unwrap()
        } else {
            (Tensor::randn(0f32, 1.0, shape.as_slice(), &Device::Cpu).unwrap()
                / (fan_in as f64).sqrt())
            .unwrap()
        };
        tensors.push((name, t));
    }
    panic!("{arch}: no model after 2000 tensors");
}

fn check(arch: &str, classifier_params: usize, timm_total: usize) {
    let mut b = random_backbone(arch);
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
fn unsupported_architecture_lists_the_supported_ones() {
    let err = build_backbone(&config("vit_base_patch16_224"), Params::default())
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
