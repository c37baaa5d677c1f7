//! Dashboard state: built only from engine events and keys, so it can be tested without a
//! terminal.

use crate::config::Epochs;
use crate::data::{ClassCount, DataReport};
use crate::hub::DownloadProgress;
use crate::model::LayerGroup;
use crate::train::lr_find::LrFind;
use crate::train::metrics::{Ema, TopLoss};
use crate::train::{Command, Event, FeatureStatus, Pass, Phase, Picture};
use crate::ui::pictures::Pictures;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Batches kept for the sparklines.
const HISTORY: usize = 1000;
/// Log lines kept.
const LOG_LINES: usize = 200;
/// Key prefix of the top-loss pictures in [`App::pictures`] (dropped at each validation).
pub const TOP_LOSS_PICTURES: &str = "top-loss:";
/// Key prefix of the augmentation-preview pictures (dropped at each new preview).
pub const AUGMENTATION_PICTURES: &str = "augmentation:";

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
}

impl Panel {
    /// The next panel in Tab order.
    fn next(self) -> Self {
        match self {
            Panel::Layers => Panel::Confusion,
            Panel::Confusion => Panel::TopLosses,
            Panel::TopLosses => Panel::Augmentations,
            Panel::Augmentations => Panel::History,
            Panel::History | Panel::LrFinder => Panel::Layers,
        }
    }
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

/// What a key asks of the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this to the engine.
    Engine(Command),
    /// Leave now.
    Quit,
    /// Save, then leave once the checkpoint is written.
    SaveAndQuit,
}

/// Everything the panels draw.
pub struct App {
    pub dataset: String,
    /// The class root and the rule that labelled the images.
    pub class_root: Option<String>,
    /// How the class root was chosen, copies and leakage.
    pub data_report: Option<DataReport>,
    pub backbone: String,
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
    /// The last validation's highest-loss images, worst first.
    pub top_losses: Vec<TopLoss>,
    /// Index of the top-loss entry whose picture is shown.
    pub selected_loss: usize,
    pub preview: Option<AugmentationPreview>,
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
            top_losses: Vec::new(),
            selected_loss: 0,
            preview: None,
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

