//! Using a trained checkpoint: `predict` images, `eval` a dataset split, `export` for timm.

use crate::cli::{EvalArgs, ExportArgs, PredictArgs};
use crate::data::decode::decode_rgb;
use crate::data::{is_image_name, Dataset, Preprocess, Skipped, SplitOptions};
use crate::model::{build_backbone, Backbone, Head, ModelConfig};
use crate::train::checkpoint::{Checkpoint, CheckpointMeta};
use crate::train::metrics::{top_losses, Confusion};
use candle_core::{Device, Tensor, D};
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Images per forward pass.
const BATCH: usize = 32;

/// An image and its class probabilities.
pub type Classified = (PathBuf, Vec<f32>);

/// A checkpoint ready to classify images.
pub struct Classifier {
    device: Device,
    backbone: Box<dyn Backbone>,
    head: Head,
    pub meta: CheckpointMeta,
}

impl Classifier {
    /// Loads a checkpoint written by tltui onto `device`.
    pub fn load(path: &Path, device: Device) -> anyhow::Result<Self> {
        let ckpt = Checkpoint::load(path, &device)?;
        let head = ckpt.head(0.0)?;
        let config = ModelConfig {
            architecture: ckpt.meta.architecture.clone(),
            num_features: None,
            pretrained_cfg: ckpt.meta.pretrained_cfg.clone(),
        };
        let backbone = build_backbone(&config, ckpt.params)?;
        Ok(Self {
            device,
            backbone,
            head,
            meta: ckpt.meta,
        })
    }

    fn preprocess(&self) -> &Preprocess {
        &self.meta.preprocess
    }

    /// Class probabilities `[N, K]` of decoded-and-preprocessed inputs.
    fn probabilities(&self, inputs: Vec<Vec<f32>>) -> anyhow::Result<Vec<Vec<f32>>> {
        let s = self.preprocess().size as usize;
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(BATCH) {
            let x = Tensor::from_vec(chunk.concat(), (chunk.len(), 3, s, s), &self.device)?;
            let logits = self.head.forward(
                &self.backbone.forward(&x, false)?,
                None::<&mut rand_chacha::ChaCha8Rng>,
            )?;
            out.extend(candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2::<f32>()?);
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

/// One image's top classes.
#[derive(Debug, Serialize)]
pub struct Prediction {
    #[serde(serialize_with = "crate::data::lossy_path")]
    pub path: PathBuf,
    pub top: Vec<ClassProbability>,
}

#[derive(Debug, Serialize)]
pub struct ClassProbability {
    pub class: String,
    pub probability: f32,
}

/// `tltui predict`.
pub fn predict(args: &PredictArgs) -> anyhow::Result<()> {
    let model = Classifier::load(&args.checkpoint, args.device.pick()?)?;
    let paths = collect_images(&args.images);
    let (results, skipped) = model.classify(&paths)?;
    let predictions: Vec<Prediction> = results
        .into_iter()
        .map(|(path, probs)| {
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            let top = order
                .into_iter()
                .take(args.top.max(1))
                .map(|i| ClassProbability {
                    class: model.meta.classes[i].clone(),
                    probability: probs[i],
                })
                .collect();
            Prediction { path, top }
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
            println!("{}: {}", p.path.display(), top.join(", "));
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

/// `tltui eval`.
pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let model = Classifier::load(&args.checkpoint, args.device.pick()?)?;
    let val_fraction = args.val_fraction.unwrap_or(model.meta.val_fraction);
    let seed = args.seed.unwrap_or(model.meta.seed);
    let data = &model.meta.config.data;
    let split = SplitOptions {
        val_fraction,
        seed,
        duplicates: data.duplicates,
    };
    let ds = Dataset::open(
        &args.dataset,
        args.classes_dir.as_deref(),
        &split,
        data.max_pixels(),
    )?;
    if ds.class_names != model.meta.classes {
        anyhow::bail!(
            "the checkpoint was trained on classes {:?}, but {} has {:?}",
            model.meta.classes,
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
    let label: std::collections::HashMap<&Path, usize> = samples
        .iter()
        .map(|s| (s.path.as_path(), s.label))
        .collect();
    let ranked = top_losses(
        results
            .iter()
            .map(|(p, probs)| (p.as_path(), probs.as_slice(), label[p.as_path()])),
        results.len(),
    );
    let mut confusion = Confusion::new(ds.class_names.len());
    for r in &ranked {
        confusion.add(&[r.truth as u32], &[r.predicted as u32]);
    }
    let mistakes: Vec<Mistake> = ranked
        .iter()
        .filter(|r| r.predicted != r.truth)
        .map(|r| Mistake {
            path: r.path.clone(),
            truth: ds.class_names[r.truth].clone(),
            predicted: ds.class_names[r.predicted].clone(),
            probability: r.probability,
        })
        .collect();
    let m = &confusion.matrix;
    let per_class: Vec<ClassMetrics> = (0..m.len())
        .map(|c| {
            let tp = m[c][c] as f32;
            let predicted: usize = m.iter().map(|row| row[c]).sum();
            let support: usize = m[c].iter().sum();
            let precision = tp / predicted.max(1) as f32;
            let recall = tp / support.max(1) as f32;
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

/// `tltui export`: `model.safetensors` with timm's keys and a timm `config.json`.
pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let ckpt = Checkpoint::load(&args.checkpoint, &Device::Cpu)?;
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out_dir.display()))?;
    // timm names the classifier `fc` in ResNets, `head.fc` in ConvNeXts, `classifier` elsewhere.
    let classifier = match ckpt.meta.architecture.as_str() {
        a if a.starts_with("resnet") => "fc",
        a if a.starts_with("convnext") => "head.fc",
        _ => "classifier",
    };
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
    let bytes = safetensors::serialize(tensors, Some(info))?;
    crate::train::checkpoint::atomic_write(&args.out_dir.join("model.safetensors"), &bytes)?;
    let num_features = ckpt.params.var("classifier.weight").dim(1)?;
    let mut pretrained_cfg = serde_json::to_value(&ckpt.meta.pretrained_cfg)?;
    pretrained_cfg["num_classes"] = ckpt.meta.classes.len().into();
    pretrained_cfg["classifier"] = classifier.into();
    let config = serde_json::json!({
        "architecture": ckpt.meta.architecture,
        "num_classes": ckpt.meta.classes.len(),
        "num_features": num_features,
        "label_names": ckpt.meta.classes,
        "pretrained_cfg": pretrained_cfg,
    });
    crate::train::checkpoint::atomic_write(
        &args.out_dir.join("config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    println!(
        "exported {} to {}",
        ckpt.meta.architecture,
        args.out_dir.display()
    );
    Ok(())
}
