//! The engine: owns data, model and optimiser on its own thread, takes [`Command`]s and emits
//! [`Event`]s.

use super::checkpoint::{
    self, Checkpoint, CheckpointMeta, CopiesRecord, PhaseRecord, RunRecord, ValidationRecord,
};
use super::features;
use super::metrics::{balanced_weights, cross_entropy, predictions, top_losses, Confusion};
use super::optim::{cosine_with_ramp, AdamW, Plateau, Verdict};
use super::recipe::{self, Action, Due, Recipe, Replay};
use super::{Command, Event, FeatureStatus, Pass, Phase, Picture, Summary};
use crate::config::{AugmentConfig, ClassWeights, Config, Epochs};
use crate::data::store::BatchMode;
use crate::data::{Dataset, ImageStore, Preprocess, Sample, SourceOptions};
use crate::hub::{self, HubOptions, RepoId};
use crate::model::{build_backbone, Backbone, Head, ModelConfig, Params, TrainingPass};
use anyhow::Context;
use candle_core::{Device, Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

mod prepare;
mod range_test;
mod steering;

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

/// The phase in progress.
struct Run {
    phase: Phase,
    epochs: usize,
    epoch: usize,
    step: usize,
    steps_per_epoch: usize,
    total_steps: usize,
    ramp_steps: usize,
    order: Vec<usize>,
    optimizer: AdamW,
    base_lr: f64,
    /// Augmented images through the backbone (else cached features through the head).
    through_backbone: bool,
    /// An `auto` warm-up: early stopping and the best head so far (else a cosine schedule).
    auto: Option<AutoStop>,
}

impl Run {
    /// The learning rate of the next step.
    fn lr(&self) -> f64 {
        if self.auto.is_some() {
            return self.base_lr;
        }
        let global = self.epoch * self.steps_per_epoch + self.step;
        cosine_with_ramp(self.base_lr, global, self.total_steps, self.ramp_steps)
    }
}

/// The state of an `auto` warm-up.
struct AutoStop {
    plateau: Plateau,
    /// Epoch, validation loss and accuracy, weight and bias of the best head so far.
    best: Option<(usize, f32, f32, Tensor, Tensor)>,
}

/// Validation loss and accuracy.
#[derive(Debug, Clone, Copy)]
struct Scores {
    loss: f32,
    accuracy: f32,
}

/// Whether `phase` trains on augmented images.
fn augments(augment: &AugmentConfig, phase: Phase) -> bool {
    match phase {
        Phase::Warmup => augment.warmup,
        Phase::Finetune => augment.finetune,
    }
}

/// A long pass cut short by `Stop` (or `Interrupt`); the engine then finishes.
#[derive(Debug, Clone, Copy)]
struct Halt {
    interrupted: bool,
}

impl Halt {
    /// The halt `command` asks for: `Stop` and `Interrupt` end a pass, others do not.
    fn of(command: &Command) -> Option<Self> {
        match command {
            Command::Stop => Some(Self { interrupted: false }),
            Command::Interrupt => Some(Self { interrupted: true }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Halt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped during a long pass")
    }
}

impl std::error::Error for Halt {}

/// The command channel, and whether training is paused. Long passes call
/// [`Control::between_batches`], which acts on pause, resume, stop and interrupt at once and
/// keeps other commands for when the pass ends.
struct Control {
    rx: Receiver<Command>,
    queued: VecDeque<Command>,
    events: Sender<Event>,
    paused: bool,
    /// The dashboard's finder runs: pause when it ends, unless a `Resume` came meanwhile.
    hold_after_finder: bool,
}

impl Control {
    /// The next command: a queued one, else one from the channel (waiting for it when `wait`);
    /// a closed channel reads as `Stop`.
    fn next(&mut self, wait: bool) -> Option<Command> {
        if let Some(c) = self.queued.pop_front() {
            return Some(c);
        }
        if wait {
            return Some(self.rx.recv().unwrap_or(Command::Stop));
        }
        match self.rx.try_recv() {
            Ok(c) => Some(c),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Command::Stop),
        }
    }

    fn pause(&mut self, paused: bool) {
        self.hold_after_finder &= paused;
        if self.paused != paused {
            self.paused = paused;
            let _ = self.events.send(if paused {
                Event::Paused
            } else {
                Event::Resumed
            });
        }
    }

    /// Reports a long pass's progress, then takes the commands that arrived: waits while
    /// paused; `Stop` and `Interrupt` end the pass with a [`Halt`] error.
    fn between_batches(&mut self, meter: &Meter, done: usize) -> anyhow::Result<()> {
        let _ = self.events.send(meter.event(done));
        loop {
            let command = if self.paused {
                self.rx.recv().unwrap_or(Command::Stop)
            } else {
                match self.rx.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Disconnected) => Command::Stop,
                }
            };
            if let Some(halt) = Halt::of(&command) {
                return Err(halt.into());
            }
            match command {
                Command::Pause => self.pause(true),
                Command::Resume => self.pause(false),
                other => self.queued.push_back(other),
            }
        }
    }
}

