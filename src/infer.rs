//! Using a trained checkpoint: `predict` images, `eval` a dataset split, `export` for timm.

use crate::cli::{EvalArgs, ExportArgs, PredictArgs};
use crate::data::decode::decode_rgb;
use crate::data::{is_image_name, Dataset, Preprocess, PretrainedCfg, Skipped, SplitOptions};
use crate::hub::{fetch_backbone, DownloadProgress, HubOptions, RepoId};
use crate::model::{build_backbone, Backbone, Head, ModelConfig, Params};
use crate::onnx;
use crate::train::checkpoint::Checkpoint;
use crate::train::metrics::{top_losses, Confusion};
use crate::train::multi_label;
use candle_core::{Device, Tensor, D};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Images per forward pass.
const BATCH: usize = 32;

/// An image and its class probabilities.
pub type Classified = (PathBuf, Vec<f32>);

/// A trained model ready to classify images.
pub struct Classifier {
    device: Device,
    backbone: Box<dyn Backbone>,
    head: Head,
    /// Class names in the order of the head's outputs.
    pub classes: Vec<String>,
    /// Multi-label: a sigmoid per output, and the probability from which each label is
    /// predicted; `None`: a softmax over the classes.
    pub thresholds: Option<Vec<f32>>,
    preprocess: Preprocess,
    pretrained_cfg: PretrainedCfg,
}

/// The fields of an exported `config.json` a classifier needs.
#[derive(Deserialize)]
struct TimmConfig {
    architecture: String,
    num_features: usize,
    #[serde(default)]
    label_names: Vec<String>,
    /// `multi_label_classification` (Hugging Face transformers' name) for a sigmoid per label.
    #[serde(default)]
    problem_type: Option<String>,
    /// Multi-label: each label's threshold.
    #[serde(default)]
    label_thresholds: Option<Vec<f32>>,
    pretrained_cfg: PretrainedCfg,
}

impl Classifier {
    /// A tltui checkpoint file, a directory written by `tltui export`, or `hf-hub:ORG/NAME[@REV]`
    /// (a pushed model, fetched into the Hugging Face cache), loaded onto `device`.
    pub fn open(spec: &Path, device: Device) -> anyhow::Result<Self> {
        if let Some(id) = spec.to_str().and_then(|s| s.strip_prefix("hf-hub:")) {
            let repo: RepoId = id.parse().map_err(anyhow::Error::msg)?;
            let options = HubOptions::from_config(&crate::config::Config::default().hub);
            let progress = Arc::new(|p: DownloadProgress| {
                if let DownloadProgress::Done { file, bytes } = p {
                    eprintln!("downloaded {file} ({:.1} MB)", bytes as f64 / 1e6);
                }
            });
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let files = runtime.block_on(fetch_backbone(&repo, &options, progress))?;
            return Self::from_timm(&files.config, &files.weights, device);
        }
        if spec.is_dir() {
            let (config, weights) = (spec.join("config.json"), spec.join("model.safetensors"));
            return Self::from_timm(&config, &weights, device);
        }
        Self::from_checkpoint(Checkpoint::load(spec, &device)?, device)
    }

    /// A checkpoint read by [`Checkpoint::load`] onto `device`.
    pub fn from_checkpoint(ckpt: Checkpoint, device: Device) -> anyhow::Result<Self> {
        let head = ckpt.head(0.0)?;
        let config = ckpt.model_config();
        let backbone = build_backbone(&config, ckpt.backbone_params())?;
        Ok(Self {
            device,
            backbone,
            head,
            thresholds: ckpt.meta.thresholds(),
            classes: ckpt.meta.classes,
            preprocess: ckpt.meta.preprocess,
            pretrained_cfg: config.pretrained_cfg,
        })
    }

