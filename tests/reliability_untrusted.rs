//! Untrusted files: only safetensors and JSON are read, and malformed ones (truncated headers,
//! absurd shapes, wrong dtypes, missing keys, broken JSON) are clear errors, never panics or huge
//! allocations. Property tests fuzz the config loader and the checkpoint reader.

mod common;

use candle_core::{Device, Tensor};
use proptest::prelude::*;
use std::path::Path;
use tltui::config::Config;
use tltui::data::Preprocess;
use tltui::model::{build_backbone, ModelConfig, Params};
use tltui::train::checkpoint::Checkpoint;

fn header_file(json: &str) -> Vec<u8> {
    let mut b = (json.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(json.as_bytes());
    b
}

#[test]
fn malformed_weights_are_errors() {
    let dev = Device::Cpu;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated header", b"\x10\x00\x00".to_vec()),
        (
            "header longer than the file",
            header_file("{}")[..5].to_vec(),
        ),
        (
            "absurd shape",
            header_file(
                r#"{"w":{"dtype":"F32","shape":[4000000000,4000000000],"data_offsets":[0,16]}}"#,
            ),
        ),
        ("integer weights", {
            let mut b = header_file(r#"{"w":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#);
            b.extend_from_slice(&[0; 8]);
            b
        }),
        ("not json", header_file("this is not json")),
    ];
    for (what, bytes) in cases {
        assert!(
            Params::from_bytes(&bytes, &dev).is_err(),
            "{what} was accepted"
        );
    }
}

#[test]
fn missing_keys_and_wrong_shapes_name_the_tensor() {
    let mut tensors = common::random_weights("resnet18");
    tensors.retain(|(k, _)| k != "layer3.1.bn2.running_var");
    let err = build_backbone(
        &common::model_config("resnet18"),
        Params::from_tensors(tensors.clone()).unwrap(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("layer3.1.bn2.running_var"), "{err}");
    for (k, t) in tensors.iter_mut() {
        if k == "conv1.weight" {
            *t = Tensor::zeros((64, 3, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        }
    }
    let err = build_backbone(
        &common::model_config("resnet18"),
        Params::from_tensors(tensors).unwrap(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("conv1.weight") && err.contains("shape"),
        "{err}"
    );
}

#[test]
fn malformed_config_json_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("empty", ""),
        (
            "truncated",
            r#"{"architecture": "resnet18", "pretrained_cfg": {"input_size": [3, 224"#,
        ),
        ("no cfg", r#"{"architecture": "resnet18"}"#),
        ("wrong type", r#"{"architecture": 5, "pretrained_cfg": {}}"#),
    ] {
        let p = dir.path().join(format!("{name}.json"));
        std::fs::write(&p, text).unwrap();
        let err = ModelConfig::from_file(&p).unwrap_err().to_string();
        assert!(err.contains(&p.display().to_string()), "{name}: {err}");
    }
    let mut absurd = common::model_config("resnet18");
    absurd.pretrained_cfg.input_size = [3, 1_000_000_000, 1_000_000_000];
    assert!(Preprocess::from_cfg(&absurd.pretrained_cfg, 0).is_err());
}

fn load_bytes(bytes: &[u8]) -> anyhow::Result<Checkpoint> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.safetensors");
    std::fs::write(&p, bytes).unwrap();
    Checkpoint::load(&p, &Device::Cpu)
}

fn valid_checkpoint() -> Vec<u8> {
    use tltui::model::Head;
    let dev = Device::Cpu;
    let params = Params::from_tensors([(
        "w".to_string(),
        Tensor::ones((8, 8), candle_core::DType::F32, &dev).unwrap(),
    )])
    .unwrap();
    let head = Head::from_tensors(
        &Tensor::ones((2, 8), candle_core::DType::F32, &dev).unwrap(),
        &Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap(),
        0.0,
    )
    .unwrap();
    let cfg = common::model_config("resnet18").pretrained_cfg;
    let meta = tltui::train::checkpoint::CheckpointMeta {
        task: tltui::data::Task::SingleLabel,
        format: tltui::train::checkpoint::FORMAT,
        classes: vec!["a".into(), "b".into()],
        backbone: "x".into(),
        architecture: "resnet18".into(),
        preprocess: Preprocess::from_cfg(&cfg, 0).unwrap(),
        pretrained_cfg: cfg,
        phase: None,
        epoch: 0,
        val_accuracy: None,
        class_root: Path::new("d").into(),
        val_fraction: 0.2,
        seed: 0,
        config: Config::default(),
        record: Default::default(),
        recipe: None,
    };
    tltui::train::checkpoint::serialize(&params, &head, &meta).unwrap()
}

#[test]
fn a_valid_checkpoint_loads_and_plain_safetensors_is_refused() {
    assert!(load_bytes(&valid_checkpoint()).is_ok());
    let plain = safetensors::serialize(
        [(
            "w",
            &Tensor::ones(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
        )],
        None,
    )
    .unwrap();
    let err = load_bytes(&plain).err().unwrap().to_string();
    assert!(err.contains("not a tltui checkpoint"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn config_loader_never_panics(text in "\\PC{0,200}") {
        let _ = Config::from_layers(Some((Path::new("fuzz.toml"), &text)));
    }

    #[test]
    fn config_loader_survives_plausible_tables(
        section in prop::sample::select(vec!["data", "augment", "train", "hub", "checkpoint", "other"]),
        key in "[a-z_]{1,16}",
        value in prop::sample::select(vec!["1", "-1", "0.5", "\"x\"", "[1, 2]", "true", "1e400", "{a = 1}"]),
    ) {
        let text = format!("[{section}]\n{key} = {value}\n");
        let _ = Config::from_layers(Some((Path::new("fuzz.toml"), &text)));
    }

    #[test]
    fn checkpoint_reader_never_panics_on_mutations(
        cut in 0usize..4000,
        flips in prop::collection::vec((0usize..4000, any::<u8>()), 0..8),
    ) {
        let mut bytes = valid_checkpoint();
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i % n] ^= b;
        }
        bytes.truncate(cut.max(1).min(bytes.len()));
        let _ = load_bytes(&bytes);
    }

    #[test]
    fn checkpoint_reader_never_panics_on_noise(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(load_bytes(&bytes).is_err());
    }
}