/// Rate and ETA of a long pass.
struct Meter {
    pass: Pass,
    total: usize,
    started: Instant,
}

impl Meter {
    fn new(pass: Pass, total: usize) -> Self {
        Self {
            pass,
            total,
            started: Instant::now(),
        }
    }

    fn event(&self, done: usize) -> Event {
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        Event::Progress {
            pass: self.pass,
            done,
            total: self.total,
            images_per_sec: rate,
            eta_seconds: if rate > 0.0 {
                self.total.saturating_sub(done) as f64 / rate
            } else {
                0.0
            },
        }
    }
}

/// Pooled features of the training and validation images, in split order.
#[derive(Clone)]
struct Features {
    train: Tensor,
    val: Tensor,
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
    class_weights: Option<Tensor>,
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
                class: self.dataset.class_names[sample.label].clone(),
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

    /// Switches to `phase` for `epochs` epochs, at a batch boundary.
    fn start(&mut self, phase: Phase, epochs: usize, groups: Option<usize>) -> anyhow::Result<()> {
        let unfrozen = self.freeze_for(phase, groups);
        self.emit_freeze();
        self.control.pause(false);
        self.emit(Event::PhaseChanged {
            phase: Some(phase),
            epochs,
        });
        if epochs == 0 {
            self.run = None;
            return Ok(());
        }
        let run = self.new_run(phase, epochs)?;
        self.record.phases.push(PhaseRecord {
            phase,
            epochs: 0,
            lr: run.base_lr,
            unfrozen_groups: unfrozen,
            groups: self.backbone.parts().groups.len(),
            augmented: augments(&self.config.augment, phase),
        });
        self.run = Some(run);
        Ok(())
    }

    /// Freezes the backbone for `phase`: all of it to warm up, all but the last `groups`
    /// (`train.finetune_groups` when `None`; 0 = none) to fine-tune. Returns the unfrozen count.
    fn freeze_for(&mut self, phase: Phase, groups: Option<usize>) -> usize {
        let n_groups = self.backbone.parts().groups.len();
        let unfrozen = match phase {
            Phase::Warmup => 0,
            Phase::Finetune => match groups.unwrap_or(self.config.train.finetune_groups) {
                0 => n_groups,
                k => k.min(n_groups),
            },
        };
        for i in 0..n_groups {
            self.backbone.set_trainable(i, i >= n_groups - unfrozen);
        }
        unfrozen
    }

    /// A fresh run of `phase` over `epochs` epochs with the backbone frozen as it stands
    /// (features prepared when it trains on them).
    fn new_run(&mut self, phase: Phase, epochs: usize) -> anyhow::Result<Run> {
        let through_backbone = phase == Phase::Finetune || augments(&self.config.augment, phase);
        if !through_backbone {
            self.ensure_features()?;
        }
        let t = &self.config.train;
        let base_lr = match phase {
            Phase::Warmup => t.warmup_lr,
            Phase::Finetune => t.finetune_lr,
        };
        let steps_per_epoch = self
            .dataset
            .train
            .len()
            .div_ceil(self.config.data.batch_size);
        let total_steps = steps_per_epoch * epochs;
        let ramp_steps = match phase {
            Phase::Warmup => 0,
            Phase::Finetune => (total_steps as f64 * t.finetune_ramp_fraction).ceil() as usize,
        };
        Ok(Run {
            phase,
            epochs,
            epoch: 0,
            step: 0,
            steps_per_epoch,
            total_steps,
            ramp_steps,
            order: self.epoch_order(0),
            optimizer: AdamW::new(self.optimised_vars(), t.weight_decay)?,
            base_lr,
            through_backbone,
            auto: None,
        })
    }

