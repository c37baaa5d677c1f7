//! The engine: owns data, model and optimiser on its own thread, takes [`Command`]s and emits
//! [`Event`]s.

use super::checkpoint::{
    self, Checkpoint, CheckpointMeta, CopiesRecord, PhaseRecord, RunRecord, ValidationRecord,
};
use super::features;
use super::metrics::{
    balanced_weights, multi_label_top_losses, predictions, top_losses, Confusion,
};
use super::multi_label;
use super::objective::{self, Objective};
use super::optim::{cosine_with_ramp, AdamW, Plateau, Verdict};
use super::recipe::{self, Action, Due, Recipe, Replay};
use super::{Command, Event, Pass, Phase, Picture, Summary};
use crate::config::{AugmentConfig, ClassWeights, Config, Epochs};
use crate::data::store::BatchMode;
use crate::data::{Dataset, ImageStore, Preprocess, Sample, SourceOptions, Task};
use crate::hub::{self, HubOptions, RepoId};
use crate::model::{build_backbone, Backbone, Head, ModelConfig, Params, TrainingPass};
use anyhow::Context;
use candle_core::{Device, Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

mod control;
mod epoch;
mod feature_pass;
mod prepare;
mod range_test;
mod steering;

use control::{Control, Halt, Meter};
use epoch::{AutoStop, Run};
use feature_pass::Features;

/// Where the pretrained backbone comes from.
#[derive(Debug, Clone)]
pub enum WeightsSource {
    /// A Hub repository, through the Hugging Face cache.
    Hub { repo: RepoId, options: HubOptions },
    /// A local `model.safetensors` with `config.json` beside it.
    Local { weights: PathBuf },
    /// The backbone of a checkpoint written by tltui (`--resume`): its weights, architecture
    /// and preprocessing.
    Checkpoint { path: PathBuf },
}

/// Everything the engine needs to start.
#[derive(Debug, Clone)]
pub struct EngineSetup {
    /// A folder, or `hf://datasets/ORG/NAME[@REVISION]`.
    pub dataset: PathBuf,
    /// How the dataset's images are labelled and read.
    pub source: SourceOptions,
    pub config: Config,
    pub weights: WeightsSource,
    pub checkpoint_dir: PathBuf,
    /// Directory of the warm-up feature cache; `None` keeps features in memory only.
    pub feature_cache_dir: Option<PathBuf>,
    pub device: Device,
    /// A recipe to replay instead of waiting for commands (only `Stop` and `Interrupt` are
    /// still taken); the engine stops when it is done.
    pub replay: Option<Recipe>,
}

/// A running engine: its command channel and thread.
pub struct Engine {
    commands: Sender<Command>,
    handle: std::thread::JoinHandle<()>,
}

impl Engine {
    /// Starts the engine thread; it prepares data and model, then waits for commands.
    pub fn spawn(setup: EngineSetup, events: Sender<Event>) -> Self {
        let (commands, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || run(setup, rx, events))
            .expect("spawning the engine thread");
        Self { commands, handle }
    }

    /// A sender for commands.
    pub fn commands(&self) -> Sender<Command> {
        self.commands.clone()
    }

    /// Waits for the engine thread to end.
    pub fn join(self) {
        drop(self.commands);
        let _ = self.handle.join();
    }
}

/// Name of the engine's thread.
const THREAD_NAME: &str = "tltui-engine";
/// Validation images listed in each [`Event::Validation`]'s `top_losses`.
const TOP_LOSSES: usize = 12;
/// Augmented variants in an [`Event::AugmentationPreview`].
const PREVIEW_VARIANTS: u64 = 8;
/// Mixed into the seed of the preview image picker.
const PREVIEW_SEED: u64 = 0x5052_4556_4945_5753;
/// Epochs of an `auto` warm-up that augments (each epoch then costs a backbone pass).
const AUTO_AUGMENTED_EPOCHS: usize = 3;
/// Most images per forward of a long pass (feature pass, validation): commands are taken between
/// them, so this bounds how long a pause or an interrupt waits on a busy CPU.
const PASS_CHUNK: usize = 8;

/// Keeps the default panic message off the screen for panics on the engine thread: the engine
/// catches them and reports them as an `Error` event (which a dashboard shows in place).
pub fn quiet_engine_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some(THREAD_NAME) {
            previous(info);
        }
    }));
}