    /// Updates the state from one engine event.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Decoding { done, total } => self.decoding = Some((done, total)),
            Event::DatasetReady {
                class_root,
                classes,
                skipped,
                report,
                source,
                ..
            } => {
                self.class_root = Some(format!("{} — {source}", class_root.display()));
                self.classes = classes;
                self.skipped = skipped.len();
                self.data_report = Some(report);
                for s in skipped {
                    self.log(
                        Level::Warning,
                        format!("skipped {}: {}", s.path.display(), s.reason),
                    );
                }
            }
            Event::Download { progress } => self.download(progress),
            Event::ModelReady {
                backbone,
                architecture,
                device,
                groups,
                ..
            } => {
                self.backbone = backbone;
                self.architecture = architecture;
                self.device = device;
                self.groups = groups;
                self.status = Status::Idle;
            }
            Event::Features { status } => self.features = Some(status),
            Event::Progress {
                pass,
                done,
                total,
                images_per_sec,
                eta_seconds,
            } => {
                self.progress = Some(PassProgress {
                    pass,
                    done,
                    total,
                    images_per_sec,
                    eta_seconds,
                })
            }
            Event::LrChanged { phase, peak, lr } => {
                self.pending = None;
                self.lr = lr;
                self.log(
                    Level::Info,
                    format!("{phase} learning rate: peak {peak:.2e}, next batch {lr:.2e}"),
                );
            }
            Event::LrFind(result) => {
                self.pending = None;
                let text = match result.suggestion {
                    Some(s) => format!(
                        "lr finder: suggestion {:.2e} (valley), steepest descent at {:.2e}",
                        s.valley, s.steepest
                    ),
                    None => format!("lr finder: {}", result.message),
                };
                self.log(Level::Info, text);
                self.lr_find = Some(result);
            }
            Event::PhaseChanged { phase, epochs } => {
                self.pending = None;
                self.status = match phase {
                    Some(p) => Status::Running(p),
                    None => Status::Idle,
                };
                self.phase_epochs = epochs;
                self.epoch = 0;
                self.step = 0;
                if let Some(p) = phase {
                    self.log(Level::Info, format!("{p} started ({epochs} epochs)"));
                }
            }
            Event::FreezeChanged {
                groups,
                trainable_params,
            } => {
                self.pending = None;
                self.groups = groups;
                self.trainable_params = trainable_params;
            }
            Event::Batch {
                phase,
                epoch,
                step,
                steps_per_epoch,
                loss,
                accuracy,
                lr,
                images_per_sec,
            } => {
                if step == 1 {
                    self.epoch_started = Some(Instant::now());
                    self.epoch_sums = (0.0, 0.0, 0);
                }
                self.epoch_sums.0 += loss as f64;
                self.epoch_sums.1 += accuracy as f64;
                self.epoch_sums.2 += 1;
                self.status = match self.status {
                    Status::Paused(_) => Status::Paused(phase),
                    _ => Status::Running(phase),
                };
                (self.epoch, self.step, self.steps_per_epoch) = (epoch, step, steps_per_epoch);
                self.images_per_sec = images_per_sec;
                self.lr = lr;
                self.batches += 1;
                self.losses.push(self.batches, phase, loss);
                self.accuracies.push(self.batches, phase, accuracy);
                self.unsaved = true;
            }
            Event::Validation {
                phase,
                epoch,
                loss,
                accuracy,
                accuracy_clean,
                seconds,
                confusion,
                top_losses,
                ..
            } => {
                self.last_validation_secs = seconds;
                self.confusion = Some(confusion);
                self.top_losses = top_losses;
                self.selected_loss = 0;
                self.pictures.forget(TOP_LOSS_PICTURES);
                self.validations.push(ValPoint {
                    step: self.batches,
                    phase,
                    epoch,
                    loss,
                    accuracy,
                });
                let (sum_loss, sum_acc, n) = self.epoch_sums;
                if let (Some(phase), true) = (phase, n > 0) {
                    self.history.push(EpochPoint {
                        phase,
                        epoch,
                        train_loss: (sum_loss / n as f64) as f32,
                        train_accuracy: (sum_acc / n as f64) as f32,
                        val_loss: loss,
                        val_accuracy: accuracy,
                    });
                }
                let label = crate::train::validation_label(phase, epoch);
                let clean = accuracy_clean
                    .map(|a| format!(" ({a:.4} without leaked images)"))
                    .unwrap_or_default();
                self.log(
                    Level::Info,
                    format!("{label}: val loss {loss:.4}, accuracy {accuracy:.4}{clean}"),
                );
            }
            Event::AugmentationPreview {
                path,
                class,
                original,
                variants,
            } => {
                self.pending = None;
                self.pictures.forget(AUGMENTATION_PICTURES);
                self.preview = Some(AugmentationPreview {
                    path: path.display().to_string(),
                    class,
                    original,
                    variants,
                });
            }
            Event::PhaseFinished {
                phase,
                epochs,
                reason,
            } => {
                self.log(
                    Level::Info,
                    format!("{phase} finished after {epochs} epochs: {reason}"),
                );
            }
            Event::Paused => {
                self.pending = None;
                if let Status::Running(p) = self.status {
                    self.status = Status::Paused(p);
                }
            }
            Event::Resumed => {
                self.pending = None;
                if let Status::Paused(p) = self.status {
                    self.status = Status::Running(p);
                }
            }
            Event::CheckpointSaved { path, reason } => {
                if reason != "best" {
                    self.unsaved = false;
                    self.pending = None;
                }
                self.log(
                    Level::Info,
                    format!("checkpoint ({reason}) saved: {}", path.display()),
                );
                if self.quit_after_save && reason == "manual" {
                    self.should_quit = true;
                }
            }
            Event::Warning { message } => {
                self.pending = None;
                self.log(Level::Warning, message)
            }
            Event::Error { message } => {
                self.pending = None;
                self.quit_after_save = false;
                self.log(Level::Error, message);
            }
            Event::Finished(summary) => {
                self.status = Status::Finished;
                if summary.error.is_none() {
                    self.log(Level::Info, "the engine stopped".into());
                }
            }
        }
    }

    fn download(&mut self, progress: DownloadProgress) {
        let (file, done, total, complete, from_cache) = match progress {
            DownloadProgress::Bytes { file, done, total } => (file, done, total, false, false),
            DownloadProgress::Done { file, bytes } => (file, bytes, bytes, true, false),
            DownloadProgress::Cached { file, bytes } => (file, bytes, bytes, true, true),
            DownloadProgress::Retry {
                file,
                attempt,
                reason,
            } => {
                self.log(
                    Level::Warning,
                    format!("retrying {file} (attempt {attempt}): {reason}"),
                );
                return;
            }
        };
        let entry = match self.downloads.iter().position(|d| d.file == file) {
            Some(i) => &mut self.downloads[i],
            None => {
                self.downloads.push(FileDownload {
                    file,
                    done: 0,
                    total,
                    bytes_per_sec: 0.0,
                    from_cache,
                    complete: false,
                    started: Instant::now(),
                });
                self.downloads.last_mut().unwrap()
            }
        };
        entry.done = done;
        entry.total = total;
        entry.complete = complete;
        entry.from_cache = from_cache;
        let secs = entry.started.elapsed().as_secs_f64();
        if secs > 0.0 && !from_cache {
            entry.bytes_per_sec = done as f64 / secs;
        }
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

    /// Interprets a key: dashboard-only keys change the state here; engine commands are returned.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Action::Engine(Command::Interrupt));
        }
        if self.confirm_quit {
            self.confirm_quit = false;
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('q') => Some(Action::Quit),
                KeyCode::Char('s') => {
                    self.quit_after_save = true;
                    self.pending = Some("save and quit".into());
                    Some(Action::SaveAndQuit)
                }
                _ => None,
            };
        }
        if self.show_help
            && matches!(
                key.code,
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q')
            )
        {
            self.show_help = false;
            return None;
        }
        if self.panel == Panel::LrFinder {
            match key.code {
                KeyCode::Esc => {
                    self.panel = Panel::Layers;
                    return self.send(Command::Resume);
                }
                KeyCode::Enter => {
                    let result = self.lr_find.as_ref()?;
                    self.panel = Panel::Layers;
                    // Without a clear descent, Enter keeps the rate, as Esc does.
                    return match result.suggestion {
                        Some(s) => self.send(Command::AdoptLr(s.valley)),
                        None => self.send(Command::Resume),
                    };
                }
                _ => {}
            }
        }
        let command = match key.code {
            KeyCode::Char('w') => Command::Warmup {
                epochs: self.warmup_epochs,
            },
            KeyCode::Char('f') => Command::Finetune {
                epochs: self.finetune_epochs,
                groups: None,
            },
            KeyCode::Char('s') => Command::Save,
            KeyCode::Char('v') => Command::Validate,
            KeyCode::Char('+') | KeyCode::Char('=') => Command::ScaleLr(2.0),
            KeyCode::Char('-') => Command::ScaleLr(0.5),
            KeyCode::Char(']') => Command::Unfreeze(1),
            KeyCode::Char('[') => Command::Unfreeze(-1),
            KeyCode::Char('r') => {
                self.lr_find = None;
                self.panel = Panel::LrFinder;
                Command::FindLr { adopt: false }
            }
            KeyCode::Char('h') => return self.toggle(Panel::History),
            KeyCode::Char('p') | KeyCode::Char(' ') => match self.status {
                Status::Paused(_) => Command::Resume,
                _ => Command::Pause,
            },
            KeyCode::Char('?') => {
                self.show_help = true;
                return None;
            }
            KeyCode::Char('c') => return self.toggle(Panel::Confusion),
            KeyCode::Char('l') => return self.toggle(Panel::TopLosses),
            KeyCode::Char('a') => return self.toggle(Panel::Augmentations),
            KeyCode::Tab => return self.show(self.panel.next()),
            KeyCode::Char('n') if self.panel == Panel::Augmentations => {
                Command::PreviewAugmentations
            }
            KeyCode::Down | KeyCode::Char('j') if self.panel == Panel::TopLosses => {
                self.selected_loss =
                    (self.selected_loss + 1).min(self.top_losses.len().saturating_sub(1));
                return None;
            }
            KeyCode::Up | KeyCode::Char('k') if self.panel == Panel::TopLosses => {
                self.selected_loss = self.selected_loss.saturating_sub(1);
                return None;
            }
            KeyCode::Char('q') | KeyCode::Esc => {
                if self.unsaved {
                    self.confirm_quit = true;
                    return None;
                }
                return Some(Action::Quit);
            }
            _ => return None,
        };
        self.send(command)
    }

    /// Sends `command` to the engine unless it has ended; the footer shows it until it acts.
    fn send(&mut self, command: Command) -> Option<Action> {
        if self.status == Status::Finished {
            return None;
        }
        self.pending = Some(describe(&command));
        Some(Action::Engine(command))
    }

    /// Shows `panel`, or the layer groups when it is already shown.
    fn toggle(&mut self, panel: Panel) -> Option<Action> {
        self.show(if self.panel == panel {
            Panel::Layers
        } else {
            panel
        })
    }

    /// Shows `panel`; the augmentation panel asks the engine for a picture the first time.
    fn show(&mut self, panel: Panel) -> Option<Action> {
        self.panel = panel;
        let wanted = panel == Panel::Augmentations && self.preview.is_none();
        (wanted && self.status != Status::Finished).then(|| {
            self.pending = Some(describe(&Command::PreviewAugmentations));
            Action::Engine(Command::PreviewAugmentations)
        })
    }
}

