//! Each architecture reproduces timm's pooled features: `../shared/reference/archs/NAME` holds
//! seeded random weights (float16) in the Hub layout and timm's outputs for a fixed input.

mod common;

use candle_core::Device;
use tltui::model::{build_backbone, ModelConfig, Params};

/// Runs the folder's `golden.safetensors` `input` through the backbone its `config.json` names
/// and compares the pooled features with timm's.
fn check(folder: &str) {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let dir = shared.join("reference/archs").join(folder);
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let params = Params::load(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let backbone = build_backbone(&config, params).unwrap();
    let golden =
        candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).unwrap();
    let pooled = backbone.forward(&golden["input"], false).unwrap();
    let want = &golden["pooled"];
    assert_eq!(pooled.dims(), want.dims(), "{folder}: pooled shape");
    assert_eq!(backbone.parts().num_features, want.dim(1).unwrap());
    let rel = common::relative_error(want, &pooled);
    println!("{folder}: pooled max error relative to the largest value {rel:.2e}");
    assert!(rel <= 1e-4, "{folder}: relative error {rel}");
}

#[test]
fn mobilenetv1_100() {
    check("mobilenetv1_100.ra4_e3600_r224_in1k");
}

#[test]
fn mobilenetv2_100() {
    check("mobilenetv2_100.ra_in1k");
}

#[test]
fn mobilenetv3_large_100() {
    check("mobilenetv3_large_100.ra_in1k");
}

#[test]
fn efficientnet_b0() {
    check("efficientnet_b0.ra_in1k");
}

#[test]
fn resnet18() {
    check("resnet18.a1_in1k");
}

#[test]
fn convnext_atto() {
    check("convnext_atto.d2_in1k");
}
