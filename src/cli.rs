//! Command-line arguments, parsed and nothing else: each module owns the flags it reads
//! ([`crate::config::ConfigArgs`], [`crate::data::SourceArgs`], [`crate::train::BackboneArgs`])
//! and this file composes them per command, so that every command reads one set of each.

use crate::config::{ConfigArgs, PlanArgs};
use crate::data::SourceArgs;
use crate::train::{BackboneArgs, DeviceArgs};
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

impl Cli {
    /// Parses the command line (exits on `--help`, `--version` or a usage error); `--version`
    /// also names the vector instructions the kernels picked on this CPU.
    pub fn parse_args() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let long_version = format!("{}\n{}", env!("CARGO_PKG_VERSION"), crate::simd::summary());
        let matches = Self::command()
            .long_version(&*Box::leak(long_version.into_boxed_str()))
            .get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
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

/// `tltui embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: BackboneArgs,
    /// Image files or directories (walked recursively).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
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
    /// How the dataset is read; `--val-fraction` and `--seed` default to the checkpoint's.
    #[command(flatten)]
    pub data: DataArgs,
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
    pub data: DataArgs,
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
    /// One --scaling size, run in this process (used by --scaling).
    #[arg(long, hide = true, value_name = "N")]
    pub scaling_run: Option<usize>,
}

/// How a dataset is read and split: the flags of every command that reads one.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub source: SourceArgs,
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
    /// Find images whose label looks wrong (confident learning on out-of-fold heads over the
    /// backbone's cached features) and images that fit no class.
    #[arg(long)]
    pub label_issues: bool,
    /// Folds of the label-issue finder: each image is judged by a head that never saw it.
    #[arg(long, default_value_t = crate::train::label_issues::DEFAULT_FOLDS as u16, value_parser = clap::value_parser!(u16).range(2..), requires = "label_issues")]
    pub folds: u16,
    /// Write the dataset as a label file (`file_name,label`) with the findings fixed.
    #[arg(long, value_name = "FILE", requires = "label_issues")]
    pub write_labels: Option<PathBuf>,
    /// How --write-labels fixes a flagged image: give it the suggested label, or leave it out.
    #[arg(long, value_enum, default_value_t = FixMode::Relabel, requires = "write_labels")]
    pub fix: FixMode,
    #[command(flatten)]
    pub model: BackboneArgs,
}

/// How a corrected label file treats a flagged image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FixMode {
    /// The suggested label.
    Relabel,
    /// Left out of the file.
    Exclude,
}

/// The main job: train on DATASET.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The dataset: a folder (class folders however nested, labels in file names, or a label
    /// file), or a Hub dataset as hf://datasets/ORG/NAME[@REVISION].
    pub dataset: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: BackboneArgs,
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Continue from a checkpoint written by tltui, with its backbone (a --backbone or --weights
    /// that names another is an error).
    #[arg(long, value_name = "CKPT")]
    pub resume: Option<PathBuf>,
    /// Run without the dashboard: warm up, fine-tune, print progress, exit.
    #[arg(long)]
    pub headless: bool,
    /// With --headless: print one JSON object per line, each with an "event" field.
    #[arg(long, requires = "headless")]
    pub json: bool,
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
    /// With --headless: before training, look for mislabelled images on the backbone's features
    /// (out-of-fold heads, confident learning); the run directory gets label_issues.csv.
    #[arg(long, requires = "headless", conflicts_with = "recipe")]
    pub label_issues: bool,
}
