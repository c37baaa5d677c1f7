//! Command-line arguments.

use crate::config::DuplicateMode;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// A terminal trainer for transfer learning of image classifiers.
#[derive(Debug, Parser)]
#[command(name = "tltui", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// Subcommands beside the main job.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print what the dataset pipeline sees: class folder, classes, split counts, skipped files.
    Inspect(InspectArgs),
    /// Measure decode, forward, train-step and warm-up throughput on a dataset.
    Bench(BenchArgs),
    /// Classify images with a checkpoint.
    Predict(PredictArgs),
    /// Accuracy, per-class precision/recall/F1 and confusion of a checkpoint on a dataset.
    Eval(EvalArgs),
    /// Write a checkpoint as a timm model (model.safetensors, config.json) or, with --format onnx,
    /// as model.onnx for ONNX runtimes.
    Export(ExportArgs),
    /// Pooled backbone features of images, after the backbone's own eval transform.
    Embed(EmbedArgs),
    /// The supported architectures: default Hub repository, size, input, measured speed.
    Backbones(BackbonesArgs),
    /// Upload a checkpoint to the Hugging Face Hub as a timm model with a model card.
    Push(PushArgs),
    /// Print the recipe a checkpoint was trained by (replay it with --headless --recipe).
    Recipe(RecipeArgs),
}

/// Which backbone: a Hub repository (downloaded through the Hugging Face cache) or a local file.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct BackboneArgs {
    /// Pretrained backbone on the Hugging Face Hub, ORG/NAME[@REVISION].
    #[arg(long, value_name = "ID")]
    pub backbone: Option<String>,
    /// Local model.safetensors (with config.json beside it).
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,
}

impl BackboneArgs {
    /// The local weights file, `config.json` beside it; a Hub repository is fetched first.
    pub fn weights_path(&self) -> anyhow::Result<PathBuf> {
        match (&self.weights, &self.backbone) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some(id)) => crate::hub::fetch_backbone_blocking(id),
            (None, None) => anyhow::bail!("name a backbone with --backbone ID or --weights PATH"),
        }
    }
}

/// `tltui embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: BackboneArgs,
    /// Image files or directories (walked recursively).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Network input side in pixels instead of the backbone's own (the resize keeps crop_pct).
    #[arg(long, value_name = "N")]
    pub image_size: Option<u32>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Print one JSON object per image: {"path", "features"}.
    #[arg(long)]
    pub json: bool,
}

/// `tltui backbones`.
#[derive(Debug, Args)]
pub struct BackbonesArgs {
    /// Print one JSON array.
    #[arg(long)]
    pub json: bool,
}

/// `tltui recipe`.
#[derive(Debug, Args)]
pub struct RecipeArgs {
    /// A checkpoint written by tltui.
    pub checkpoint: PathBuf,
}

/// `tltui predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A checkpoint written by tltui, a directory written by `tltui export`, or
    /// hf-hub:ORG/NAME[@REVISION] (a pushed model, downloaded into the Hugging Face cache).
    pub checkpoint: PathBuf,
    /// Image files or directories (walked recursively).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Classes to show per image.
    #[arg(long, default_value_t = 1)]
    pub top: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `tltui eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A checkpoint written by tltui.
    pub checkpoint: PathBuf,
    /// The dataset folder, or hf://datasets/ORG/NAME[@REVISION].
    pub dataset: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Validation share (default: the one the checkpoint was trained with).
    #[arg(long, value_name = "FRACTION")]
    pub val_fraction: Option<f64>,
    /// Split seed (default: the checkpoint's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluate every image, not only the validation split.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `tltui export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A checkpoint written by tltui (with --format onnx also a directory written by `export`
    /// or hf-hub:ORG/NAME[@REV], as `predict` takes).
    pub checkpoint: PathBuf,
    /// Directory for model.safetensors and config.json (timm), or model.onnx.
    pub out_dir: PathBuf,
    /// timm (model.safetensors + config.json) or onnx (model.onnx, opset 17, class names and
    /// preprocessing in its metadata).
    #[arg(long, value_enum, default_value_t = ExportFormat::Timm)]
    pub format: ExportFormat,
    /// ONNX: add a `probabilities` output (softmax of `logits`).
    #[arg(long)]
    pub softmax: bool,
    /// ONNX: the graph takes uint8 RGB pixels [N, H, W, 3], already resized and cropped to the
    /// input size, and scales, normalises and reorders them itself.
    #[arg(long)]
    pub with_preprocessing: bool,
}