    /// What [`timm_files`] wrote: timm's `config.json` (with `label_names`) and
    /// `model.safetensors`.
    pub fn from_timm(config: &Path, weights: &Path, device: Device) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(config)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", config.display()))?;
        let cfg: TimmConfig = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a timm classifier's config: {e}",
                config.display()
            )
        })?;
        if cfg.label_names.is_empty() {
            anyhow::bail!(
                "{} names no classes (label_names); it is not a classifier exported by tltui",
                config.display()
            );
        }
        let prefix = format!("{}.", timm_classifier(&cfg.architecture));
        let loaded = Params::load(weights, &device)?;
        let params = Params::from_tensors(loaded.iter().map(|(k, v)| {
            let name = match k.strip_prefix(&prefix) {
                Some(rest) => format!("classifier.{rest}"),
                None => k.clone(),
            };
            (name, v.as_tensor().clone())
        }))?;
        let k = cfg.label_names.len();
        let weight = params.get("classifier.weight", &[k, cfg.num_features])?;
        let bias = params.get("classifier.bias", &[k])?;
        let head = Head::from_tensors(weight.as_tensor(), bias.as_tensor(), 0.0)?;
        let mut params = params;
        params.retain(|k| !k.starts_with("classifier."));
        let preprocess =
            Preprocess::from_cfg(&cfg.pretrained_cfg, 0).map_err(anyhow::Error::msg)?;
        let config = ModelConfig {
            architecture: cfg.architecture,
            num_features: None,
            pretrained_cfg: cfg.pretrained_cfg.clone(),
        };
        let backbone = build_backbone(&config, params)
            .map_err(|e| anyhow::anyhow!("{}: {e}", weights.display()))?;
        let thresholds = (cfg.problem_type.as_deref() == Some(onnx::MULTI_LABEL_PROBLEM))
            .then(|| cfg.label_thresholds.unwrap_or_else(|| vec![0.5; k]));
        Ok(Self {
            device,
            backbone,
            head,
            thresholds,
            classes: cfg.label_names,
            preprocess,
            pretrained_cfg: cfg.pretrained_cfg,
        })
    }

    fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The backbone, the head, the eval transform and the backbone's `pretrained_cfg`: what
    /// an ONNX export writes.
    pub fn parts(&self) -> (&dyn Backbone, &Head, &Preprocess, &PretrainedCfg) {
        let backbone: &dyn Backbone = self.backbone.as_ref();
        (backbone, &self.head, &self.preprocess, &self.pretrained_cfg)
    }

    /// Class probabilities `[N, K]` of decoded-and-preprocessed inputs (multi-label: each
    /// label's own).
    fn probabilities(&self, inputs: Vec<Vec<f32>>) -> anyhow::Result<Vec<Vec<f32>>> {
        let s = self.preprocess().size as usize;
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(BATCH) {
            let x = Tensor::from_vec(chunk.concat(), (chunk.len(), 3, s, s), &self.device)?;
            let logits = self.head.forward(
                &self.backbone.forward(&x, false)?,
                None::<&mut rand_chacha::ChaCha8Rng>,
            )?;
            let probabilities = match self.thresholds {
                Some(_) => candle_nn::ops::sigmoid(&logits)?,
                None => candle_nn::ops::softmax(&logits, D::Minus1)?,
            };
            out.extend(probabilities.to_vec2::<f32>()?);
        }
        Ok(out)
    }

    /// Probabilities for each path; unreadable files come back as skipped.
    pub fn classify(&self, paths: &[PathBuf]) -> anyhow::Result<(Vec<Classified>, Vec<Skipped>)> {
        let prep = self.preprocess();
        let decoded: Vec<(PathBuf, Result<Vec<f32>, String>)> = paths
            .par_iter()
            .map(|p| {
                (
                    p.clone(),
                    decode_rgb(p, u64::MAX).map(|img| prep.eval(&img)),
                )
            })
            .collect();
        let mut ok = Vec::new();
        let mut skipped = Vec::new();
        for (path, r) in decoded {
            match r {
                Ok(input) => ok.push((path, input)),
                Err(reason) => skipped.push(Skipped { path, reason }),
            }
        }
        let (paths, inputs): (Vec<PathBuf>, Vec<Vec<f32>>) = ok.into_iter().unzip();
        let probs = self.probabilities(inputs)?;
        Ok((paths.into_iter().zip(probs).collect(), skipped))
    }
}

