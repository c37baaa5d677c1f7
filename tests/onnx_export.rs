//! `tltui export --format onnx`: the exported graph, run by onnxruntime, computes what tltui
//! computes; the ONNX checker accepts every file; class names and preprocessing travel in the
//! metadata. onnxruntime runs through `scripts/check_onnx.py` (Python with onnx, onnxruntime,
//! numpy and pillow, which `.ci/run` installs): from `TLTUI_ONNX_PYTHON`, else
//! `target/onnx-venv/bin/python`, else `python3`. Without them the tests print why they skip,
//! except under `CI`, where they fail.
//!
//! "Within 1e-4 relative" is per output tensor: max |onnx - tltui| / max |tltui|.

mod common;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::process::Command;
use tltui::data::Preprocess;
use tltui::model::{build_backbone, Head, ModelConfig, Params};
use tltui::onnx::{model_bytes, Info, Options};

/// Runs `scripts/check_onnx.py MODEL ARGS...` and parses its JSON report.
fn check_onnx(py: &Path, model: &Path, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_onnx.py");
    let out = Command::new(py)
        .arg(script)
        .arg(model)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check_onnx.py {}: {}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes `t` (f32) as a NumPy `.npy` file.
fn write_npy(path: &Path, t: &Tensor) {
    let shape: Vec<String> = t.dims().iter().map(|d| format!("{d}, ")).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
        shape.concat()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    let data: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

/// Reads a little-endian f32 `.npy` file written by NumPy, as a tensor of `shape`.
fn read_npy(path: &Path, shape: &[usize]) -> Tensor {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + header_len]);
    assert!(header.contains("'<f4'"), "{header}");
    let data: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// Five different images from the golden pair: cat, dog, the cat mirrored, the dog at half
/// contrast, their mean.
fn batch_of_five(pair: &Tensor) -> Tensor {
    let (cat, dog) = (pair.narrow(0, 0, 1).unwrap(), pair.narrow(0, 1, 1).unwrap());
    let w = cat.dim(3).unwrap();
    let rev: Vec<u32> = (0..w as u32).rev().collect();
    let rev = Tensor::from_vec(rev, w, &Device::Cpu).unwrap();
    let mirrored = cat.index_select(&rev, 3).unwrap();
    let half = (&dog * 0.5).unwrap();
    let mean = ((&cat + &dog).unwrap() * 0.5).unwrap();
    Tensor::cat(&[&cat, &dog, &mirrored, &half, &mean], 0).unwrap()
}

/// Exports the backbone in `dir` (with a seeded random head of 7 classes) and compares
/// onnxruntime's logits with tltui's at batch 1 and batch 5.
fn check_arch(py: &Path, dir: &Path, golden: &Path, golden_input: &str, size: usize) {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    config.pretrained_cfg.input_size = [3, size, size];
    let params = Params::load(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let backbone = build_backbone(&config, params).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let c = backbone.parts().num_features;
    let head = Head::new(c, 7, 0.0, &mut rng, &Device::Cpu).unwrap();
    let classes: Vec<String> = (0..7).map(|i| format!("class {i} ü")).collect();
    let preprocess = Preprocess::from_cfg(&config.pretrained_cfg, 0).unwrap();
    let info = Info::new(
        backbone.as_ref(),
        classes.clone(),
        &preprocess,
        &config.pretrained_cfg,
    )
    .with_source(Some(format!("timm/{name}")), None);
    let started = std::time::Instant::now();
    let bytes = model_bytes(backbone.as_ref(), &head, &info, Options::default()).unwrap();
    let export_s = started.elapsed().as_secs_f64();
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.onnx");
    std::fs::write(&model, &bytes).unwrap();

    let golden = candle_core::safetensors::load(golden, &Device::Cpu)
        .unwrap()
        .remove(golden_input)
        .unwrap();
    let five = batch_of_five(&golden);
    let inputs = [("batch1", five.narrow(0, 0, 1).unwrap()), ("batch5", five)];
    let mut args = Vec::new();
    for (stem, x) in &inputs {
        let path = tmp.path().join(format!("{stem}.npy"));
        write_npy(&path, x);
        args.extend([std::ffi::OsString::from("--run"), path.into_os_string()]);
    }
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let report = check_onnx(py, &model, &args);
    assert_eq!(report["checked"], true);
    assert_eq!(report["input"], "input");
    let meta = &report["metadata"];
    let labels: Vec<String> = serde_json::from_str(meta["label_names"].as_str().unwrap()).unwrap();
    assert_eq!(labels, classes, "{name}: label_names");
    assert_eq!(meta["architecture"], config.architecture.as_str());
    assert_eq!(meta["input_size"], format!("[3,{size},{size}]"));

    for (stem, x) in &inputs {
        let want = head
            .forward(
                &backbone.forward(x, false).unwrap(),
                None::<&mut rand_chacha::ChaCha8Rng>,
            )
            .unwrap();
        let got = read_npy(&tmp.path().join(format!("{stem}.logits.npy")), want.dims());
        let rel = common::relative_error(&want, &got);
        println!(
            "{name} {stem}: logits relative error {rel:.2e}; export {export_s:.2} s, {:.1} MB",
            bytes.len() as f64 / 1e6
        );
        assert!(rel <= 1e-4, "{name} {stem}: relative error {rel}");
    }
}

#[test]
fn every_architecture_matches_onnxruntime_at_batch_1_and_5() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let Some(py) = common::onnx_python() else {
        return;
    };
    let golden = shared.join("reference/tf_efficientnet_lite0.golden.safetensors");
    check_arch(&py, &common::lite0_dir(&shared), &golden, "input", 224);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(shared.join("reference/archs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("golden.safetensors").exists())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 8, "{dirs:?}");
    for dir in dirs {
        let dinov2 = dir.to_string_lossy().contains("dinov2");
        // DINOv2 at 224 px (its CPU default): the resampled position embeddings are baked in.
        let (input, size) = if dinov2 {
            ("input_224", 224)
        } else {
            ("input", 0)
        };
        let size = if size == 0 {
            ModelConfig::from_file(&dir.join("config.json"))
                .unwrap()
                .pretrained_cfg
                .input_size[1]
        } else {
            size
        };
        check_arch(&py, &dir, &dir.join("golden.safetensors"), input, size);
    }
}

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

/// The pretrained Lite0 with its ImageNet classifier as a directory `tltui export` writes:
/// `model.safetensors` and a `config.json` naming the 1000 classes (281 "tabby", 207 "golden
/// retriever", the others by index).
fn imagenet_export_dir(shared: &Path, dir: &Path) -> PathBuf {
    let src = common::lite0_dir(shared);
    let out = dir.join("lite0-imagenet");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(src.join("model.safetensors"), out.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let names: Vec<String> = (0..1000)
        .map(|i| match i {
            281 => "tabby".to_string(),
            207 => "golden retriever".to_string(),
            _ => format!("imagenet {i}"),
        })
        .collect();
    config["label_names"] = serde_json::json!(names);
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    out
}

/// (class, probability) of each image in `predict --json`'s output, by path.
fn predicted(json: &str) -> Vec<(String, String, f64)> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_string(),
                p["top"][0]["class"].as_str().unwrap().to_string(),
                p["top"][0]["probability"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Exports `spec` with the preprocessing inside, runs onnxruntime on `images` resized as the
/// README says, and compares class and probability with `tltui predict`; returns the largest
/// probability difference.
fn agree_with_predict(py: &Path, spec: &Path, out: &Path, images: &[PathBuf]) -> f64 {
    agree_on(py, spec, out, images, images, "--images")
}

/// [`agree_with_predict`] with onnxruntime fed `fed` (`mode` `--cropped`: images that are the
/// eval transform's resize and crop of `images`).
fn agree_on(
    py: &Path,
    spec: &Path,
    out: &Path,
    images: &[PathBuf],
    fed: &[PathBuf],
    mode: &str,
) -> f64 {
    let os = std::ffi::OsStr::new;
    let (ok, _, err) = tltui(&[
        os("export"),
        spec.as_os_str(),
        out.as_os_str(),
        os("--format"),
        os("onnx"),
        os("--with-preprocessing"),
        os("--softmax"),
    ]);
    assert!(ok, "{err}");
    let mut args = vec![os("predict"), spec.as_os_str(), os("--json")];
    args.extend(images.iter().map(|p| p.as_os_str()));
    let (ok, json, err) = tltui(&args);
    assert!(ok, "{err}");
    let ours = predicted(&json);
    let mut args = vec![os(mode)];
    args.extend(fed.iter().map(|p| p.as_os_str()));
    let report = check_onnx(py, &out.join("model.onnx"), &args);
    assert_eq!(report["input"], "pixels");
    assert_eq!(
        report["outputs"],
        serde_json::json!(["logits", "probabilities"])
    );
    let theirs = report["predictions"].as_array().unwrap();
    assert_eq!(theirs.len(), ours.len());
    let mut worst = 0f64;
    for (((path, class, p), t), f) in ours.iter().zip(theirs).zip(fed) {
        assert_eq!(t["path"].as_str().unwrap(), f.to_str().unwrap());
        assert_eq!(
            t["class"].as_str().unwrap(),
            class,
            "{path}: {t} vs tltui {p}"
        );
        worst = worst.max((t["probability"].as_f64().unwrap() - p).abs());
    }
    worst
}

/// What the preprocessing tests share: the ImageNet Lite0 as an export directory in a temporary
/// directory, its eval transform, the Python and the Dog-Cat folder; `None` (reason printed)
/// when `../shared` or the Python is missing.
struct ImagenetLite0 {
    py: PathBuf,
    tmp: tempfile::TempDir,
    spec: PathBuf,
    prep: Preprocess,
    root: PathBuf,
}

impl ImagenetLite0 {
    fn new() -> Option<Self> {
        let shared = common::shared_dir()?;
        let py = common::onnx_python()?;
        let tmp = tempfile::tempdir().unwrap();
        let spec = imagenet_export_dir(&shared, tmp.path());
        let config = ModelConfig::from_file(&spec.join("config.json")).unwrap();
        let prep = Preprocess::from_cfg(&config.pretrained_cfg, 0).unwrap();
        let root = shared.join("datasets/Dog-Cat-Classifier");
        Some(Self {
            py,
            tmp,
            spec,
            prep,
            root,
        })
    }
}

/// The eval transform's resize and center crop of `image` as tltui computes it.
fn tltui_crop(prep: &Preprocess, image: &Path) -> image::RgbImage {
    prep.eval_pixels(&tltui::data::decode::decode_rgb(image, u64::MAX).unwrap())
}

/// The test images, decoded and resized by PIL as the README says, and fed the eval transform's
/// own resize and crop (tltui's, handed over losslessly as PNG): onnxruntime agrees with
/// `predict` within 1e-4 on class and probability either way.
#[test]
fn with_preprocessing_agrees_with_predict_on_the_test_images() {
    let Some(lite0) = ImagenetLite0::new() else {
        return;
    };
    let (py, tmp, spec, prep, root) =
        (&lite0.py, &lite0.tmp, &lite0.spec, &lite0.prep, &lite0.root);
    let jpegs = [root.join("test_cat.jpg"), root.join("test_dog.jpg")];
    let cropped: Vec<PathBuf> = jpegs
        .iter()
        .map(|j| {
            let png = tmp
                .path()
                .join(j.file_name().unwrap())
                .with_extension("png");
            tltui_crop(prep, j).save(&png).unwrap();
            png
        })
        .collect();
    let out = tmp.path().join("onnx");
    let worst = agree_on(py, spec, &out, &jpegs, &cropped, "--cropped");
    println!(
        "test_cat.jpg, test_dog.jpg resized by tltui: largest probability difference {worst:.2e}"
    );
    assert!(worst <= 1e-4, "{worst}");
    let worst = agree_with_predict(py, spec, &out, &jpegs);
    println!(
        "test_cat.jpg, test_dog.jpg decoded and resized by PIL: largest probability difference \
         {worst:.2e}"
    );
    assert!(worst <= 1e-4, "{worst}");
}

/// PIL, decoding and resizing as the README says (`check_onnx.py --images --save-pixels`), and
/// tltui's eval transform give the same pixels, byte for byte: JPEGs of the dataset at their
/// various sizes and chroma subsamplings, a grayscale JPEG, and images enlarged and shrunk.
#[test]
fn pil_and_tltui_resize_to_the_same_pixels() {
    let Some(lite0) = ImagenetLite0::new() else {
        return;
    };
    let (py, tmp, spec, prep, root) =
        (&lite0.py, &lite0.tmp, &lite0.spec, &lite0.prep, &lite0.root);
    let mut images = vec![root.join("test_cat.jpg"), root.join("test_dog.jpg")];
    let mut dataset: Vec<PathBuf> = ["cat", "dog"]
        .iter()
        .flat_map(|class| std::fs::read_dir(root.join("Data/Train_Data").join(class)).unwrap())
        .map(|entry| entry.unwrap().path())
        .collect();
    dataset.sort();
    images.extend(dataset.into_iter().step_by(25));
    let gray = image::GrayImage::from_fn(301, 197, |x, y| {
        image::Luma([((x * 7 + y * 3) % 256) as u8])
    });
    let gray_path = tmp.path().join("gray.jpg");
    gray.save(&gray_path).unwrap();
    let small = image::RgbImage::from_fn(90, 61, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 4) as u8, ((x * y) % 256) as u8])
    });
    let small_path = tmp.path().join("small.png");
    small.save(&small_path).unwrap();
    images.extend([gray_path, small_path]);
    let out = tmp.path().join("onnx");
    let (ok, _, err) = tltui(&[
        std::ffi::OsStr::new("export"),
        spec.as_os_str(),
        out.as_os_str(),
        std::ffi::OsStr::new("--format"),
        std::ffi::OsStr::new("onnx"),
        std::ffi::OsStr::new("--with-preprocessing"),
    ]);
    assert!(ok, "{err}");
    let pixels = tmp.path().join("pil");
    std::fs::create_dir(&pixels).unwrap();
    let mut args = vec![
        std::ffi::OsStr::new("--save-pixels"),
        pixels.as_os_str(),
        std::ffi::OsStr::new("--images"),
    ];
    args.extend(images.iter().map(|p| p.as_os_str()));
    check_onnx(py, &out.join("model.onnx"), &args);
    for image in &images {
        let stem = image.file_stem().unwrap().to_str().unwrap();
        let pil = image::open(pixels.join(format!("{stem}.png")))
            .unwrap()
            .to_rgb8();
        let ours = tltui_crop(prep, image);
        let differing = pil
            .as_raw()
            .iter()
            .zip(ours.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differing,
            0,
            "{}: {differing} values differ from PIL's",
            image.display()
        );
    }
    println!(
        "{} images: PIL's pixels and tltui's identical",
        images.len()
    );
}

#[test]
fn a_checkpoint_of_generated_classes_exports_with_its_class_names() {
    let Some(py) = common::onnx_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let common::ShapesRun {
        dataset,
        weights,
        checkpoint: ckpt,
        ..
    } = common::shapes_checkpoint(dir.path(), &["red", "blue", "grün"], 12, &[]);
    let os = std::ffi::OsStr::new;
    let images = tltui::infer::collect_images(std::slice::from_ref(&dataset));
    assert_eq!(images.len(), 36);
    let out = dir.path().join("onnx");
    let worst = agree_with_predict(&py, &ckpt, &out, &images);
    println!("36 generated images: same classes, largest probability difference {worst:.2e}");
    let report = check_onnx(&py, &out.join("model.onnx"), &[]);
    let meta = &report["metadata"];
    assert_eq!(meta["label_names"], r#"["blue","grün","red"]"#);
    assert_eq!(meta["hf_hub_id"], weights.to_str().unwrap());
    assert_eq!(meta["input_size"], "[3,64,64]");

    // `push --onnx` uploads the same bytes, and the card says how to run them.
    let stub = common::hub_stub::HubStub::start("someone/else", vec![]);
    stub.add_user("hf_stubTokenOfAlice0123456789", "alice", &[]);
    let home = dir.path().join("hf-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("token"), "hf_stubTokenOfAlice0123456789\n").unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_tltui"))
        .args([
            os("push"),
            ckpt.as_os_str(),
            os("alice/shapes"),
            os("--onnx"),
        ])
        .env_remove("HF_TOKEN")
        .env_remove("HF_TOKEN_PATH")
        .env("HF_HOME", &home)
        .env("HF_ENDPOINT", &stub.endpoint)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let (files, _) = stub.repo("alice/shapes").unwrap();
    // The model's files, and the run directory's (pictures, metrics, TensorBoard; tests/push.rs
    // checks those).
    let mut names: Vec<&str> = files
        .keys()
        .map(|k| k.as_str())
        .filter(|k| !(k.ends_with(".png") || k.ends_with(".csv") || k.starts_with("runs/")))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "README.md",
            "config.json",
            "model.onnx",
            "model.safetensors"
        ]
    );
    assert!(files["model.onnx"] == std::fs::read(out.join("model.onnx")).unwrap());
    let card = String::from_utf8(files["README.md"].clone()).unwrap();
    assert!(
        card.contains("## With ONNX Runtime")
            && card.contains(r#"hf_hub_download("alice/shapes", "model.onnx")"#),
        "{card}"
    );
}

#[test]
fn bad_output_directories_and_options_are_one_message() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let spec = imagenet_export_dir(&shared, tmp.path());
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let os = std::ffi::OsStr::new;
    let under_file = file.join("out");
    let (ok, out, err) = tltui(&[
        os("export"),
        spec.as_os_str(),
        under_file.as_os_str(),
        os("--format"),
        os("onnx"),
    ]);
    assert!(!ok && out.is_empty());
    assert!(
        err.contains("cannot create") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let (ok, _, err) = tltui(&[
        os("export"),
        spec.as_os_str(),
        tmp.path().join("timm").as_os_str(),
        os("--softmax"),
    ]);
    assert!(!ok && err.contains("--format onnx"), "{err}");

    // A good export leaves model.onnx and nothing else beside it.
    let good = tmp.path().join("good");
    let (ok, _, err) = tltui(&[
        os("export"),
        spec.as_os_str(),
        good.as_os_str(),
        os("--format"),
        os("onnx"),
    ]);
    assert!(ok, "{err}");
    let names: Vec<String> = std::fs::read_dir(&good)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["model.onnx"]);
}