/// What `tltui export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// timm's model.safetensors and config.json.
    Timm,
    /// model.onnx.
    Onnx,
}

/// `tltui push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// A checkpoint written by tltui.
    pub checkpoint: PathBuf,
    /// The model repository, ORG/NAME; created if it does not exist, else updated by a commit.
    pub repo: String,
    /// Create the repository private (an existing one keeps its visibility).
    #[arg(long)]
    pub private: bool,
    /// Commit message.
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
    /// Branch to commit to (created if missing; default main).
    #[arg(long, value_name = "BRANCH")]
    pub revision: Option<String>,
    /// The Hub dataset the model was trained on, for the card's `datasets` (default: the
    /// `hf://datasets/…` it was trained from, if any).
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,
    /// Also upload model.onnx (`export --format onnx --with-preprocessing --softmax`); the
    /// model card says how to run it.
    #[arg(long)]
    pub onnx: bool,
    /// Print one JSON object per line, each with an "event" field.
    #[arg(long)]
    pub json: bool,
}

/// `tltui bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The dataset folder (or hf://datasets/ORG/NAME[@REVISION]) to read images from (not
    /// needed with --scaling).
    #[arg(required_unless_present_any = ["scaling", "scaling_run"])]
    pub dataset: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub model: BackboneArgs,
    /// Images per batch for the forward and train-step measurements.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Measured repetitions per figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Print one JSON object (the keys of peer_torch.py --bench, and more).
    #[arg(long)]
    pub json: bool,
    /// Leave out the launch-to-first-validation figures (a cold feature pass over the whole
    /// dataset: minutes on the larger backbones), for sweeps over backbones.
    #[arg(long)]
    pub skip_end_to_end: bool,
    /// Instead: one augmented warm-up epoch on generated datasets of these sizes, each in its
    /// own process (e.g. 1000,5000,20000).
    #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
    pub scaling: Vec<usize>,
    /// Also write the forward and train-step figures into this backbone catalog
    /// (config/backbones.toml), under the backbone's architecture.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Memory budget for decoded images in --scaling runs, in MiB (data.cache_memory_mb).
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub cache_mb: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// One --scaling size, run in this process (used by --scaling).
    #[arg(long, hide = true, value_name = "N")]
    pub scaling_run: Option<usize>,
}

/// Options that say how a dataset's images are labelled.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Use this folder's sub-folders as the classes instead of searching for them.
    #[arg(long, value_name = "PATH")]
    pub classes_dir: Option<PathBuf>,
    /// Label images by their file names with this regular expression (first capture group =
    /// the class), e.g. '^(.+)_\d+\.jpg$'.
    #[arg(long, value_name = "REGEX")]
    pub label_regex: Option<String>,
    /// A CSV, TSV or JSON-lines file listing images and their labels.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// The label file's column of image paths (header name or 0-based index).
    #[arg(long, value_name = "COLUMN")]
    pub path_column: Option<String>,
    /// The label file's (or Hub dataset's) label column.
    #[arg(long, value_name = "COLUMN")]
    pub label_column: Option<String>,
    /// Hub dataset: the config to read (default `default`, else the first).
    #[arg(long, value_name = "NAME")]
    pub dataset_config: Option<String>,
    /// Hub dataset: the training split (default `train`).
    #[arg(long, value_name = "SPLIT")]
    pub train_split: Option<String>,
    /// Hub dataset: the validation split (default `validation`, `valid`, `val`, else `test`).
    #[arg(long, value_name = "SPLIT")]
    pub val_split: Option<String>,
}

impl SourceArgs {
    /// How to read the dataset under `config`: these flags, the Hub settings, the memory budget.
    pub fn options(&self, config: &crate::config::Config) -> crate::data::SourceOptions {
        crate::data::SourceOptions {
            classes_dir: self.classes_dir.clone(),
            label_regex: self.label_regex.clone(),
            labels: self.labels.clone(),
            columns: crate::data::label_file::ColumnChoice {
                path: self.path_column.clone(),
                label: self.label_column.clone(),
            },
            hub_dataset: crate::data::hub_dataset::HubDatasetOptions {
                config: self.dataset_config.clone(),
                train_split: self.train_split.clone(),
                val_split: self.val_split.clone(),
                label_column: self.label_column.clone(),
            },
            hub: crate::hub::HubOptions::from_config(&config.hub),
            cache_budget_bytes: config.data.cache_memory_mb * 1024 * 1024,
        }
    }
}