/// Image files named by `args`: files as given, directories walked.
pub fn collect_images(inputs: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() && depth < 16 {
                walk(&p, out, depth + 1);
            } else if is_image_name(&p) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            walk(p, &mut out, 0);
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// One image's top classes (multi-label: every label, most probable first).
#[derive(Debug, Serialize)]
pub struct Prediction {
    #[serde(serialize_with = "crate::data::lossy_path")]
    pub path: PathBuf,
    pub top: Vec<ClassProbability>,
    /// Multi-label: the labels whose probability reaches their threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub struct ClassProbability {
    pub class: String,
    pub probability: f32,
}

/// `tltui predict`.
pub fn predict(args: &PredictArgs) -> anyhow::Result<()> {
    let model = Classifier::open(&args.checkpoint, args.device.pick()?)?;
    let paths = collect_images(&args.images);
    let (results, skipped) = model.classify(&paths)?;
    let predictions: Vec<Prediction> = results
        .into_iter()
        .map(|(path, probs)| {
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            let shown = match model.thresholds {
                Some(_) => probs.len(),
                None => args.top.max(1),
            };
            let top = order
                .into_iter()
                .take(shown)
                .map(|i| ClassProbability {
                    class: model.classes[i].clone(),
                    probability: probs[i],
                })
                .collect();
            let labels = model.thresholds.as_ref().map(|t| {
                (0..probs.len())
                    .filter(|&i| probs[i] >= t[i])
                    .map(|i| model.classes[i].clone())
                    .collect()
            });
            Prediction { path, top, labels }
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "predictions": predictions, "skipped": skipped })
        );
    } else {
        for p in &predictions {
            let top: Vec<String> = p
                .top
                .iter()
                .map(|c| format!("{} {:.4}", c.class, c.probability))
                .collect();
            match &p.labels {
                Some(labels) => println!(
                    "{}: [{}] {}",
                    p.path.display(),
                    labels.join(" "),
                    top.join(", ")
                ),
                None => println!("{}: {}", p.path.display(), top.join(", ")),
            }
        }
        for s in &skipped {
            eprintln!("skipped {}: {}", s.path.display(), s.reason);
        }
    }
    Ok(())
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Serialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f32,
    pub recall: f32,
    pub f1: f32,
    pub support: usize,
}

/// `tltui eval` of a multi-label model on `samples` (classified as `results`): mAP, F1 and each
/// label's scores at the model's thresholds.
fn eval_multi_label(
    args: &EvalArgs,
    ds: &Dataset,
    samples: &[&crate::data::Sample],
    results: &[Classified],
    thresholds: &[f32],
    skipped: &[Skipped],
) -> anyhow::Result<()> {
    let labels: std::collections::HashMap<&Path, &Vec<usize>> = samples
        .iter()
        .map(|s| (s.path.as_path(), &s.labels))
        .collect();
    let truth: Vec<Vec<usize>> = results
        .iter()
        .map(|(p, _)| labels[p.as_path()].clone())
        .collect();
    let probabilities: Vec<Vec<f32>> = results.iter().map(|(_, p)| p.clone()).collect();
    let s = multi_label::scores(&probabilities, &truth, &ds.class_names, Some(thresholds));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "task": ds.task,
                "images": results.len(),
                "accuracy": s.exact_match,
                "map": s.map,
                "f1_micro": s.f1_micro,
                "f1_macro": s.f1_macro,
                "per_label": s.per_label,
                "skipped": skipped,
            })
        );
        return Ok(());
    }
    println!(
        "{} images, mAP {:.4}, F1 micro {:.4} macro {:.4}, exact match {:.4}",
        results.len(),
        s.map,
        s.f1_micro,
        s.f1_macro,
        s.exact_match
    );
    println!(
        "\n{:<24} {:>7} {:>7} {:>9} {:>7} {:>9} {:>7}",
        "label", "AP", "F1", "precision", "recall", "threshold", "support"
    );
    for l in &s.per_label {
        let ap = l.ap.map_or("-".into(), |a| format!("{a:.4}"));
        println!(
            "{:<24} {:>7} {:>7.4} {:>9.4} {:>7.4} {:>9.3} {:>7}",
            l.name, ap, l.f1, l.precision, l.recall, l.threshold, l.support
        );
    }
    for s in skipped {
        eprintln!("skipped {}: {}", s.path.display(), s.reason);
    }
    Ok(())
}