fn push_bounded<T>(v: &mut VecDeque<T>, item: T) {
    if v.len() == HISTORY {
        v.pop_front();
    }
    v.push_back(item);
}

/// Short text for a command awaiting the engine.
fn describe(c: &Command) -> String {
    match c {
        Command::Warmup { epochs } => format!("warm-up ({epochs} epochs)"),
        Command::Finetune { epochs, .. } => format!("fine-tune ({epochs} epochs)"),
        Command::Pause => "pause".into(),
        Command::Resume => "resume".into(),
        Command::Save => "save".into(),
        Command::Validate => "validate".into(),
        Command::PreviewAugmentations => "augmentation preview".into(),
        Command::Stop => "stop".into(),
        Command::Interrupt => "interrupt".into(),
        Command::ScaleLr(f) => format!("learning rate x{f}"),
        Command::AdoptLr(lr) => format!("learning rate {lr:.2e}"),
        Command::Unfreeze(n) if *n > 0 => "unfreeze a layer group".into(),
        Command::Unfreeze(_) => "freeze a layer group".into(),
        Command::TrainableGroups(n) => format!("{n} trainable layer groups"),
        Command::FindLr { .. } => "learning-rate finder".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::lr_find::Verdict;

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    fn app() -> App {
        let mut a = App::new("data".into(), "timm/x".into(), Epochs::Count(3), 2, true);
        a.status = Status::Idle;
        a
    }

    #[test]
    fn tab_cycles_the_panels_and_the_preview_is_asked_for_once() {
        let mut a = app();
        let tab = KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE);
        let mut seen = vec![a.panel];
        let mut actions = Vec::new();
        for _ in 0..5 {
            actions.push(a.on_key(tab));
            seen.push(a.panel);
        }
        use Panel::*;
        assert_eq!(
            seen,
            [Layers, Confusion, TopLosses, Augmentations, History, Layers]
        );
        assert_eq!(
            actions,
            [
                None,
                None,
                Some(Action::Engine(Command::PreviewAugmentations)),
                None,
                None
            ]
        );
    }

    #[test]
    fn each_key_yields_its_command() {
        let mut a = app();
        assert_eq!(
            a.on_key(key('w')),
            Some(Action::Engine(Command::Warmup {
                epochs: Epochs::Count(3)
            }))
        );
        assert_eq!(a.pending.as_deref(), Some("warm-up (3 epochs)"));
        assert_eq!(
            a.on_key(key('f')),
            Some(Action::Engine(Command::Finetune {
                epochs: 2,
                groups: None
            }))
        );
        assert_eq!(a.on_key(key('s')), Some(Action::Engine(Command::Save)));
        assert_eq!(a.on_key(key('v')), Some(Action::Engine(Command::Validate)));
        a.status = Status::Running(Phase::Warmup);
        assert_eq!(a.on_key(key('p')), Some(Action::Engine(Command::Pause)));
        a.status = Status::Paused(Phase::Warmup);
        assert_eq!(a.on_key(key('p')), Some(Action::Engine(Command::Resume)));
        assert_eq!(
            a.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Engine(Command::Interrupt))
        );
        assert_eq!(a.on_key(key('?')), None);
        assert!(a.show_help);
        assert_eq!(a.on_key(key('?')), None);
        assert!(!a.show_help);
        assert_eq!(a.on_key(key('q')), Some(Action::Quit));
    }

    #[test]
    fn steering_keys_and_the_finder_panel() {
        let mut a = app();
        a.status = Status::Running(Phase::Finetune);
        assert_eq!(
            a.on_key(key('+')),
            Some(Action::Engine(Command::ScaleLr(2.0)))
        );
        assert_eq!(
            a.on_key(key('-')),
            Some(Action::Engine(Command::ScaleLr(0.5)))
        );
        assert_eq!(
            a.on_key(key(']')),
            Some(Action::Engine(Command::Unfreeze(1)))
        );
        assert_eq!(
            a.on_key(key('[')),
            Some(Action::Engine(Command::Unfreeze(-1)))
        );
        assert_eq!(
            a.on_key(key('r')),
            Some(Action::Engine(Command::FindLr { adopt: false }))
        );
        assert_eq!(a.panel, Panel::LrFinder);
        let enter = KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE);
        assert_eq!(a.on_key(enter), None, "nothing to adopt before the result");
        a.apply(Event::LrFind(LrFind {
            points: vec![],
            verdict: Verdict::Suggested,
            message: Verdict::Suggested.to_string(),
            suggestion: Some(crate::train::lr_find::Suggestion {
                steepest: 1e-3,
                valley: 2e-3,
            }),
            diverged: true,
            adopted: None,
            seconds: 0.1,
        }));
        assert_eq!(
            a.on_key(enter),
            Some(Action::Engine(Command::AdoptLr(2e-3)))
        );
        assert_eq!(a.panel, Panel::Layers);
        a.on_key(key('r'));
        let esc = KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE);
        assert_eq!(
            a.on_key(esc),
            Some(Action::Engine(Command::Resume)),
            "Esc lets the held phase go on at its rate"
        );
        assert_eq!(
            a.panel,
            Panel::Layers,
            "Esc leaves the finder, not the dashboard"
        );
        assert!(!a.should_quit && !a.confirm_quit);
        a.on_key(key('r'));
        a.apply(Event::LrFind(LrFind {
            points: vec![],
            verdict: Verdict::NoClearDescent,
            message: Verdict::NoClearDescent.to_string(),
            suggestion: None,
            diverged: true,
            adopted: None,
            seconds: 0.1,
        }));
        assert_eq!(
            a.on_key(enter),
            Some(Action::Engine(Command::Resume)),
            "without a clear descent Enter keeps the rate"
        );
        assert!(a
            .log
            .iter()
            .any(|(_, l)| l.contains("no clear descent: keep the current rate")));
    }

    #[test]
    fn quit_asks_when_progress_is_unsaved() {
        let mut a = app();
        a.unsaved = true;
        assert_eq!(a.on_key(key('q')), None);
        assert!(a.confirm_quit);
        assert_eq!(a.on_key(key('n')), None);
        assert!(!a.confirm_quit);
        a.on_key(key('q'));
        assert_eq!(a.on_key(key('s')), Some(Action::SaveAndQuit));
        a.apply(Event::CheckpointSaved {
            path: "x".into(),
            reason: "manual".into(),
        });
        assert!(a.should_quit);
        let mut b = app();
        b.unsaved = true;
        b.on_key(key('q'));
        assert_eq!(b.on_key(key('y')), Some(Action::Quit));
    }
}