/// Options that shape how a dataset is read and split.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// TOML file layered over the defaults (config/default.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Share of each class held out for validation (overrides data.val_fraction).
    #[arg(long, value_name = "FRACTION")]
    pub val_fraction: Option<f64>,
    /// Seed for the split, augmentation and initialisation (overrides data.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Images per training batch (overrides data.batch_size).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Copies of one picture: group (keep them on one side of the split), warn, or off
    /// (overrides data.duplicates).
    #[arg(long, value_name = "MODE")]
    pub duplicates: Option<DuplicateMode>,
    /// Input side in pixels instead of the backbone's own (overrides data.image_size; ViTs
    /// resample their position embeddings).
    #[arg(long, value_name = "N")]
    pub image_size: Option<u32>,
}

/// `tltui inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The dataset folder, or hf://datasets/ORG/NAME[@REVISION].
    pub dataset: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// List every file with its class, side of the split and group.
    #[arg(long)]
    pub files: bool,
}

/// The main job: train on DATASET.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The dataset: a folder (class folders however nested, labels in file names, or a label
    /// file), or a Hub dataset as hf://datasets/ORG/NAME[@REVISION].
    pub dataset: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Pretrained backbone on the Hugging Face Hub, ORG/NAME[@REVISION] (overrides hub.backbone).
    #[arg(long, value_name = "ID")]
    pub backbone: Option<String>,
    /// Local model.safetensors (with config.json beside it) instead of downloading.
    #[arg(long, value_name = "PATH", conflicts_with = "backbone")]
    pub weights: Option<PathBuf>,
    /// Directory for checkpoints (overrides checkpoint.dir).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from a checkpoint written by tltui.
    #[arg(long, value_name = "CKPT")]
    pub resume: Option<PathBuf>,
    /// Run without the dashboard: warm up, fine-tune, print progress, exit.
    #[arg(long)]
    pub headless: bool,
    /// With --headless: print one JSON object per line, each with an "event" field.
    #[arg(long, requires = "headless")]
    pub json: bool,
    /// Warm-up epochs, or `auto` (until validation loss stops improving); headless: run them;
    /// dashboard: epochs per `w`. Overrides train.warmup_epochs.
    #[arg(long, value_name = "N|auto")]
    pub warmup_epochs: Option<crate::config::Epochs>,
    /// Fine-tune epochs (headless: run them after warm-up; dashboard: epochs per `f`).
    #[arg(long, value_name = "N")]
    pub finetune_epochs: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// With --headless: replay a recipe (recipe.toml beside the checkpoints, or `tltui recipe
    /// CKPT`): its configuration, and its commands at the steps they took effect.
    #[arg(
        long,
        value_name = "FILE",
        requires = "headless",
        conflicts_with = "resume"
    )]
    pub recipe: Option<PathBuf>,
    /// With --headless: run the learning-rate finder at the start of the first phase and adopt
    /// its suggestion.
    #[arg(long, requires = "headless", conflicts_with = "recipe")]
    pub find_lr: bool,
    /// Dashboard: start this phase without waiting for a key (overrides train.auto_start).
    #[arg(long, value_name = "PHASE", value_parser = ["none", "warmup", "finetune"])]
    pub start: Option<String>,
}

impl TrainArgs {
    /// The configuration with every flag applied.
    pub fn config(&self) -> anyhow::Result<crate::config::Config> {
        let mut c = self.data.config()?;
        if let Some(b) = &self.backbone {
            c.hub.backbone = b.clone();
        }
        if let Some(n) = self.warmup_epochs {
            c.train.warmup_epochs = n;
        }
        if let Some(n) = self.finetune_epochs {
            c.train.finetune_epochs = n;
        }
        if let Some(dir) = &self.checkpoint_dir {
            c.checkpoint.dir = dir.display().to_string();
        }
        if let Some(start) = &self.start {
            c.train.auto_start = match start.as_str() {
                "warmup" => crate::config::AutoStart::Warmup,
                "finetune" => crate::config::AutoStart::Finetune,
                _ => crate::config::AutoStart::None,
            };
        }
        Ok(c)
    }