/// `tltui eval`.
pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let flags = &args.data.config;
    if let Some(file) = &flags.config {
        anyhow::bail!(
            "eval reads the configuration from the checkpoint; --config {} does not apply",
            file.display()
        );
    }
    let device = args.device.pick()?;
    let ckpt = Checkpoint::load(&args.checkpoint, &device)?;
    let ckpt_config = ckpt.meta.config.clone();
    let data = &ckpt_config.data;
    let split = SplitOptions {
        val_fraction: flags.val_fraction.unwrap_or(ckpt.meta.val_fraction),
        seed: flags.seed.unwrap_or(ckpt.meta.seed),
        duplicates: flags.duplicates.unwrap_or(data.duplicates),
    };
    let max_pixels = data.max_pixels();
    let model = Classifier::from_checkpoint(ckpt, device)?;
    let mut source = args.data.source.options(&ckpt_config);
    // A multi-label model is evaluated on labels read as it was trained.
    source.columns.multi_label |= model.thresholds.is_some();
    let ds = Dataset::open(&args.dataset, &source, &split, max_pixels)?;
    if ds.class_names != model.classes {
        anyhow::bail!(
            "the checkpoint was trained on classes {:?}, but {} has {:?}",
            model.classes,
            args.dataset.display(),
            ds.class_names
        );
    }
    let samples: Vec<_> = if args.all {
        ds.train.iter().chain(&ds.val).collect()
    } else {
        ds.val.iter().collect()
    };
    let paths: Vec<PathBuf> = samples.iter().map(|s| s.path.clone()).collect();
    let (results, skipped) = model.classify(&paths)?;
    if let Some(thresholds) = &model.thresholds {
        return eval_multi_label(args, &ds, &samples, &results, thresholds, &skipped);
    }
    let label: std::collections::HashMap<&Path, usize> = samples
        .iter()
        .map(|s| (s.path.as_path(), s.class()))
        .collect();
    let ranked = top_losses(
        results
            .iter()
            .map(|(p, probs)| (p.as_path(), probs.as_slice(), label[p.as_path()])),
        results.len(),
    );
    let mut confusion = Confusion::new(ds.class_names.len());
    for r in &ranked {
        confusion.add(&[r.truth[0] as u32], &[r.predicted[0] as u32]);
    }
    let mistakes: Vec<Mistake> = ranked
        .iter()
        .filter(|r| r.predicted != r.truth)
        .map(|r| Mistake {
            path: r.path.clone(),
            truth: ds.class_names[r.truth[0]].clone(),
            predicted: ds.class_names[r.predicted[0]].clone(),
            probability: r.probability,
        })
        .collect();
    let m = &confusion.matrix;
    let per_class: Vec<ClassMetrics> = confusion
        .precision_recall()
        .into_iter()
        .enumerate()
        .map(|(c, (precision, recall))| {
            let support: usize = m[c].iter().sum();
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassMetrics {
                class: ds.class_names[c].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "accuracy": confusion.accuracy(),
                "images": confusion.total(),
                "per_class": per_class,
                "confusion": m,
                "mistakes": mistakes,
                "skipped": skipped,
            })
        );
        return Ok(());
    }
    println!(
        "{} images, accuracy {:.4}",
        confusion.total(),
        confusion.accuracy()
    );
    println!(
        "\n{:<20} {:>9} {:>9} {:>9} {:>8}",
        "class", "precision", "recall", "f1", "support"
    );
    for c in &per_class {
        println!(
            "{:<20} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            c.class, c.precision, c.recall, c.f1, c.support
        );
    }
    println!("\nconfusion (rows: true, columns: predicted)");
    for (name, row) in ds.class_names.iter().zip(m) {
        println!(
            "{:<20} {}",
            name,
            row.iter().map(|v| format!("{v:>6}")).collect::<String>()
        );
    }
    if !mistakes.is_empty() {
        println!("\nmistakes, most confident first (true -> predicted, probability)");
        for m in &mistakes {
            println!(
                "{} -> {} {:.3}  {}",
                m.truth,
                m.predicted,
                m.probability,
                m.path.display()
            );
        }
    }
    Ok(())
}

/// A misclassified image in `eval`'s report.
#[derive(Serialize)]
struct Mistake {
    path: PathBuf,
    #[serde(rename = "true")]
    truth: String,
    predicted: String,
    probability: f32,
}

/// timm names the classifier `fc` in ResNets, `head.fc` in ConvNeXts, `head` in ViTs and
/// `classifier` elsewhere.
fn timm_classifier(architecture: &str) -> &'static str {
    match architecture {
        a if a.starts_with("resnet") => "fc",
        a if a.starts_with("convnext") => "head.fc",
        a if a.starts_with("vit_") || a.starts_with("deit_") => "head",
        _ => "classifier",
    }
}