/// The thread body: any error or panic ends in `Error` and `Finished` events.
fn run(setup: EngineSetup, rx: Receiver<Command>, events: Sender<Event>) {
    let started = Instant::now();
    let out = events.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> anyhow::Result<Summary> {
            let mut trainer = Trainer::prepare(setup, out, rx)?;
            trainer.serve()
        },
    ));
    let summary = match result {
        Ok(Ok(summary)) => summary,
        Ok(Err(e)) => match e.downcast_ref::<Halt>() {
            // Stopped while preparing: nothing trained, nothing to save.
            Some(halt) => Summary {
                interrupted: halt.interrupted,
                seconds: started.elapsed().as_secs_f64(),
                ..Summary::default()
            },
            None => failed(format!("{e:#}"), started),
        },
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            failed(
                format!("internal error in the training engine: {msg}"),
                started,
            )
        }
    };
    if let Some(e) = &summary.error {
        let _ = events.send(Event::Error { message: e.clone() });
    }
    let _ = events.send(Event::Finished(summary));
}

fn failed(error: String, started: Instant) -> Summary {
    Summary {
        error: Some(error),
        seconds: started.elapsed().as_secs_f64(),
        ..Summary::default()
    }
}

/// What the engine owns.
struct Trainer {
    config: Config,
    events: Sender<Event>,
    dataset: Dataset,
    store: ImageStore,
    device: Device,
    backbone: Box<dyn Backbone>,
    head: Head,
    model_config: ModelConfig,
    backbone_name: String,
    weights_path: PathBuf,
    objective: Objective,
    checkpoint_dir: PathBuf,
    feature_cache_dir: Option<PathBuf>,
    /// Features of the current backbone; dropped when fine-tuning changes it.
    features: Option<Features>,
    /// Whether fine-tuning changed the backbone since it was loaded (its features then no
    /// longer match the disk cache).
    backbone_changed: bool,
    rng: ChaCha8Rng,
    /// Picks the training images shown by augmentation previews (apart from `rng`, so previews
    /// leave training's random draws alone).
    preview_rng: ChaCha8Rng,
    run: Option<Run>,
    control: Control,
    /// Optimisation steps since the engine started: the clock of the recipe.
    steps_done: usize,
    /// The decisions so far, written beside and into checkpoints.
    recipe: Recipe,
    replay: Option<Replay>,
    /// Phase and epoch of the last finished training step, for checkpoints.
    last_phase: Option<Phase>,
    epochs_done: usize,
    trained_since_save: bool,
    /// Counts, phases and the last validation, for checkpoints.
    record: RunRecord,
    summary: Summary,
    started: Instant,
}

impl Trainer {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// Takes commands (or replays a recipe) and trains until told to stop.
    fn serve(&mut self) -> anyhow::Result<Summary> {
        loop {
            let busy = self.run.is_some() && !self.control.paused;
            let replayed = match self.replay.as_mut() {
                Some(replay) => replay.due(self.steps_done, self.run.is_none())?,
                None => Due::Later,
            };
            let command = match replayed {
                Due::Now(c) => Some(c),
                Due::Done => Some(Command::Stop),
                Due::Later => self.control.next(!busy),
            };
            let result = match command {
                Some(c) => match Halt::of(&c) {
                    Some(halt) => return self.finish(halt),
                    None => self.handle(c),
                },
                None => self.step(),
            };
            if let Err(e) = result {
                return match e.downcast_ref::<Halt>() {
                    Some(&halt) => self.finish(halt),
                    None => Err(e),
                };
            }
        }
    }

    fn handle(&mut self, command: Command) -> anyhow::Result<()> {
        match command {
            Command::Warmup { epochs } => {
                self.decide(Action::Warmup { epochs });
                let auto = epochs == Epochs::Auto;
                let epochs = match epochs {
                    Epochs::Count(n) => n,
                    Epochs::Auto if self.config.augment.warmup => AUTO_AUGMENTED_EPOCHS,
                    Epochs::Auto => self.config.train.warmup_max_epochs,
                };
                self.start(Phase::Warmup, epochs, None)?;
                if auto && epochs > 0 {
                    self.run.as_mut().expect("a warm-up runs").auto = Some(AutoStop {
                        plateau: Plateau::new(self.config.train.warmup_patience),
                        best: None,
                    });
                }
            }
            Command::Finetune { epochs, groups } => {
                self.decide(Action::Finetune { epochs, groups });
                self.start(Phase::Finetune, epochs, groups)?
            }
            Command::Pause => self.control.pause(true),
            Command::Resume => self.control.pause(false),
            Command::ScaleLr(factor) => self.scale_lr(factor),
            Command::AdoptLr(lr) => self.adopt_lr(lr),
            Command::Unfreeze(more) => self.unfreeze(more)?,
            Command::TrainableGroups(groups) => self.set_trainable_groups(groups)?,
            Command::FindLr { adopt } => {
                self.control.hold_after_finder = !adopt;
                self.find_lr(adopt)?;
                if std::mem::take(&mut self.control.hold_after_finder) && self.run.is_some() {
                    self.control.pause(true);
                }
            }
            Command::Save => {
                self.save("manual");
            }
            Command::Validate => {
                self.validate()?;
            }
            Command::PreviewAugmentations => self.preview_augmentations(),
            Command::FindLabelIssues { folds } => self.find_label_issues(folds)?,
            Command::Stop | Command::Interrupt => unreachable!("handled by serve"),
        }
        Ok(())
    }