    /// The phase a finder or an adopted rate concerns while none runs: fine-tuning once a
    /// warm-up has trained the head, else the warm-up.
    fn next_phase(&self) -> Phase {
        let warmed = self
            .record
            .phases
            .iter()
            .any(|p| p.phase == Phase::Warmup && p.epochs > 0);
        if warmed {
            Phase::Finetune
        } else {
            Phase::Warmup
        }
    }

    /// The shuffled order of training samples for an epoch (seeded).
    fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.train.len()).collect();
        let seed = self.config.data.seed
            ^ ((self.epochs_done + epoch + 1) as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        order
    }

    /// Makes sure pretrained features of every image are at hand: from memory, from the disk
    /// cache, or from one pass of the frozen backbone (then saved).
    fn ensure_features(&mut self) -> anyhow::Result<()> {
        if self.features.is_some() {
            return Ok(());
        }
        // Sorted by path, so that any split of the same files shares one cache entry.
        let mut samples: Vec<&Sample> =
            self.dataset.train.iter().chain(&self.dataset.val).collect();
        samples.sort_by(|a, b| a.path.cmp(&b.path));
        let path = self
            .feature_cache_dir
            .as_ref()
            .filter(|_| !self.backbone_changed)
            .map(|dir| {
                let key = features::cache_key(
                    &samples,
                    &self.weights_path,
                    &self.model_config.architecture,
                    self.store.preprocess(),
                );
                features::cache_path(dir, &key)
            });
        if let Some(all) = path
            .as_deref()
            .and_then(|p| features::load(p, samples.len(), &self.device))
        {
            self.emit(Event::Features {
                status: FeatureStatus::Loaded {
                    path: path.clone().unwrap(),
                    images: samples.len(),
                },
            });
            self.features = Some(self.split_rows(&all, &samples)?);
            return Ok(());
        }
        let t = Instant::now();
        let meter = Meter::new(Pass::Features, samples.len());
        let control = &mut self.control;
        let mut progress = |done| control.between_batches(&meter, done);
        let all = features::compute(
            self.backbone.as_ref(),
            &self.store,
            &samples,
            self.config.data.batch_size.min(PASS_CHUNK),
            &self.device,
            &mut progress,
        )?;
        let saved = match &path {
            Some(p) => match features::save(p, &all) {
                Ok(()) => Some(p.clone()),
                Err(e) => {
                    self.emit(Event::Warning {
                        message: format!("feature cache not saved to {}: {e:#}", p.display()),
                    });
                    None
                }
            },
            None => None,
        };
        self.emit(Event::Features {
            status: FeatureStatus::Computed {
                images: samples.len(),
                seconds: t.elapsed().as_secs_f64(),
                path: saved,
            },
        });
        self.features = Some(self.split_rows(&all, &samples)?);
        Ok(())
    }

    /// The training and validation rows of features computed for `samples` (in that order).
    fn split_rows(&self, all: &Tensor, samples: &[&Sample]) -> anyhow::Result<Features> {
        let row: std::collections::HashMap<&Path, u32> = samples
            .iter()
            .enumerate()
            .map(|(i, s)| (s.path.as_path(), i as u32))
            .collect();
        let pick = |split: &[Sample]| -> anyhow::Result<Tensor> {
            let rows: Vec<u32> = split.iter().map(|s| row[s.path.as_path()]).collect();
            Ok(all.index_select(&Tensor::new(rows.as_slice(), &self.device)?, 0)?)
        };
        Ok(Features {
            train: pick(&self.dataset.train)?,
            val: pick(&self.dataset.val)?,
        })
    }

    /// One optimisation step of the running phase.
    fn step(&mut self) -> anyhow::Result<()> {
        if crate::fault::injected("panic-engine") {
            panic!("injected fault: panic in the engine");
        }
        let started = Instant::now();
        let bs = self.config.data.batch_size;
        let run = self.run.as_ref().expect("step runs only in a phase");
        let idx = run.order[run.step * bs..((run.step + 1) * bs).min(run.order.len())].to_vec();
        let (epoch, lr) = (run.epoch, run.lr());
        let (loss, correct) = self.train_batch(&idx, epoch, lr)?;
        let run = self.run.as_mut().expect("step runs only in a phase");
        let phase = run.phase;
        self.trained_since_save = true;
        self.steps_done += 1;
        self.last_phase = Some(phase);
        let event = Event::Batch {
            phase,
            epoch: run.epoch + 1,
            step: run.step + 1,
            steps_per_epoch: run.steps_per_epoch,
            loss,
            accuracy: correct as f32 / idx.len() as f32,
            lr,
            images_per_sec: idx.len() as f64 / started.elapsed().as_secs_f64(),
        };
        run.step += 1;
        let epoch_done = run.step == run.steps_per_epoch;
        self.emit(event);
        if epoch_done {
            self.end_epoch()?;
        }
        Ok(())
    }

    /// Forward, backward and an optimiser step of the running phase at rate `lr` on the
    /// training samples `idx` (augmented as in the phase's epoch `epoch`); the loss and the
    /// number of correct predictions.
    fn train_batch(
        &mut self,
        idx: &[usize],
        epoch: usize,
        lr: f64,
    ) -> anyhow::Result<(f32, usize)> {
        let run = self.run.as_mut().expect("training runs only in a phase");
        let labels: Vec<u32> = idx
            .iter()
            .map(|&i| self.dataset.train[i].label as u32)
            .collect();
        let y = Tensor::new(labels.as_slice(), &self.device)?;
        let mut pass = None;
        let features = if run.through_backbone {
            let samples: Vec<&Sample> = idx.iter().map(|&i| &self.dataset.train[i]).collect();
            let mode = if augments(&self.config.augment, run.phase) {
                BatchMode::Augment {
                    epoch: (self.epochs_done + epoch) as u64,
                }
            } else {
                BatchMode::Eval
            };
            let (x, _) = self.store.batch(&samples, mode, &self.device)?;
            let training =
                TrainingPass::run(self.backbone.as_ref(), &x, run.phase == Phase::Finetune)?;
            let features = training.features.clone();
            pass = Some(training);
            features
        } else {
            let rows: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
            let cached = &self
                .features
                .as_ref()
                .expect("features were prepared")
                .train;
            cached.index_select(&Tensor::new(rows.as_slice(), &self.device)?, 0)?
        };
        let logits = self.head.forward(&features, Some(&mut self.rng))?;
        let loss = cross_entropy(&logits, &y, self.class_weights.as_ref())?;
        let mut grads = loss.backward()?;
        if let Some(pass) = pass {
            pass.backward(self.backbone.as_ref(), &mut grads)?;
        }
        run.optimizer.step(&grads, lr)?;
        let correct = predictions(&logits)?
            .iter()
            .zip(&labels)
            .filter(|(p, t)| p == t)
            .count();
        if run.phase == Phase::Finetune {
            self.features = None;
            self.backbone_changed = true;
        }
        Ok((loss.to_scalar::<f32>()?, correct))
    }

    fn end_epoch(&mut self) -> anyhow::Result<()> {
        let scores = self.validate()?;
        let mut accuracy = scores.map(|s| s.accuracy);
        let run = self.run.as_mut().expect("an epoch ends inside a phase");
        let phase = run.phase;
        run.epoch += 1;
        run.step = 0;
        if let Some(record) = self.record.phases.last_mut() {
            record.epochs += 1;
        }
        let (epoch, epochs) = (run.epoch, run.epochs);
        let mut reason = (epoch == epochs).then(|| match run.auto {
            Some(_) => format!("reached the cap of {epochs} epochs"),
            None => format!("ran all {epochs} epochs"),
        });
        if let (Some(auto), Some(s)) = (run.auto.as_mut(), scores) {
            match auto.plateau.observe(s.loss) {
                Verdict::Improved => {
                    let (w, b) = (self.head.weight.as_tensor(), self.head.bias.as_tensor());
                    auto.best = Some((epoch, s.loss, s.accuracy, w.copy()?, b.copy()?));
                }
                Verdict::Stale => run.base_lr *= 0.5,
                Verdict::Stop => {
                    reason = Some(format!(
                        "validation loss has not improved for {} epochs",
                        auto.plateau.patience()
                    ))
                }
            }
        }
        if let (Some(why), Some(auto)) = (reason.as_mut(), run.auto.as_ref()) {
            if let Some((best, loss, acc, w, b)) = &auto.best {
                if *best != epoch {
                    self.head.weight.set(w)?;
                    self.head.bias.set(b)?;
                }
                accuracy = Some(*acc);
                why.push_str(&format!(
                    "; kept the head of epoch {best} (val loss {loss:.4}, accuracy {acc:.4})"
                ));
            }
        }
        match phase {
            Phase::Warmup => self.summary.warmup_val_accuracy = accuracy,
            Phase::Finetune => self.summary.finetune_val_accuracy = accuracy,
        }
        if let Some(acc) = accuracy {
            if self.summary.best_val_accuracy.is_none_or(|b| acc > b) {
                self.summary.best_val_accuracy = Some(acc);
                self.save("best");
            }
        }
        if let Some(reason) = reason {
            self.epochs_done += epoch;
            self.run = None;
            self.emit(Event::PhaseFinished {
                phase,
                epochs: epoch,
                reason,
            });
            self.emit(Event::PhaseChanged {
                phase: None,
                epochs: 0,
            });
        } else {
            let order = self.epoch_order(epoch);
            self.run.as_mut().unwrap().order = order;
        }
        Ok(())
    }

    /// Validation loss, accuracy, per-class accuracy and confusion; `None` without a
    /// validation split.
    fn validate(&mut self) -> anyhow::Result<Option<Scores>> {
        if self.dataset.val.is_empty() {
            return Ok(None);
        }
        let t = Instant::now();
        let logits = match &self.features {
            Some(f) if !self.backbone_changed => {
                self.head.forward(&f.val, None::<&mut ChaCha8Rng>)?
            }
            _ => {
                let mut parts = Vec::new();
                let samples: Vec<&Sample> = self.dataset.val.iter().collect();
                let meter = Meter::new(Pass::Validation, samples.len());
                let mut done = 0;
                for chunk in samples.chunks(self.config.data.batch_size.min(PASS_CHUNK)) {
                    let (x, _) = self.store.batch(chunk, BatchMode::Eval, &self.device)?;
                    let f = self.backbone.forward(&x, false)?;
                    parts.push(self.head.forward(&f, None::<&mut ChaCha8Rng>)?);
                    done += chunk.len();
                    self.control.between_batches(&meter, done)?;
                }
                Tensor::cat(&parts, 0)?
            }
        };
        let labels: Vec<u32> = self.dataset.val.iter().map(|s| s.label as u32).collect();
        let y = Tensor::new(labels.as_slice(), &self.device)?;
        let loss = cross_entropy(&logits, &y, None)?.to_scalar::<f32>()?;
        let predicted = predictions(&logits)?;
        let mut confusion = Confusion::new(self.dataset.class_names.len());
        confusion.add(&labels, &predicted);
        let accuracy = confusion.accuracy();
        let accuracy_clean = self.clean_accuracy(&labels, &predicted);
        let probabilities = candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
        let samples = self.dataset.val.iter().zip(&probabilities);
        let top_losses = top_losses(
            samples.map(|(s, p)| (s.path.as_path(), p.as_slice(), s.label)),
            TOP_LOSSES,
        );
        let run = self.run.as_ref();
        let (phase, epoch) = (run.map(|r| r.phase), run.map(|r| r.epoch + 1).unwrap_or(0));
        self.record.validation = Some(ValidationRecord {
            phase,
            epoch,
            loss,
            accuracy,
            confusion: confusion.matrix.clone(),
            accuracy_clean,
        });
        self.emit(Event::Validation {
            phase,
            epoch,
            loss,
            accuracy,
            accuracy_clean,
            per_class_accuracy: confusion.per_class_accuracy(),
            confusion: confusion.matrix,
            top_losses,
            seconds: t.elapsed().as_secs_f64(),
        });
        Ok(Some(Scores { loss, accuracy }))
    }

    /// Accuracy over the validation images without a twin in training, when some have one.
    fn clean_accuracy(&self, labels: &[u32], predicted: &[u32]) -> Option<f32> {
        let leaked = self.dataset.leaked_val_paths();
        if leaked.is_empty() {
            return None;
        }
        let (right, total) = self
            .dataset
            .val
            .iter()
            .zip(labels.iter().zip(predicted))
            .filter(|(s, _)| !leaked.contains(s.path.as_path()))
            .fold((0usize, 0usize), |(r, n), (_, (l, p))| {
                (r + usize::from(l == p), n + 1)
            });
        (total > 0).then(|| right as f32 / total as f32)
    }

    /// Writes checkpoint `name`; a failure is reported and training goes on.
    fn save(&mut self, name: &str) -> Option<PathBuf> {
        let path = self.checkpoint_dir.join(format!("{name}.safetensors"));
        let meta = CheckpointMeta {
            format: checkpoint::FORMAT,
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
        Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        other => format!("{other:?}").to_lowercase(),
    }
}