/// A checkpoint as a timm model: `model.safetensors` in timm's key names and a `config.json`
/// with `architecture`, `num_classes`, `label_names` and `pretrained_cfg` (whose input size is
/// the one the model was trained at).
pub struct TimmFiles {
    pub weights: Vec<u8>,
    pub config: Vec<u8>,
}

/// The files [`export`] writes and `tltui push` uploads.
pub fn timm_files(ckpt: &Checkpoint) -> anyhow::Result<TimmFiles> {
    let classifier = timm_classifier(&ckpt.meta.architecture);
    let tensors: Vec<(String, Tensor)> = ckpt
        .params
        .iter()
        .map(|(k, v)| {
            let name = match k.strip_prefix("classifier.") {
                Some(rest) => format!("{classifier}.{rest}"),
                None => k.clone(),
            };
            (name, v.as_tensor().clone())
        })
        .collect();
    let info = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let weights = safetensors::serialize(tensors, Some(info))?;
    let num_features = ckpt.params.var("classifier.weight").dim(1)?;
    let size = ckpt.meta.preprocess.size as usize;
    let mut pretrained_cfg = serde_json::to_value(&ckpt.meta.pretrained_cfg)?;
    pretrained_cfg["input_size"] = serde_json::json!([3, size, size]);
    pretrained_cfg["num_classes"] = ckpt.meta.classes.len().into();
    pretrained_cfg["classifier"] = classifier.into();
    let mut config = serde_json::json!({
        "architecture": ckpt.meta.architecture,
        "num_classes": ckpt.meta.classes.len(),
        "num_features": num_features,
        "label_names": ckpt.meta.classes,
        "pretrained_cfg": pretrained_cfg,
    });
    if let Some(thresholds) = ckpt.meta.thresholds() {
        config["problem_type"] = onnx::MULTI_LABEL_PROBLEM.into();
        config["label_thresholds"] = thresholds.into();
    }
    Ok(TimmFiles {
        weights,
        config: serde_json::to_vec_pretty(&config)?,
    })
}

/// `tltui export SPEC OUT_DIR --format onnx`: `SPEC` is a checkpoint, a directory written by
/// `tltui export` or `hf-hub:ORG/NAME[@REV]` (as [`Classifier::open`] takes);
/// writes `OUT_DIR/model.onnx` through a temp file and a rename, so that nothing half-written
/// is left, and returns its path.
fn export_onnx(spec: &Path, out_dir: &Path, options: onnx::Options) -> anyhow::Result<PathBuf> {
    let is_checkpoint = spec.is_file() && !spec.to_str().is_some_and(|s| s.starts_with("hf-hub:"));
    let bytes = if is_checkpoint {
        let ckpt = Checkpoint::load(spec, &Device::Cpu)?;
        onnx::checkpoint_bytes(&ckpt, options)?
    } else {
        let model = Classifier::open(spec, Device::Cpu)?;
        let (net, head, preprocess, cfg) = model.parts();
        let info = onnx::Info::new(net, model.classes.clone(), preprocess, cfg)
            .with_thresholds(model.thresholds.clone());
        onnx::model_bytes(net, head, &info, options)?
    };
    std::fs::create_dir_all(out_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out_dir.display()))?;
    let path = out_dir.join(onnx::FILE_NAME);
    crate::atomic::atomic_write(&path, &bytes)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// `tltui export`: [`timm_files`] written to a directory, or with `--format onnx`
/// [`export_onnx`]'s `model.onnx`.
pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    if args.format == crate::cli::ExportFormat::Onnx {
        let options = onnx::Options {
            softmax: args.softmax,
            with_preprocessing: args.with_preprocessing,
        };
        let path = export_onnx(&args.checkpoint, &args.out_dir, options)?;
        println!("exported {}", path.display());
        return Ok(());
    }
    if args.softmax || args.with_preprocessing {
        anyhow::bail!("--softmax and --with-preprocessing apply to --format onnx only");
    }
    let ckpt = Checkpoint::load(&args.checkpoint, &Device::Cpu)?;
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out_dir.display()))?;
    let files = timm_files(&ckpt)?;
    crate::atomic::atomic_write(&args.out_dir.join("model.safetensors"), &files.weights)?;
    crate::atomic::atomic_write(&args.out_dir.join("config.json"), &files.config)?;
    println!(
        "exported {} to {}",
        ckpt.meta.architecture,
        args.out_dir.display()
    );
    Ok(())
}
