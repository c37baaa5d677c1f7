//! Command-line arguments.

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
}

/// Options that shape how a dataset is read and split.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// TOML file layered over the defaults (config/default.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use this folder's sub-folders as the classes instead of searching for them.
    #[arg(long, value_name = "PATH")]
    pub classes_dir: Option<PathBuf>,
    /// Share of each class held out for validation (overrides data.val_fraction).
    #[arg(long, value_name = "FRACTION")]
    pub val_fraction: Option<f64>,
    /// Seed for the split, augmentation and initialisation (overrides data.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Images per training batch (overrides data.batch_size).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
}

/// `tltui inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The dataset folder.
    pub dataset: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The main job: train on DATASET.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The dataset folder: one sub-folder of images per class, found however nested.
    pub dataset: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

impl DataArgs {
    /// The configuration: defaults, then `--config`, then these flags.
    pub fn config(&self) -> anyhow::Result<crate::config::Config> {
        let mut c = crate::config::Config::load(self.config.as_deref())?;
        if let Some(v) = self.val_fraction {
            c.data.val_fraction = v;
        }
        if let Some(v) = self.seed {
            c.data.seed = v;
        }
        if let Some(v) = self.batch_size {
            c.data.batch_size = v;
        }
        c.validate()?;
        Ok(c)
    }
}
