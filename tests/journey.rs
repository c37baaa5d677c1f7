//! The journey matrix: for the default backbone (Lite0, its real weights) and each of the eight
//! architectures of `../shared/reference/archs` (seeded random weights), and for a checkpoint from
//! each data source (class folders, labels in file names, a label file, a Hub dataset), a short
//! headless warm-up on a tiny dataset goes through everything a user does after it, with the real
//! binary:
//!
//! 1. `predict` names one of the dataset's classes for every image;
//! 2. `eval` on the checkpoint's own split reports the accuracy training reported;
//! 3. `export` writes timm's files, which load (and `predict` on them agrees);
//! 4. `export --format onnx --with-preprocessing`, run by onnxruntime on the images resized as
//!    docs/deploying.md says, agrees with `predict` within 1e-4 (skipped, reason printed, without
//!    a Python with onnxruntime, as in `tests/onnx_export.rs`);
//! 5. `push` to the in-test Hub stand-in uploads exactly `export`'s files, and the pushed model,
//!    downloaded back, predicts what the checkpoint does;
//! 6. `--resume CKPT` without `--backbone`/`--weights` trains one more epoch with the
//!    checkpoint's own backbone and image size, offline and with the backbone gone from the
//!    Hugging Face cache, without a single request to the Hub; `--resume CKPT` with another
//!    `--backbone` or `--weights` is one error naming both backbones.
//!
//! Every backbone comes from the Hub stand-in under its Hub id (Lite0 as the default, without
//! `--backbone`), into a Hugging Face cache in a temporary directory; the feature cache
//! (`XDG_CACHE_HOME`) and the checkpoints are in it too.

mod common;

use common::hub_stub::HubStub;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tltui::train::checkpoint::CheckpointMeta;

const TOKEN: &str = "hf_stubTokenOfJourney0123456789";
const LITE0: &str = "timm/tf_efficientnet_lite0.in1k";
/// Images per class of the generated datasets (a quarter of them validate).
const PER_CLASS: usize = 8;

/// Where a case's images and labels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `DATASET/<class>/<n>.png`.
    ClassFolders,
    /// `DATASET/<class>/{indoor,outdoor}/<n>.png`: a class's images at any depth below it.
    NestedClassFolders,
    /// `DATASET/<class>.<n>.png`, one flat folder.
    FileNames,
    /// `--labels DATASET/labels.csv`, whose labels are not the folders' names.
    LabelFile,
    /// `hf://datasets/tltui-test/dog-cat-splits`, served by the stand-in.
    HubDataset,
}

/// One row of the matrix.
struct Case {
    /// Names the pushed repository (`alice/journey-NAME`).
    name: &'static str,
    /// A folder of `../shared/reference/archs`, served as `timm/FOLDER` and named with
    /// `--backbone`; `None`: the default backbone, Lite0, without the flag.
    arch_dir: Option<&'static str>,
    source: Source,
    image_size: u32,
}

/// A dataset made for a case.
struct Data {
    /// The `DATASET` argument.
    dataset: OsString,
    /// Source flags every command that reads it repeats.
    flags: Vec<OsString>,
    /// The class names, sorted.
    classes: Vec<String>,
    /// Images given to `predict` and onnxruntime.
    images: Vec<PathBuf>,
    /// Validation images `eval` should count.
    val_images: u64,
}

/// What one run of the binary did.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs the binary for one case: its Hugging Face home, tltui's cache, the stand-in's endpoint.
struct Tltui {
    cache: PathBuf,
    hf_home: PathBuf,
    endpoint: String,
}

/// Per-invocation environment beside [`Tltui`]'s.
#[derive(Default, Clone, Copy)]
struct Env<'a> {
    offline: bool,
    token: bool,
    hf_home: Option<&'a Path>,
}

impl Tltui {
    fn run(&self, args: &[&OsStr], env: Env) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tltui"));
        cmd.args(args)
            .env_remove("HF_TOKEN")
            .env_remove("HF_TOKEN_PATH")
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_HUB_OFFLINE")
            .env("XDG_CACHE_HOME", &self.cache)
            .env("HF_HOME", env.hf_home.unwrap_or(&self.hf_home))
            .env("HF_ENDPOINT", &self.endpoint)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1");
        if env.offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        }
        if env.token {
            cmd.env("HF_TOKEN", TOKEN);
        }
        let out = cmd.output().unwrap();
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// Runs `args`, failing the test (with the command and its output) unless it succeeds.
    fn ok(&self, step: &str, args: &[&OsStr], env: Env) -> Out {
        let out = self.run(args, env);
        assert!(
            out.ok(),
            "{step}: tltui {} exited {:?}\nstdout:\n{}\nstderr:\n{}",
            show(args),
            out.code,
            out.stdout,
            out.stderr
        );
        out
    }
}

