//! Multi-label end to end with the real binary and Lite0's real weights: a label file of tag
//! lists built from Dog-Cat (single cats, single dogs, cat+dog collages, blank images with no
//! tag) is read as multi-label unasked, trains (warm-up on cached features, then a fine-tune
//! epoch) with a sigmoid head, validates with mAP and per-label thresholds, and the checkpoint
//! goes through `predict`, `eval` and `export`.

mod common;

use image::{imageops::FilterType, Rgb, RgbImage};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Single images per class, collages and blank images of the test set.
const SINGLES: usize = 24;
const COLLAGES: usize = 16;
const BLANKS: usize = 4;

/// A picture squeezed into `w` x `h` without distortion, centred on grey.
fn fitted(path: &Path, w: u32, h: u32) -> RgbImage {
    let img = image::open(path).unwrap().to_rgb8();
    let scale = (w as f32 / img.width() as f32).min(h as f32 / img.height() as f32);
    let (sw, sh) = (
        (img.width() as f32 * scale) as u32,
        (img.height() as f32 * scale) as u32,
    );
    let small = image::imageops::resize(&img, sw.max(1), sh.max(1), FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(w, h, Rgb([128, 128, 128]));
    image::imageops::overlay(
        &mut canvas,
        &small,
        ((w - sw) / 2).into(),
        ((h - sh) / 2).into(),
    );
    canvas
}

/// Writes the images and `labels.csv` (`file_name,tags`) into `dir`.
fn build(train_data: &Path, dir: &Path) {
    let list = |class: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(train_data.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let (cats, dogs) = (list("cat"), list("dog"));
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut csv = String::from("file_name,tags\n");
    for i in 0..SINGLES {
        for (class, files) in [("cat", &cats), ("dog", &dogs)] {
            let name = format!("images/{class}_{i:03}.jpg");
            std::fs::copy(&files[i], dir.join(&name)).unwrap();
            csv.push_str(&format!("{name},{class}\n"));
        }
    }
    for i in 0..COLLAGES {
        let (cat, dog) = (
            fitted(&cats[SINGLES + i], 112, 224),
            fitted(&dogs[SINGLES + i], 112, 224),
        );
        let mut canvas = RgbImage::new(224, 224);
        let (left, right) = if i % 2 == 0 {
            (&cat, &dog)
        } else {
            (&dog, &cat)
        };
        image::imageops::overlay(&mut canvas, left, 0, 0);
        image::imageops::overlay(&mut canvas, right, 112, 0);
        let name = format!("images/collage_{i:03}.jpg");
        canvas.save(dir.join(&name)).unwrap();
        csv.push_str(&format!("{name},\"cat,dog\"\n"));
    }
    for i in 0..BLANKS {
        let shade = 40 + 50 * i as u8;
        let name = format!("images/blank_{i}.png");
        RgbImage::from_pixel(96, 96, Rgb([shade, shade / 2, 200]))
            .save(dir.join(&name))
            .unwrap();
        csv.push_str(&format!("{name},\n"));
    }
    std::fs::write(dir.join("labels.csv"), csv).unwrap();
}

/// Runs the binary offline with `cache` as tltui's cache; fails the test unless it succeeds.
fn run(cache: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    common::succeeded(
        Command::new(env!("CARGO_BIN_EXE_tltui"))
            .args(args)
            .env("XDG_CACHE_HOME", cache)
            .env("HF_HUB_OFFLINE", "1"),
    )
}

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_tag_list_file_trains_a_multi_label_model_that_predicts_evaluates_and_exports() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let dataset = t.path().join("pets");
    build(
        &shared.join("datasets/Dog-Cat-Classifier/Data/Train_Data"),
        &dataset,
    );
    let weights = common::lite0_dir(&shared).join("model.safetensors");
    let checkpoints = t.path().join("checkpoints");
    let cache = t.path().join("cache");
    let os = |s: &str| std::ffi::OsString::from(s);
    let train = run(
        &cache,
        &[
            dataset.as_os_str(),
            &os("--headless"),
            &os("--json"),
            &os("--weights"),
            weights.as_os_str(),
            &os("--checkpoint-dir"),
            checkpoints.as_os_str(),
            &os("--warmup-epochs"),
            &os("4"),
            &os("--finetune-epochs"),
            &os("1"),
            &os("--batch-size"),
            &os("16"),
        ],
    );
    let events = json_lines(&train);
    let ready = events
        .iter()
        .find(|e| e["event"] == "dataset_ready")
        .expect("dataset_ready");
    assert_eq!(ready["task"], "multi_label");
    let counts = common::class_totals(ready);
    let per_label = (SINGLES + COLLAGES) as u64;
    assert_eq!(
        counts,
        vec![("cat".into(), per_label), ("dog".into(), per_label)]
    );
    let untagged = &ready["report"]["multi_label"];
    assert_eq!(
        untagged["train_images"].as_u64().unwrap() + untagged["val_images"].as_u64().unwrap(),
        (2 * SINGLES + COLLAGES + BLANKS) as u64,
        "each image once"
    );
    assert_eq!(
        untagged["untagged_train"].as_u64().unwrap() + untagged["untagged_val"].as_u64().unwrap(),
        BLANKS as u64
    );
    let validations: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "validation")
        .collect();
    assert_eq!(
        validations.len(),
        5,
        "4 warm-up epochs and 1 fine-tune epoch"
    );
    let top = validations.last().unwrap()["top_losses"]
        .as_array()
        .unwrap();
    assert!(
        !top.is_empty(),
        "the worst validation images, with their wrong tags"
    );
    for t in top {
        assert!(t["truth"].is_array() && t["predicted"].is_array(), "{t}");
    }
    let losses: Vec<f64> = top.iter().map(|t| t["loss"].as_f64().unwrap()).collect();
    assert!(
        losses.windows(2).all(|w| w[0] >= w[1]),
        "worst first: {losses:?}"
    );
    let last = &validations.last().unwrap()["multi_label"];
    let map = last["map"].as_f64().unwrap();
    assert!(map > 0.8, "validation mAP {map}: {last}");
    assert_eq!(last["per_label"].as_array().unwrap().len(), 2);
    for key in ["f1_micro", "f1_macro", "exact_match"] {
        assert!(last[key].as_f64().is_some(), "{key} in {last}");
    }

    let ckpt = checkpoints.join("final.safetensors");
    let eval = run(
        &cache,
        &[
            &os("eval"),
            ckpt.as_os_str(),
            dataset.as_os_str(),
            &os("--json"),
        ],
    );
    let eval: Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(eval["task"], "multi_label");
    let eval_map = eval["map"].as_f64().unwrap();
    assert!(
        (eval_map - map).abs() < 1e-4,
        "eval mAP {eval_map} against the last validation's {map}"
    );
    for (e, v) in eval["per_label"]
        .as_array()
        .unwrap()
        .iter()
        .zip(last["per_label"].as_array().unwrap())
    {
        let f32_of = |x: &Value| x.as_f64().unwrap() as f32;
        assert_eq!(
            f32_of(&e["threshold"]),
            f32_of(&v["threshold"]),
            "thresholds are the checkpoint's"
        );
    }

    let images = [
        dataset.join("images/cat_000.jpg"),
        dataset.join("images/dog_000.jpg"),
        dataset.join("images/collage_000.jpg"),
    ];
    let predict = |spec: &Path| -> Vec<Value> {
        let mut args = vec![os("predict"), spec.as_os_str().to_owned(), os("--json")];
        args.extend(images.iter().map(|p| p.as_os_str().to_owned()));
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let out: Value = serde_json::from_slice(&run(&cache, &refs).stdout).unwrap();
        out["predictions"].as_array().unwrap().clone()
    };
    let predictions = predict(&ckpt);
    assert_eq!(predictions.len(), 3);
    for p in &predictions {
        assert!(p["labels"].is_array(), "{p}");
        assert_eq!(
            p["top"].as_array().unwrap().len(),
            2,
            "every label's probability: {p}"
        );
    }
    assert_eq!(predictions[0]["labels"], serde_json::json!(["cat"]));
    assert_eq!(predictions[1]["labels"], serde_json::json!(["dog"]));

    let exported = t.path().join("export");
    run(
        &cache,
        &[&os("export"), ckpt.as_os_str(), exported.as_os_str()],
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(exported.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["problem_type"], "multi_label_classification");
    assert_eq!(config["label_thresholds"].as_array().unwrap().len(), 2);
    assert_eq!(
        predict(&exported),
        predictions,
        "the export predicts as the checkpoint"
    );

    // push: the stand-in receives export's files and a card that says multi-label.
    let stub = common::hub_stub::HubStub::start("none/none", vec![]);
    let token = "hf_stubTokenOfMultiLabel0123456789";
    stub.add_user(token, "alice", &[]);
    common::succeeded(
        Command::new(env!("CARGO_BIN_EXE_tltui"))
            .args([
                os("push"),
                ckpt.clone().into_os_string(),
                os("alice/pets-ml"),
            ])
            .env("XDG_CACHE_HOME", &cache)
            .env("HF_HOME", t.path().join("hf"))
            .env("HF_ENDPOINT", &stub.endpoint)
            .env("HF_TOKEN", token)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("HF_HUB_OFFLINE"),
    );
    let (files, _) = stub.repo("alice/pets-ml").expect("the pushed repository");
    assert_eq!(
        files["config.json"],
        std::fs::read(exported.join("config.json")).unwrap()
    );
    let card = String::from_utf8(files["README.md"].clone()).unwrap();
    assert!(
        card.contains("Multi-label") && card.contains("| cat |"),
        "{card}"
    );
    stub.stop();

    let onnx = t.path().join("onnx");
    run(
        &cache,
        &[
            &os("export"),
            ckpt.as_os_str(),
            onnx.as_os_str(),
            &os("--format"),
            &os("onnx"),
            &os("--with-preprocessing"),
            &os("--softmax"),
        ],
    );
    let Some(py) = common::onnx_python() else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_onnx.py");
    let out = common::succeeded(
        Command::new(py)
            .arg(script)
            .arg(onnx.join("model.onnx"))
            .arg("--images")
            .args(&images),
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["metadata"]["problem_type"],
        "multi_label_classification"
    );
    let thresholds: Vec<f64> =
        serde_json::from_str(report["metadata"]["label_thresholds"].as_str().unwrap()).unwrap();
    assert_eq!(thresholds.len(), 2);
    // onnxruntime's sigmoids: the most probable label and its probability, as `predict` has them.
    for (theirs, ours) in report["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&predictions)
    {
        let top = &ours["top"][0];
        assert_eq!(theirs["class"], top["class"], "{theirs} vs {ours}");
        let (p, q) = (
            theirs["probability"].as_f64().unwrap(),
            top["probability"].as_f64().unwrap(),
        );
        assert!((p - q).abs() <= 1e-4, "onnxruntime {p} vs tltui {q}");
    }
}
