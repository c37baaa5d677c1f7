//! Dashboard state: built only from engine events ([`App::apply`], in `events`) and keys
//! ([`App::on_key`], in `keys`), so it can be tested without a terminal.

mod events;
mod keys;
pub mod review;

#[cfg(test)]
pub(crate) use events::tests::dataset_ready;
pub use keys::Action;
pub use review::Review;

use crate::config::Epochs;
use crate::data::{ClassCount, DataReport};
use crate::hub::DownloadProgress;
use crate::model::LayerGroup;
use crate::train::lr_find::LrFind;
use crate::train::metrics::{Ema, TopLoss};
use crate::train::{Event, FeatureStatus, Pass, Phase, Picture, WeightsSource};
use crate::ui::pictures::Pictures;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Batches kept for the sparklines.
const HISTORY: usize = 1000;
/// Log lines kept.
const LOG_LINES: usize = 200;
/// Key prefix of the top-loss pictures in [`App::pictures`] (dropped at each validation).
pub const TOP_LOSS_PICTURES: &str = "top-loss:";
/// Key prefix of the augmentation-preview pictures (dropped at each new preview).
pub const AUGMENTATION_PICTURES: &str = "augmentation:";
/// Key prefix of the label-review pictures (dropped at each new finder result).
pub const LABEL_REVIEW_PICTURES: &str = "label-review:";

/// What the engine is doing, as the header shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Downloading, decoding, building.
    Preparing,
    /// Waiting for `w` or `f`.
    Idle,
    Running(Phase),
    Paused(Phase),
    /// The engine ended.
    Finished,
}

/// One file of the backbone download.
#[derive(Debug, Clone, PartialEq)]
pub struct FileDownload {
    pub file: String,
    pub done: u64,
    pub total: u64,
    pub bytes_per_sec: f64,
    pub from_cache: bool,
    pub complete: bool,
    started: Instant,
}

/// Weight of the past in a live chart's trend: an exponential moving average over about ten
/// batches, restarted when the phase changes.
pub const TREND_BETA: f64 = 0.9;

/// One batch's value in a live chart, with the trend up to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchPoint {
    /// Optimisation steps so far in the run, this one included.
    pub step: usize,
    pub phase: Phase,
    pub value: f32,
    /// The smoothed value ([`TREND_BETA`]).
    pub trend: f32,
}

/// A per-batch metric (the last [`HISTORY`] batches) and its trend.
#[derive(Debug, Clone)]
pub struct Series {
    pub points: VecDeque<BatchPoint>,
    trend: Ema,
}

impl Default for Series {
    fn default() -> Self {
        Self {
            points: VecDeque::new(),
            trend: Ema::new(TREND_BETA),
        }
    }
}

impl Series {
    /// Adds the value of optimisation step `step`.
    pub fn push(&mut self, step: usize, phase: Phase, value: f32) {
        if self.points.back().is_some_and(|p| p.phase != phase) {
            self.trend = Ema::new(TREND_BETA);
        }
        let trend = self.trend.push(value as f64) as f32;
        push_bounded(
            &mut self.points,
            BatchPoint {
                step,
                phase,
                value,
                trend,
            },
        );
    }
}

/// One validation result.
#[derive(Debug, Clone, PartialEq)]
pub struct ValPoint {
    /// Optimisation steps in the run when it was taken.
    pub step: usize,
    pub phase: Option<Phase>,
    pub epoch: usize,
    pub loss: f32,
    pub accuracy: f32,
}

/// One epoch of the run's history: the mean of its training batches and its validation.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochPoint {
    pub phase: Phase,
    pub epoch: usize,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub val_loss: f32,
    pub val_accuracy: f32,
}

/// Where a long pass (feature pass, validation, finder) stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassProgress {
    pub pass: Pass,
    pub done: usize,
    pub total: usize,
    pub images_per_sec: f64,
    pub eta_seconds: f64,
}

/// What the middle of the dashboard shows beside (or instead of) the charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    /// Layer groups and their freeze state, beside the charts.
    Layers,
    /// The last validation's confusion matrix, beside the charts (`c`).
    Confusion,
    /// The last validation's highest-loss images with a picture, full width (`l`).
    TopLosses,
    /// A training image and its augmentations, full width (`a`).
    Augmentations,
    /// Training and validation loss and accuracy per epoch across phases, full width (`h`).
    History,
    /// The learning-rate finder's curve and suggestion, full width (`r`).
    LrFinder,
    /// The label-issue finder's suspects, one at a time, to relabel, exclude or keep, full
    /// width (`i`).
    LabelReview,
}

/// A training image as the network sees it, and its augmented variants.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentationPreview {
    pub path: String,
    pub class: String,
    pub original: Picture,
    pub variants: Vec<Picture>,
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

/// Where the backbone's weights come from, as the start-up log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsOrigin {
    /// A Hub repository (through the Hugging Face cache).
    Hub(String),
    /// A local `model.safetensors` given with `--weights`.
    Local(String),
    /// The backbone of a tltui checkpoint (`--resume`).
    Checkpoint(String),
}

impl From<&WeightsSource> for WeightsOrigin {
    fn from(source: &WeightsSource) -> Self {
        match source {
            WeightsSource::Hub { repo, .. } => WeightsOrigin::Hub(repo.to_string()),
            WeightsSource::Local { weights } => WeightsOrigin::Local(weights.display().to_string()),
            WeightsSource::Checkpoint { path } => {
                WeightsOrigin::Checkpoint(path.display().to_string())
            }
        }
    }
}