    /// Sends a random training image as the network sees it, unaugmented and in the first
    /// epochs' augmentations; a failure is a warning.
    fn preview_augmentations(&mut self) {
        use rand::Rng;
        if self.dataset.train.is_empty() {
            return;
        }
        let i = self.preview_rng.random_range(0..self.dataset.train.len());
        let sample = &self.dataset.train[i];
        let event = match self.store.preview(sample, 1..=PREVIEW_VARIANTS) {
            Ok((original, variants)) => Event::AugmentationPreview {
                path: sample.path.clone(),
                class: self.dataset.tag_list(sample),
                original: Picture(original),
                variants: variants.into_iter().map(Picture).collect(),
            },
            Err(e) => Event::Warning {
                message: format!("no preview of {}: {e}", sample.path.display()),
            },
        };
        self.emit(event);
    }

    /// Records a decision in the recipe, at the current step.
    fn decide(&mut self, action: Action) {
        self.recipe.record(self.steps_done, action);
    }

    /// Ends the run: saves the `final` checkpoint, or the `interrupted` one after an interrupt.
    fn finish(&mut self, halt: Halt) -> anyhow::Result<Summary> {
        let interrupted = halt.interrupted;
        let name = if interrupted { "interrupted" } else { "final" };
        // An interrupt saves whatever training did, even if saved already; before the first
        // step there is nothing to save.
        if self.trained_since_save || (interrupted && self.steps_done > 0) {
            if let Some(path) = self.save(name) {
                self.summary.checkpoint = Some(path);
            }
        }
        self.summary.interrupted = interrupted;
        self.summary.seconds = self.started.elapsed().as_secs_f64();
        Ok(self.summary.clone())
    }

    fn emit_freeze(&self) {
        let parts = self.backbone.parts();
        let head = self.head.weight.elem_count() + self.head.bias.elem_count();
        let trainable = parts
            .groups
            .iter()
            .filter(|g| g.trainable)
            .map(|g| g.params)
            .sum::<usize>()
            + head;
        self.emit(Event::FreezeChanged {
            groups: parts.groups.clone(),
            trainable_params: trainable,
        });
    }

    /// Writes checkpoint `name`; a failure is reported and training goes on.
    fn save(&mut self, name: &str) -> Option<PathBuf> {
        let path = self.checkpoint_dir.join(format!("{name}.safetensors"));
        let meta = CheckpointMeta {
            format: checkpoint::FORMAT,
            task: self.dataset.task,
            classes: self.dataset.class_names.clone(),
            backbone: self.backbone_name.clone(),
            architecture: self.model_config.architecture.clone(),
            pretrained_cfg: self.model_config.pretrained_cfg.clone(),
            preprocess: self.store.preprocess().clone(),
            phase: self.last_phase,
            epoch: self.epochs_done + self.run.as_ref().map_or(0, |r| r.epoch),
            val_accuracy: self
                .summary
                .best_val_accuracy
                .filter(|_| name == "best")
                .or(self.last_val_accuracy()),
            class_root: self.dataset.class_root.clone(),
            val_fraction: self.config.data.val_fraction,
            seed: self.config.data.seed,
            config: self.config.clone(),
            record: self.record.clone(),
            recipe: Some(self.recipe.clone()),
        };
        let beside = self.checkpoint_dir.join(recipe::FILE_NAME);
        if let Err(e) = self.recipe.save(&beside) {
            self.emit(Event::Error {
                message: format!("{e:#}"),
            });
        }
        match checkpoint::save(&path, &self.backbone.parts().params, &self.head, &meta)
            .with_context(|| format!("{name} checkpoint not saved"))
        {
            Ok(()) => {
                if name != "best" {
                    self.trained_since_save = false;
                }
                self.emit(Event::CheckpointSaved {
                    path: path.clone(),
                    reason: name.to_string(),
                });
                Some(path)
            }
            Err(e) => {
                self.emit(Event::Error {
                    message: format!("{e:#}"),
                });
                None
            }
        }
    }

    fn last_val_accuracy(&self) -> Option<f32> {
        self.summary
            .finetune_val_accuracy
            .or(self.summary.warmup_val_accuracy)
    }
}

/// A device as the header shows it.
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => format!(
            "cpu ({} threads, {} kernels)",
            rayon::current_num_threads(),
            crate::simd::level().description()
        ),
        other => format!("{other:?}").to_lowercase(),
    }
}
