//! The training engine and the protocol it speaks: [`Command`]s in, [`Event`]s out. Nothing here
//! touches the terminal.

pub mod checkpoint;
pub mod engine;
pub mod features;
pub mod label_issues;
pub mod lr_find;
pub mod metrics;
pub mod multi_label;
pub mod objective;
pub mod optim;
pub mod recipe;
pub mod setup;

use crate::config::Epochs;
use crate::data::{ClassCount, DataReport, Skipped};
use crate::hub::DownloadProgress;
use crate::model::LayerGroup;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use engine::{quiet_engine_panics, Engine, EngineSetup, WeightsSource};
pub use setup::{BackboneArgs, DeviceArgs};

/// A training phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Backbone frozen, only the new head trains.
    Warmup,
    /// Backbone (all groups or the last few) trains with the head.
    Finetune,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Warmup => "warm-up",
            Phase::Finetune => "fine-tune",
        })
    }
}

/// How a validation result is labelled: the phase and epoch it ended, or "validation" when
/// asked for outside a phase.
pub fn validation_label(phase: Option<Phase>, epoch: usize) -> String {
    phase
        .map(|p| format!("{p} epoch {epoch}"))
        .unwrap_or_else(|| "validation".into())
}

/// What the engine is asked to do; it acts at the next batch boundary.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run warm-up for this many epochs, or until validation stops improving (switching from
    /// any running phase).
    Warmup {
        epochs: Epochs,
    },
    /// Run fine-tuning for this many epochs; `groups` unfreezes only the last N layer groups.
    Finetune {
        epochs: usize,
        groups: Option<usize>,
    },
    /// Stop at the next batch boundary until `Resume`.
    Pause,
    Resume,
    /// Write a checkpoint now.
    Save,
    /// Run validation now.
    Validate,
    /// Send an [`Event::AugmentationPreview`] of a random training image.
    PreviewAugmentations,
    /// Finish: write the final checkpoint and end.
    Stop,
    /// End at once after writing an `interrupted` checkpoint (Ctrl-C).
    Interrupt,
    /// Multiply the running phase's learning rate by this factor from the next batch.
    ScaleLr(f64),
    /// Set the running phase's peak learning rate (adopting the finder's suggestion), and go on
    /// if the finder was holding the phase.
    AdoptLr(f64),
    /// Fine-tuning: unfreeze (positive) or freeze (negative) this many more layer groups,
    /// counted from the head side.
    Unfreeze(isize),
    /// Fine-tuning: exactly this many layer groups, from the head side, train (a replayed
    /// `Unfreeze`).
    TrainableGroups(usize),
    /// Run a learning-rate range test from the current weights, which it restores; `adopt`
    /// sets the suggestion as the phase's rate. Without `adopt` the phase then waits paused for
    /// the user's choice: `AdoptLr` or `Resume`.
    FindLr {
        adopt: bool,
    },
    /// Look for images whose labels seem wrong, on the features of every image (computed first
    /// when needed): `folds` out-of-fold heads and confident learning. Answered by
    /// [`Event::LabelIssues`]; weights, random draws and data order are left as they were.
    FindLabelIssues {
        folds: usize,
    },
}

/// An RGB picture for the dashboard; serialised as its size only.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture(pub image::RgbImage);

impl Serialize for Picture {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Picture", 2)?;
        st.serialize_field("width", &self.0.width())?;
        st.serialize_field("height", &self.0.height())?;
        st.end()
    }
}

/// Where a feature-cache pass stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum FeatureStatus {
    /// Features were read from the disk cache: no backbone pass.
    Loaded {
        #[serde(serialize_with = "crate::data::lossy_path")]
        path: PathBuf,
        images: usize,
    },
    /// The pass finished in `seconds` and was saved (if `path` is set).
    Computed {
        images: usize,
        seconds: f64,
        path: Option<PathBuf>,
    },
}

/// A long pass over images that reports [`Event::Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pass {
    /// The frozen backbone over every image, for the feature cache.
    Features,
    /// The model over the validation images.
    Validation,
    /// The learning-rate finder's batches.
    LrFind,
}