    /// The engine's setup for `dataset` under `config`.
    pub fn engine_setup(
        &self,
        dataset: &std::path::Path,
        config: crate::config::Config,
    ) -> anyhow::Result<crate::train::EngineSetup> {
        use crate::train::WeightsSource;
        let weights = match &self.weights {
            Some(path) => WeightsSource::Local {
                weights: path.clone(),
            },
            None => WeightsSource::Hub {
                repo: config.hub.backbone.parse().map_err(anyhow::Error::msg)?,
                options: crate::hub::HubOptions::from_config(&config.hub),
            },
        };
        let cache = dirs::cache_dir().map(|d| d.join("tltui"));
        let checkpoint_dir = if config.checkpoint.dir.is_empty() {
            let name = crate::data::dataset_name(dataset);
            cache
                .clone()
                .ok_or_else(|| {
                    anyhow::anyhow!("no cache directory on this system; pass --checkpoint-dir")
                })?
                .join("checkpoints")
                .join(name)
        } else {
            PathBuf::from(&config.checkpoint.dir)
        };
        Ok(crate::train::EngineSetup {
            dataset: dataset.to_path_buf(),
            source: self.data.source.options(&config),
            config,
            weights,
            checkpoint_dir,
            resume: self.resume.clone(),
            feature_cache_dir: cache.map(|d| d.join("features")),
            device: self.device.pick()?,
            replay: None,
        })
    }
}

/// Where the model runs.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// `cpu` or `cuda[:N]`. Default: the first CUDA GPU when tltui was built with the `cuda`
    /// feature and one is present, else the CPU.
    #[arg(long = "device", value_name = "DEVICE")]
    pub name: Option<String>,
}

impl DeviceArgs {
    /// The device named, or the default.
    pub fn pick(&self) -> anyhow::Result<candle_core::Device> {
        pick_device(self.name.as_deref())
    }
}

/// The device `spec` names (`cpu`, `cuda`, `cuda:N`), or the default: the first CUDA GPU when
/// built with the `cuda` feature and one is present, else the CPU.
fn pick_device(spec: Option<&str>) -> anyhow::Result<candle_core::Device> {
    use candle_core::Device;
    let ordinal = match spec {
        None if cfg!(feature = "cuda") => {
            return Ok(Device::new_cuda(0).unwrap_or(Device::Cpu));
        }
        None | Some("cpu") => return Ok(Device::Cpu),
        Some("cuda") => 0,
        Some(s) => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("unknown device {s:?}: use cpu, cuda or cuda:N"))?,
    };
    if !cfg!(feature = "cuda") {
        anyhow::bail!(
            "this tltui was built without CUDA; build it with scripts/cuda-build.sh (cargo build --features cuda)"
        );
    }
    Device::new_cuda(ordinal).map_err(|e| anyhow::anyhow!("CUDA device {ordinal}: {e}"))
}

impl DataArgs {
    /// The configuration: defaults, then `--config`, then these flags.
    pub fn config(&self) -> anyhow::Result<crate::config::Config> {
        let mut c = crate::config::Config::load(self.config.as_deref())?;
        if let Some(v) = self.val_fraction {
            c.data.val_fraction = v;
        }
        if let Some(v) = self.duplicates {
            c.data.duplicates = v;
        }
        if let Some(v) = self.seed {
            c.data.seed = v;
        }
        if let Some(v) = self.batch_size {
            c.data.batch_size = v;
        }
        if let Some(v) = self.image_size {
            c.data.image_size = v;
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::pick_device;

    #[test]
    fn devices_by_name() {
        assert!(pick_device(Some("cpu")).unwrap().is_cpu());
        let err = pick_device(Some("gpu")).unwrap_err().to_string();
        assert!(err.contains("unknown device"), "{err}");
        if !cfg!(feature = "cuda") {
            assert!(pick_device(None).unwrap().is_cpu());
            let err = pick_device(Some("cuda:1")).unwrap_err().to_string();
            assert!(err.contains("built without CUDA"), "{err}");
        }
    }
}
