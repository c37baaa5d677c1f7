//! `predict`, `eval` and `export` on a checkpoint trained on a small generated dataset.

mod common;

use std::path::Path;
use std::process::Command;

fn tltui(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tltui"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn predict_eval_and_export_agree_with_training() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("shapes");
    common::shapes_dataset(&dataset, &["red", "blue"], 16);
    let weights =
        common::write_random_model(&dir.path().join("model"), "tf_efficientnet_lite0", 64);
    let checkpoints = dir.path().join("checkpoints");
    let os = |s: &str| std::ffi::OsString::from(s);
    let (ok, out, err) = tltui(&[
        dataset.as_os_str(),
        &os("--headless"),
        &os("--json"),
        &os("--weights"),
        weights.as_os_str(),
        &os("--checkpoint-dir"),
        checkpoints.as_os_str(),
        &os("--warmup-epochs"),
        &os("2"),
        &os("--finetune-epochs"),
        &os("0"),
        &os("--val-fraction"),
        &os("0.25"),
        &os("--batch-size"),
        &os("8"),
    ]);
    assert!(ok, "{err}");
    let summary = json(out.lines().last().unwrap());
    let reported = summary["warmup_val_accuracy"].as_f64().unwrap();
    let ckpt = checkpoints.join("final.safetensors");

    // eval on the checkpoint's own split gives what training reported.
    let (ok, out, err) = tltui(&[
        &os("eval"),
        ckpt.as_os_str(),
        dataset.as_os_str(),
        &os("--json"),
    ]);
    assert!(ok, "{err}");
    let eval = json(&out);
    assert!(
        (eval["accuracy"].as_f64().unwrap() - reported).abs() < 1e-6,
        "{eval} vs {reported}"
    );
    assert_eq!(eval["images"], 8);
    let confusion: Vec<Vec<u64>> = serde_json::from_value(eval["confusion"].clone()).unwrap();
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 8);
    let wrong: u64 = (0..2).map(|i| confusion[i][1 - i]).sum();
    assert_eq!(eval["mistakes"].as_array().unwrap().len() as u64, wrong);

    // predict walks a directory, reports an unreadable file and keeps going.
    let broken = dataset.join("red").join("broken.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let (ok, out, err) = tltui(&[
        &os("predict"),
        ckpt.as_os_str(),
        dataset.as_os_str(),
        &os("--top"),
        &os("2"),
        &os("--json"),
    ]);
    assert!(ok, "{err}");
    let p = json(&out);
    let predictions = p["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 32);
    for pr in predictions {
        let top = pr["top"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        let sum: f64 = top.iter().map(|c| c["probability"].as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4);
    }
    let skipped = p["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0]["path"].as_str().unwrap().ends_with("broken.png"));

    // export: timm's key names and a config naming the classes.
    let export = dir.path().join("export");
    let (ok, _, err) = tltui(&[&os("export"), ckpt.as_os_str(), export.as_os_str()]);
    assert!(ok, "{err}");
    let config = json(&std::fs::read_to_string(export.join("config.json")).unwrap());
    assert_eq!(config["architecture"], "tf_efficientnet_lite0");
    assert_eq!(config["num_classes"], 2);
    assert_eq!(config["label_names"], serde_json::json!(["blue", "red"]));
    let exported =
        candle_core::safetensors::load(export.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let trained =
        candle_core::safetensors::load(Path::new(&ckpt), &candle_core::Device::Cpu).unwrap();
    assert_eq!(exported["classifier.weight"].dims(), &[2, 1280]);
    assert!(exported.contains_key("conv_stem.weight") && exported.contains_key("bn1.running_mean"));
    for (k, v) in &exported {
        let diff = (v - &trained[k])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{k} changed");
    }
}