fn show(args: &[&OsStr]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The JSON lines of a `--headless --json` run.
fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

/// `predict --json` as path → (class, probability).
fn predictions(stdout: &str) -> BTreeMap<String, (String, f64)> {
    let v = json(stdout);
    v["predictions"]
        .as_array()
        .unwrap_or_else(|| panic!("no predictions in {v}"))
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_string(),
                (
                    p["top"][0]["class"].as_str().unwrap().to_string(),
                    p["top"][0]["probability"].as_f64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Asserts two prediction maps name the same images and classes, probabilities within `tol`.
fn same_predictions(
    what: &str,
    want: &BTreeMap<String, (String, f64)>,
    got: &BTreeMap<String, (String, f64)>,
    tol: f64,
) {
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{what}: the same images"
    );
    for (path, (class, p)) in want {
        let (c, q) = &got[path];
        assert_eq!(c, class, "{what}: {path}: {c} ({q}) vs {class} ({p})");
        assert!((p - q).abs() <= tol, "{what}: {path}: {q} vs {p}");
    }
}

/// Runs `scripts/check_onnx.py MODEL ARGS...` and parses its JSON report.
fn check_onnx(py: &Path, model: &Path, args: &[&OsStr]) -> Value {
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

/// timm's classifier prefix for `arch`, as `export` writes it (docs/deploying.md).
fn timm_classifier(arch: &str) -> &'static str {
    match arch {
        a if a.starts_with("resnet") => "fc",
        a if a.starts_with("convnext") => "head.fc",
        a if a.starts_with("vit_") || a.starts_with("deit_") => "head",
        _ => "classifier",
    }
}

/// The generated shapes of `classes` as `dir/<class>/<n>.png`, moved into place by `place`
/// (class, n, file name) → path under `root`.
fn shapes_into(
    tmp: &Path,
    root: &Path,
    classes: &[&str],
    place: impl Fn(&str, usize) -> PathBuf,
) -> Vec<PathBuf> {
    let raw = tmp.join("raw");
    common::shapes_dataset(&raw, classes, PER_CLASS);
    let mut images = Vec::new();
    for class in classes {
        for i in 0..PER_CLASS {
            let to = root.join(place(class, i));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::rename(raw.join(class).join(format!("{i}.png")), &to).unwrap();
            images.push(to);
        }
    }
    std::fs::remove_dir_all(&raw).unwrap();
    images.sort();
    images
}

fn os(s: &str) -> OsString {
    OsString::from(s)
}

fn make_data(source: Source, tmp: &Path, shared: &Path, stub: &HubStub) -> Data {
    let classes = ["red", "blue"];
    let sorted = |v: &[&str]| {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    let val = (2 * PER_CLASS / 4) as u64;
    let split = vec![os("--val-fraction"), os("0.25")];
    match source {
        Source::ClassFolders => {
            let root = tmp.join("shapes");
            let images = shapes_into(tmp, &root, &classes, |c, i| {
                PathBuf::from(c).join(format!("{i}.png"))
            });
            Data {
                dataset: root.into_os_string(),
                flags: split,
                classes: sorted(&classes),
                images,
                val_images: val,
            }
        }
        Source::NestedClassFolders => {
            let root = tmp.join("pets");
            let images = shapes_into(tmp, &root, &classes, |c, i| {
                let place = if i % 2 == 0 { "indoor" } else { "outdoor" };
                PathBuf::from(c).join(place).join(format!("{i}.png"))
            });
            Data {
                dataset: root.into_os_string(),
                flags: split,
                classes: sorted(&classes),
                images,
                val_images: val,
            }
        }
        Source::FileNames => {
            let root = tmp.join("flat");
            let images = shapes_into(tmp, &root, &classes, |c, i| {
                PathBuf::from(format!("{c}.{i}.png"))
            });
            Data {
                dataset: root.into_os_string(),
                flags: split,
                classes: sorted(&classes),
                images,
                val_images: val,
            }
        }
        Source::LabelFile => {
            // The folders are named a and b; the label file calls them round and square.
            let root = tmp.join("labelled");
            let images = shapes_into(tmp, &root, &["a", "b"], |c, i| {
                PathBuf::from("pictures").join(c).join(format!("{i}.png"))
            });
            let mut csv = String::from("image,kind\n");
            for (class, label) in [("a", "round"), ("b", "square")] {
                for i in 0..PER_CLASS {
                    csv += &format!("pictures/{class}/{i}.png,{label}\n");
                }
            }
            let labels = root.join("labels.csv");
            std::fs::write(&labels, csv).unwrap();
            let mut flags = split;
            flags.extend([os("--labels"), labels.into_os_string()]);
            Data {
                dataset: root.into_os_string(),
                flags,
                classes: sorted(&["round", "square"]),
                images,
                val_images: val,
            }
        }
        Source::HubDataset => {
            stub.serve_dataset_dir(
                "tltui-test/dog-cat-splits",
                &shared.join("hub/datasets/tltui-test/dog-cat-splits"),
            );
            let root = shared.join("datasets/Dog-Cat-Classifier");
            Data {
                dataset: os("hf://datasets/tltui-test/dog-cat-splits"),
                flags: vec![],
                classes: sorted(&["cat", "dog"]),
                images: vec![root.join("test_cat.jpg"), root.join("test_dog.jpg")],
                // The dataset's own validation split: 20 + 20.
                val_images: 40,
            }
        }
    }
}

/// Prints how long each step took.
struct Clock {
    case: &'static str,
    last: Instant,
    first: Instant,
}

impl Clock {
    fn lap(&mut self, step: &str) {
        let now = Instant::now();
        println!(
            "{}: {step} {:.1} s",
            self.case,
            now.duration_since(self.last).as_secs_f64()
        );
        self.last = now;
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            println!(
                "{}: journey {:.1} s",
                self.case,
                self.first.elapsed().as_secs_f64()
            );
        }
    }
}

fn journey(case: Case) {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let mut clock = Clock {
        case: case.name,
        last: Instant::now(),
        first: Instant::now(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();

    // The backbone as the Hub serves it.
    let (repo, weights_dir) = match case.arch_dir {
        Some(d) => (format!("timm/{d}"), shared.join("reference/archs").join(d)),
        None => (LITE0.to_string(), common::lite0_dir(&shared)),
    };
    let arch = tltui::model::ModelConfig::from_file(&weights_dir.join("config.json"))
        .unwrap()
        .architecture;
    let stub = HubStub::serve_dir(&repo, &weights_dir);
    stub.add_user(TOKEN, "alice", &[]);
    let data = make_data(case.source, tmp, &shared, &stub);
    let t = Tltui {
        cache: tmp.join("cache"),
        hf_home: tmp.join("hf-home"),
        endpoint: stub.endpoint.clone(),
    };
    let online = Env::default();
    let size = case.image_size.to_string();
    let dataset = data.dataset.as_os_str();
    let flags: Vec<&OsStr> = data.flags.iter().map(|f| f.as_os_str()).collect();
    let images: Vec<&OsStr> = data.images.iter().map(|p| p.as_os_str()).collect();
    let o = OsStr::new;

    // 0. The warm-up checkpoint.
    let checkpoints = tmp.join("checkpoints");
    let mut args = vec![
        dataset,
        o("--headless"),
        o("--json"),
        o("--checkpoint-dir"),
        checkpoints.as_os_str(),
        o("--warmup-epochs"),
        o("1"),
        o("--finetune-epochs"),
        o("0"),
        o("--batch-size"),
        o("8"),
        o("--image-size"),
        o(&size),
    ];
    if case.arch_dir.is_some() {
        args.extend([o("--backbone"), o(&repo)]);
    }
    args.extend(&flags);
    let out = t.ok("train", &args, online);
    let ev = events(&out.stdout);
    let ready = of_kind(&ev, "dataset_ready");
    let classes: Vec<&str> = ready[0]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(classes, data.classes, "{}: dataset_ready", case.name);
    let model = of_kind(&ev, "model_ready");
    assert_eq!(model[0]["backbone"], repo.as_str(), "{}", out.stdout);
    assert_eq!(model[0]["architecture"], arch.as_str());
    assert!(
        !of_kind(&ev, "download").is_empty(),
        "the backbone came from the stand-in: {}",
        out.stdout
    );
    let summary = ev.last().unwrap();
    assert_eq!(summary["event"], "summary", "{}", out.stdout);
    assert!(summary["error"].is_null(), "{summary}");
    let reported = summary["warmup_val_accuracy"]
        .as_f64()
        .unwrap_or_else(|| panic!("no warm-up accuracy: {summary}"));
    let ckpt = checkpoints.join("final.safetensors");
    let meta = CheckpointMeta::read(&ckpt).unwrap();
    assert_eq!(meta.backbone, repo);
    assert_eq!(meta.architecture, arch);
    assert_eq!(meta.classes, data.classes);
    assert_eq!(meta.preprocess.size, case.image_size);
    clock.lap("train");

    // 1. predict: every image gets one of the classes.
    let mut args = vec![o("predict"), ckpt.as_os_str()];
    args.extend(&images);
    args.push(o("--json"));
    let out = t.ok("predict", &args, online);
    let ours = predictions(&out.stdout);
    assert_eq!(ours.len(), data.images.len(), "{}", out.stdout);
    for (path, (class, p)) in &ours {
        assert!(
            data.classes.contains(class),
            "{path}: {class} is not one of {:?}",
            data.classes
        );
        assert!(
            (0.0..=1.0).contains(p) && *p >= 1.0 / data.classes.len() as f64 - 1e-6,
            "{path}: {p}"
        );
    }
    clock.lap("predict");

    // 2. eval on the checkpoint's own split: what training reported.
    let mut args = vec![o("eval"), ckpt.as_os_str(), dataset];
    args.extend(&flags);
    args.push(o("--json"));
    let out = t.ok("eval", &args, online);
    let eval = json(&out.stdout);
    let accuracy = eval["accuracy"]
        .as_f64()
        .unwrap_or_else(|| panic!("no accuracy: {eval}"));
    assert!((0.0..=1.0).contains(&accuracy), "{eval}");
    assert_eq!(eval["images"], data.val_images, "{eval}");
    assert!(
        (accuracy - reported).abs() < 1e-6,
        "{}: eval {accuracy} vs training's {reported}",
        case.name
    );
    clock.lap("eval");

    // 3. export for timm: the files exist, load, and predict what the checkpoint does.
    let export = tmp.join("export");
    t.ok(
        "export",
        &[o("export"), ckpt.as_os_str(), export.as_os_str()],
        online,
    );
    let config = json(&std::fs::read_to_string(export.join("config.json")).unwrap());
    assert_eq!(config["architecture"], arch.as_str());
    assert_eq!(config["num_classes"], data.classes.len());
    assert_eq!(config["label_names"], serde_json::json!(data.classes));
    let s = case.image_size;
    assert_eq!(
        config["pretrained_cfg"]["input_size"],
        serde_json::json!([3, s, s])
    );
    let exported =
        candle_core::safetensors::load(export.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let classifier = format!("{}.weight", timm_classifier(&arch));
    assert_eq!(
        exported[&classifier].dims(),
        &[
            data.classes.len(),
            config["num_features"].as_u64().unwrap() as usize
        ],
        "{classifier}"
    );
    let trained = candle_core::safetensors::load(&ckpt, &candle_core::Device::Cpu).unwrap();
    assert_eq!(exported.len(), trained.len(), "every tensor exported");
    if !classifier.starts_with("classifier.") {
        assert!(
            !exported.keys().any(|k| k.starts_with("classifier.")),
            "the head under timm's name only"
        );
    }
    let mut args = vec![o("predict"), export.as_os_str()];
    args.extend(&images);
    args.push(o("--json"));
    let out = t.ok("predict the export", &args, online);
    same_predictions("the export", &ours, &predictions(&out.stdout), 1e-6);
    clock.lap("export");

    // 4. ONNX with the preprocessing inside: onnxruntime agrees with predict.
    let onnx = tmp.join("onnx");
    t.ok(
        "export onnx",
        &[
            o("export"),
            ckpt.as_os_str(),
            onnx.as_os_str(),
            o("--format"),
            o("onnx"),
            o("--with-preprocessing"),
            o("--softmax"),
        ],
        online,
    );
    let model_onnx = onnx.join("model.onnx");
    assert!(model_onnx.is_file());
    if let Some(py) = common::onnx_python() {
        let mut args = vec![o("--images")];
        args.extend(&images);
        let report = check_onnx(&py, &model_onnx, &args);
        assert_eq!(report["checked"], true);
        assert_eq!(report["input"], "pixels");
        let meta = &report["metadata"];
        let labels: Vec<String> =
            serde_json::from_str(meta["label_names"].as_str().unwrap()).unwrap();
        assert_eq!(labels, data.classes);
        assert_eq!(meta["architecture"], arch.as_str());
        assert_eq!(meta["input_size"], format!("[3,{s},{s}]"));
        let theirs: BTreeMap<String, (String, f64)> = report["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["path"].as_str().unwrap().to_string(),
                    (
                        p["class"].as_str().unwrap().to_string(),
                        p["probability"].as_f64().unwrap(),
                    ),
                )
            })
            .collect();
        same_predictions("onnxruntime", &ours, &theirs, 1e-4);
        let worst = ours
            .iter()
            .map(|(k, (_, p))| (p - theirs[k].1).abs())
            .fold(0.0, f64::max);
        println!(
            "{}: onnxruntime agrees on {} images, largest probability difference {worst:.2e}",
            case.name,
            ours.len()
        );
    }
    clock.lap("onnx");

    // 5. push to the stand-in: export's files arrive; downloaded back, they predict the same.
    let target = format!("alice/journey-{}", case.name);
    let out = t.ok(
        "push",
        &[o("push"), ckpt.as_os_str(), o(&target), o("--json")],
        Env {
            token: true,
            ..online
        },
    );
    assert!(!out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN));
    let pushed = events(&out.stdout);
    assert_eq!(pushed[0]["event"], "start", "{}", out.stdout);
    let last = pushed.last().unwrap();
    assert_eq!(last["event"], "pushed", "{}", out.stdout);
    assert_eq!(last["url"], format!("{}/{target}", stub.endpoint));
    let (files, _) = stub
        .repo(&target)
        .unwrap_or_else(|| panic!("{target} was not created"));
    for f in ["model.safetensors", "config.json"] {
        assert!(
            files[f] == std::fs::read(export.join(f)).unwrap(),
            "{f} differs from export's"
        );
    }
    let card = String::from_utf8(files["README.md"].clone()).unwrap();
    assert!(card.contains(&format!("base_model: {repo}")), "{card}");
    for class in &data.classes {
        assert!(card.contains(&format!("| {class} |")), "{class}: {card}");
    }
    let fresh = tmp.join("hf-home-download");
    let hf_hub = format!("hf-hub:{target}");
    let mut args = vec![o("predict"), o(&hf_hub)];
    args.extend(&images);
    args.push(o("--json"));
    let out = t.ok(
        "predict the pushed model",
        &args,
        Env {
            token: true,
            hf_home: Some(&fresh),
            ..online
        },
    );
    same_predictions("the pushed model", &ours, &predictions(&out.stdout), 1e-5);
    clock.lap("push");

    // 6. --resume: the checkpoint's own backbone and size, offline, the backbone's files gone
    // from the Hugging Face cache, not one request to the Hub.
    let hub_cache = t.hf_home.join("hub");
    for entry in std::fs::read_dir(&hub_cache).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("models--") {
            std::fs::remove_dir_all(entry.path()).unwrap();
        }
    }
    let offline = Env {
        offline: true,
        ..online
    };
    let requests = stub.requests().len();
    let resumed_dir = tmp.join("resumed");
    let resume_args = |dir: &Path| -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            dataset.into(),
            os("--headless"),
            os("--json"),
            os("--resume"),
            ckpt.clone().into_os_string(),
            os("--checkpoint-dir"),
            dir.as_os_str().into(),
            os("--warmup-epochs"),
            os("1"),
            os("--finetune-epochs"),
            os("0"),
            os("--batch-size"),
            os("8"),
        ];
        args.extend(data.flags.iter().cloned());
        args
    };
    // Another backbone given with --resume: one error naming both, nothing trained or fetched.
    let (other_repo, other_dir) = if arch.starts_with("resnet") {
        (LITE0.to_string(), common::lite0_dir(&shared))
    } else {
        (
            "timm/resnet18.a1_in1k".to_string(),
            shared.join("reference/archs/resnet18.a1_in1k"),
        )
    };
    let other_weights = other_dir.join("model.safetensors");
    let other_weights = other_weights.to_string_lossy().into_owned();
    for (flag, value) in [("--backbone", &other_repo), ("--weights", &other_weights)] {
        let refused = tmp.join(format!("refused{flag}"));
        let mut args = resume_args(&refused);
        args.extend([os(flag), os(value)]);
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let out = t.run(&args, offline);
        assert_eq!(
            out.code,
            Some(1),
            "{flag} {value}: {}\n{}",
            out.stdout,
            out.stderr
        );
        let err = out.stderr.trim();
        assert_eq!(err.lines().count(), 1, "one message: {err}");
        assert!(
            err.contains(&repo) && err.contains(&format!("{flag} {value}")),
            "names both backbones: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!refused.join("final.safetensors").exists());
    }
    let asked: Vec<String> = stub.requests()[requests..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        asked.is_empty(),
        "a refused resume asked the Hub: {asked:?}"
    );
    clock.lap("resume with another backbone");

    let args = resume_args(&resumed_dir);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = t.ok("resume", &args, offline);
    let ev = events(&out.stdout);
    let model = of_kind(&ev, "model_ready");
    assert_eq!(model[0]["backbone"], repo.as_str(), "{}", out.stdout);
    assert_eq!(model[0]["architecture"], arch.as_str());
    // A Hub dataset is read from the cache (`cached` events); the backbone is not looked for.
    for d in of_kind(&ev, "download") {
        let file = d["progress"]["file"].as_str().unwrap_or_default();
        assert!(
            d["progress"]["kind"] == "cached"
                && case.source == Source::HubDataset
                && !file.ends_with(".safetensors")
                && file != "config.json",
            "resume downloaded: {d}"
        );
    }
    let finished = of_kind(&ev, "phase_finished");
    assert_eq!(finished.len(), 1, "{}", out.stdout);
    assert_eq!(finished[0]["phase"], "warmup");
    assert_eq!(finished[0]["epochs"], 1);
    assert!(
        of_kind(&ev, "batch").iter().all(|b| b["phase"] == "warmup"),
        "{}",
        out.stdout
    );
    let summary = ev.last().unwrap();
    assert_eq!(summary["event"], "summary", "{}", out.stdout);
    assert!(summary["error"].is_null(), "{summary}");
    let resumed = CheckpointMeta::read(&resumed_dir.join("final.safetensors")).unwrap();
    assert_eq!(resumed.backbone, repo);
    assert_eq!(resumed.classes, data.classes);
    let asked: Vec<String> = stub.requests()[requests..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(asked.is_empty(), "resume asked the Hub: {asked:?}");
    clock.lap("resume");
    // Last, so that a failure here leaves every other step checked.
    assert_eq!(
        resumed.preprocess.size, case.image_size,
        "{}: --resume trains at the checkpoint's image size (docs/training.md)",
        case.name
    );
}

fn arch(name: &'static str, dir: &'static str, image_size: u32) {
    journey(Case {
        name,
        arch_dir: Some(dir),
        source: Source::ClassFolders,
        image_size,
    });
}

fn source(name: &'static str, source: Source) {
    journey(Case {
        name,
        arch_dir: None,
        source,
        image_size: 64,
    });
}

/// Also the class-folder source.
#[test]
fn lite0_default_backbone() {
    journey(Case {
        name: "lite0",
        arch_dir: None,
        source: Source::ClassFolders,
        image_size: 64,
    });
}

#[test]
fn mobilenetv1() {
    arch("mobilenetv1", "mobilenetv1_100.ra4_e3600_r224_in1k", 64);
}

#[test]
fn mobilenetv2() {
    arch("mobilenetv2", "mobilenetv2_100.ra_in1k", 64);
}

#[test]
fn mobilenetv3() {
    arch("mobilenetv3", "mobilenetv3_large_100.ra_in1k", 64);
}

#[test]
fn convnext_atto() {
    arch("convnext-atto", "convnext_atto.d2_in1k", 64);
}

#[test]
fn vit_tiny() {
    // 4x4 patches of 16 px.
    arch("vit-tiny", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", 64);
}

#[test]
fn dinov2_small() {
    // 4x4 patches of 14 px.
    arch("dinov2-small", "vit_small_patch14_dinov2.lvd142m", 56);
}

#[test]
fn efficientnet_b0() {
    arch("efficientnet-b0", "efficientnet_b0.ra_in1k", 64);
}

#[test]
fn resnet18() {
    arch("resnet18", "resnet18.a1_in1k", 64);
}

#[test]
fn source_nested_class_folders() {
    source("nested-folders", Source::NestedClassFolders);
}

#[test]
fn source_labels_in_file_names() {
    source("file-names", Source::FileNames);
}

#[test]
fn source_label_file() {
    source("label-file", Source::LabelFile);
}

#[test]
fn source_hub_dataset() {
    source("hub-dataset", Source::HubDataset);
}