impl std::fmt::Display for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pass::Features => "backbone features",
            Pass::Validation => "validation",
            Pass::LrFind => "learning-rate finder",
        })
    }
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Discovery and decoding finished.
    DatasetReady {
        /// One class an image, or any number of labels.
        task: crate::data::Task,
        #[serde(serialize_with = "crate::data::lossy_path")]
        class_root: PathBuf,
        classes: Vec<ClassCount>,
        skipped: Vec<Skipped>,
        ignored: usize,
        cached_images: usize,
        /// The class-root choice, copies and leakage.
        report: DataReport,
        /// The rule that labelled the images: `class folders`, `labels from file names:
        /// <class>.<n>.jpg`, `hf://datasets/… train 1049 / validation 350`, …
        source: String,
    },
    /// Images decoded so far.
    Decoding {
        done: usize,
        total: usize,
    },
    /// Backbone download progress.
    Download {
        progress: DownloadProgress,
    },
    /// The model is built.
    ModelReady {
        backbone: String,
        architecture: String,
        device: String,
        groups: Vec<LayerGroup>,
        head_params: usize,
    },
    /// The frozen-backbone feature cache.
    Features {
        status: FeatureStatus,
    },
    /// A phase started (or the engine went idle, `phase: null`).
    PhaseChanged {
        phase: Option<Phase>,
        epochs: usize,
    },
    /// Which layer groups train.
    FreezeChanged {
        groups: Vec<LayerGroup>,
        trainable_params: usize,
    },
    /// Images done so far in a long pass.
    Progress {
        pass: Pass,
        done: usize,
        total: usize,
        images_per_sec: f64,
        eta_seconds: f64,
    },
    /// The running phase's learning rate changed (`+`/`-`, an adopted finder suggestion); `lr`
    /// is the rate of the next batch.
    LrChanged {
        phase: Phase,
        peak: f64,
        lr: f64,
    },
    /// A learning-rate range test ended.
    LrFind(lr_find::LrFind),
    /// What the label-issue finder found.
    LabelIssues(label_issues::LabelIssues),
    /// One optimisation step.
    Batch {
        phase: Phase,
        epoch: usize,
        step: usize,
        steps_per_epoch: usize,
        loss: f32,
        accuracy: f32,
        lr: f64,
        images_per_sec: f64,
    },
    /// Validation results.
    Validation {
        phase: Option<Phase>,
        epoch: usize,
        loss: f32,
        accuracy: f32,
        /// Accuracy over the validation images that have no exact or near copy in training;
        /// present only when some have one.
        accuracy_clean: Option<f32>,
        per_class_accuracy: Vec<f32>,
        confusion: Vec<Vec<usize>>,
        /// The highest-loss validation images, worst first.
        top_losses: Vec<metrics::TopLoss>,
        /// Multi-label: mAP, F1 and each label's scores and threshold (`accuracy` is then
        /// exact match, and `per_class_accuracy` each label's recall).
        #[serde(skip_serializing_if = "Option::is_none")]
        multi_label: Option<multi_label::MultiLabelScores>,
        seconds: f64,
    },
    /// A training image as the network sees it: the eval input and, for each of the first
    /// epochs, the augmented input training renders for it then.
    AugmentationPreview {
        #[serde(serialize_with = "crate::data::lossy_path")]
        path: PathBuf,
        class: String,
        original: Picture,
        variants: Vec<Picture>,
    },
    /// A phase ended by itself: it ran all its epochs, or its validation stopped improving.
    PhaseFinished {
        phase: Phase,
        epochs: usize,
        /// Why it ended, for the log.
        reason: String,
    },
    Paused,
    Resumed,
    CheckpointSaved {
        path: PathBuf,
        reason: String,
    },
    Warning {
        message: String,
    },
    /// A failure the engine survived (e.g. a checkpoint that could not be written).
    Error {
        message: String,
    },
    /// The engine ended.
    #[serde(rename = "summary")]
    Finished(Summary),
}

/// The run's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub warmup_val_accuracy: Option<f32>,
    pub finetune_val_accuracy: Option<f32>,
    pub best_val_accuracy: Option<f32>,
    /// Multi-label: the best validation mAP (the best checkpoint's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_val_map: Option<f32>,
    /// Validation images with an exact or near copy in training.
    pub leaked_val_images: usize,
    pub checkpoint: Option<PathBuf>,
    pub seconds: f64,
    /// Set when the engine stopped on an error it could not survive.
    pub error: Option<String>,
    pub interrupted: bool,
}
