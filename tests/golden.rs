//! Numerical agreement with timm: preprocessing and the lite0 backbone against golden tensors.

mod common;

use candle_core::{Device, Tensor};
use tltui::data::decode::decode_rgb;
use tltui::data::Preprocess;
use tltui::model::{build_backbone, Head, ModelConfig, Params};

fn golden(shared: &std::path::Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(
        shared.join("reference/tf_efficientnet_lite0.golden.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn preprocessing_matches_timm_eval_transform() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let config = ModelConfig::from_file(&common::lite0_dir(&shared).join("config.json")).unwrap();
    let prep = Preprocess::from_cfg(&config.pretrained_cfg, 0).unwrap();
    let reference = golden(&shared)["input"].clone();
    for (i, name) in ["test_cat.jpg", "test_dog.jpg"].iter().enumerate() {
        let img = decode_rgb(
            &shared.join("datasets/Dog-Cat-Classifier").join(name),
            u64::MAX,
        )
        .unwrap();
        let ours = Tensor::from_vec(prep.eval(&img), (3, 224, 224), &Device::Cpu).unwrap();
        let mad = (ours - reference.get(i).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        println!("{name}: mean absolute difference {mad:.5}");
        assert!(mad <= 0.02, "{name}: mean absolute difference {mad}");
    }
}

#[test]
fn lite0_reproduces_timm_logits() {
    if let Some(shared) = common::shared_dir() {
        check_lite0_logits(&shared, &Device::Cpu);
    }
}

/// On CUDA the backbone runs the portable ops and candle's CUDA kernels.
#[cfg(feature = "cuda")]
#[test]
fn lite0_reproduces_timm_logits_on_cuda() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    match Device::new_cuda(0) {
        Ok(gpu) => check_lite0_logits(&shared, &gpu),
        Err(e) => println!("skipped: no CUDA device ({e})"),
    }
}

fn check_lite0_logits(shared: &std::path::Path, device: &Device) {
    let dir = common::lite0_dir(shared);
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let params = Params::load(&dir.join("model.safetensors"), device).unwrap();
    let head = Head::from_tensors(
        params.var("classifier.weight").as_tensor(),
        params.var("classifier.bias").as_tensor(),
        0.0,
    )
    .unwrap();
    let backbone = build_backbone(&config, params).unwrap();
    let g = golden(shared);
    let input = g["input"].to_device(device).unwrap();
    let pooled = backbone
        .forward(&input, false)
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    let logits = head
        .forward(
            &pooled.to_device(device).unwrap(),
            None::<&mut rand_chacha::ChaCha8Rng>,
        )
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    for (name, ours) in [("pooled", &pooled), ("logits", &logits)] {
        let reference = &g[name];
        let rel = common::relative_error(reference, ours);
        println!("{device:?} {name}: max error relative to the largest value {rel:.2e}");
        assert!(rel <= 1e-4, "{name}: relative error {rel}");
    }
    let top: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
    assert_eq!(top, vec![281, 207], "tabby cat and golden retriever");
}