/// Everything the panels draw.
pub struct App {
    pub dataset: String,
    /// The class root and the rule that labelled the images.
    pub class_root: Option<String>,
    /// How the class root was chosen, copies and leakage.
    pub data_report: Option<DataReport>,
    pub backbone: String,
    /// Where the weights come from, when the caller knows (the engine's setup).
    pub weights_origin: Option<WeightsOrigin>,
    pub architecture: String,
    pub device: String,
    pub status: Status,
    pub warmup_epochs: Epochs,
    pub finetune_epochs: usize,
    pub phase_epochs: usize,
    pub epoch: usize,
    pub step: usize,
    pub steps_per_epoch: usize,
    pub images_per_sec: f64,
    pub lr: f64,
    pub started: Instant,
    epoch_started: Option<Instant>,
    pub last_validation_secs: f64,
    pub downloads: Vec<FileDownload>,
    pub decoding: Option<(usize, usize)>,
    pub features: Option<FeatureStatus>,
    /// The last long pass's progress.
    pub progress: Option<PassProgress>,
    pub classes: Vec<ClassCount>,
    pub skipped: usize,
    /// Optimisation steps so far in the run.
    pub batches: usize,
    pub losses: Series,
    pub accuracies: Series,
    pub validations: Vec<ValPoint>,
    /// Every epoch that ended in a validation, across phases.
    pub history: Vec<EpochPoint>,
    /// Sum of loss and accuracy, and batches, of the epoch in progress.
    epoch_sums: (f64, f64, usize),
    /// The last learning-rate finder's result.
    pub lr_find: Option<LrFind>,
    pub groups: Vec<LayerGroup>,
    pub trainable_params: usize,
    /// The last validation's confusion counts, `[true][predicted]`.
    pub confusion: Option<Vec<Vec<usize>>>,
    /// One class an image, or any number of labels (then the charts' validation points are
    /// mAP, and the confusion view is the per-label table).
    pub task: crate::data::Task,
    /// Multi-label: the last validation's scores per label.
    pub label_scores: Option<crate::train::multi_label::MultiLabelScores>,
    /// The last validation's highest-loss images, worst first.
    pub top_losses: Vec<TopLoss>,
    /// Index of the top-loss entry whose picture is shown.
    pub selected_loss: usize,
    pub preview: Option<AugmentationPreview>,
    /// The label-issue finder's result and the review of its suspects.
    pub review: Review,
    /// Where the dataset's label corrections are saved (`None`: no cache folder, nothing can be
    /// saved); [`super::run`] sets it, tests point it into a temporary folder.
    pub corrections_path: Option<PathBuf>,
    pub panel: Panel,
    pub pictures: Pictures,
    pub log: VecDeque<(Level, String)>,
    pub show_help: bool,
    pub confirm_quit: bool,
    /// The last key's command, shown until the engine acts on it.
    pub pending: Option<String>,
    pub unsaved: bool,
    pub quit_after_save: bool,
    pub should_quit: bool,
    pub color: bool,
}

impl App {
    pub fn new(
        dataset: String,
        backbone: String,
        warmup_epochs: Epochs,
        finetune_epochs: usize,
        color: bool,
    ) -> Self {
        Self {
            dataset,
            class_root: None,
            data_report: None,
            backbone,
            weights_origin: None,
            architecture: String::new(),
            device: String::new(),
            status: Status::Preparing,
            warmup_epochs,
            finetune_epochs,
            phase_epochs: 0,
            epoch: 0,
            step: 0,
            steps_per_epoch: 0,
            images_per_sec: 0.0,
            lr: 0.0,
            started: Instant::now(),
            epoch_started: None,
            last_validation_secs: 0.0,
            downloads: Vec::new(),
            decoding: None,
            features: None,
            progress: None,
            classes: Vec::new(),
            skipped: 0,
            batches: 0,
            losses: Series::default(),
            accuracies: Series::default(),
            validations: Vec::new(),
            history: Vec::new(),
            epoch_sums: (0.0, 0.0, 0),
            lr_find: None,
            groups: Vec::new(),
            trainable_params: 0,
            confusion: None,
            task: crate::data::Task::SingleLabel,
            label_scores: None,
            top_losses: Vec::new(),
            selected_loss: 0,
            preview: None,
            review: Review::default(),
            corrections_path: None,
            panel: Panel::Layers,
            pictures: Pictures::halfblocks(),
            log: VecDeque::new(),
            show_help: false,
            confirm_quit: false,
            pending: None,
            unsaved: false,
            quit_after_save: false,
            should_quit: false,
            color,
        }
    }

    fn log(&mut self, level: Level, message: String) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back((level, message));
    }

    /// Estimated time to the end of the epoch, validation included.
    pub fn eta(&self) -> Option<Duration> {
        let started = self.epoch_started?;
        if self.step == 0 || !matches!(self.status, Status::Running(_)) {
            return None;
        }
        let per_step = started.elapsed().as_secs_f64() / self.step as f64;
        let left = per_step * (self.steps_per_epoch - self.step.min(self.steps_per_epoch)) as f64
            + self.last_validation_secs;
        Some(Duration::from_secs_f64(left))
    }
}

fn push_bounded<T>(v: &mut VecDeque<T>, item: T) {
    if v.len() == HISTORY {
        v.pop_front();
    }
    v.push_back(item);
}
