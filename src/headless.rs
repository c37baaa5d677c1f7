//! The engine without the dashboard: warm-up for N epochs, fine-tune for M, progress printed for
//! people (a line per epoch, a bar on a terminal) or as JSON lines for scripts.

use crate::cli::TrainArgs;
use crate::config::Epochs;
use crate::data::corrections::CorrectionsChoice;
use crate::hub::DownloadProgress;
use crate::rundir::RunLog;
use crate::stop_signals::StopSignals;
use crate::train::recipe::Recipe;
use crate::train::{Command, Engine, EngineSetup, Event, FeatureStatus, Phase, Summary};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

/// Runs the plan (or replays a recipe) and returns the exit code: 0 done, 130 interrupted, 1
/// failed.
pub fn run(args: &TrainArgs, dataset: &Path) -> anyhow::Result<ExitCode> {
    let mut config = args.data.config.load(|c| {
        args.model.apply(c);
        args.plan.apply(c);
    })?;
    let recipe = args.recipe.as_deref().map(Recipe::load).transpose()?;
    if let Some(r) = &recipe {
        // The recipe's configuration, but this run's checkpoints go where this run says.
        let dir = std::mem::take(&mut config.checkpoint.dir);
        config = r.config.clone();
        config.checkpoint.dir = dir;
    }
    let (warmup, finetune) = (config.train.warmup_epochs, config.train.finetune_epochs);
    let mut source = args.data.source.options(&config);
    if let Some(r) = &recipe {
        source.corrections = CorrectionsChoice::Given(r.corrections.clone());
    }
    let resume = args.resume.as_deref();
    let mut setup = EngineSetup::new(dataset, source, config, &args.model, resume)?;
    setup.replay = recipe;
    let replaying = setup.replay.is_some();
    let mut run_log = RunLog::new(&setup.checkpoint_dir);
    let (tx, rx) = std::sync::mpsc::channel();
    crate::train::quiet_engine_panics();
    let engine = Engine::spawn(setup, tx);
    forward_signals(engine.commands());
    let commands = engine.commands();
    let next = |after: Option<Phase>| match after {
        None if warmup != Epochs::Count(0) => Command::Warmup { epochs: warmup },
        None | Some(Phase::Warmup) if finetune > 0 => Command::Finetune {
            epochs: finetune,
            groups: None,
        },
        _ => Command::Stop,
    };
    if !replaying {
        if args.label_issues {
            let folds = crate::train::label_issues::DEFAULT_FOLDS;
            let _ = commands.send(Command::FindLabelIssues { folds });
        }
        let _ = commands.send(next(None));
        if args.find_lr {
            let _ = commands.send(Command::FindLr { adopt: true });
        }
    }
    let mut printer = Printer::new(args.json, dataset);
    let mut summary = Summary::default();
    for event in rx {
        for message in run_log.observe(&event) {
            printer.print(&Event::Warning { message })?;
        }
        printer.print(&event)?;
        match event {
            Event::PhaseFinished { phase, .. } if !replaying => {
                let _ = commands.send(next(Some(phase)));
            }
            Event::Finished(s) => {
                summary = s;
                break;
            }
            _ => {}
        }
    }
    engine.join();
    Ok(match (&summary.error, summary.interrupted) {
        (Some(_), _) => ExitCode::FAILURE,
        (None, true) => ExitCode::from(130),
        (None, false) => ExitCode::SUCCESS,
    })
}

/// Turns Ctrl-C and the other stop requests ([`StopSignals`], SIGTERM on Unix) into an
/// `Interrupt` command.
fn forward_signals(commands: std::sync::mpsc::Sender<Command>) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let Ok(mut stop) = StopSignals::listen(false) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = stop.recv() => {}
            }
            let _ = commands.send(Command::Interrupt);
        });
    });
}

/// Prints events as text or JSON lines.
struct Printer {
    json: bool,
    /// Paths are printed relative to it.
    dataset: std::path::PathBuf,
    /// Progress bars go to stderr when it is a terminal.
    bars: bool,
    epoch_loss: f64,
    epoch_correct: f64,
    epoch_batches: usize,
    bar_open: bool,
}

impl Printer {
    fn new(json: bool, dataset: &Path) -> Self {
        Self {
            json,
            dataset: dataset.to_path_buf(),
            bars: !json && std::io::stderr().is_terminal(),
            epoch_loss: 0.0,
            epoch_correct: 0.0,
            epoch_batches: 0,
            bar_open: false,
        }
    }

    fn bar(&mut self, text: &str) {
        if self.bars {
            eprint!("\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
            self.bar_open = true;
        }
    }

    fn line(&mut self, text: &str) {
        if self.bar_open {
            eprint!("\r\x1b[2K");
            self.bar_open = false;
        }
        println!("{text}");
    }

    fn print(&mut self, event: &Event) -> anyhow::Result<()> {
        if self.json {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer(&mut out, event)?;
            writeln!(out)?;
            return Ok(());
        }
        match event {
            Event::Decoding { done, total } => self.bar(&format!("decoding images {done}/{total}")),
            Event::DatasetReady {
                task,
                class_root,
                classes,
                skipped,
                ignored,
                report,
                source,
                ..
            } => {
                let counts: Vec<String> = classes
                    .iter()
                    .map(|c| format!("{} {}/{}", c.name, c.train, c.val))
                    .collect();
                let what = match task {
                    crate::data::Task::SingleLabel => "classes",
                    crate::data::Task::MultiLabel => "labels, multi-label",
                };
                self.line(&format!(
                    "dataset: {} ({source}) — {} {what} (train/val): {}; {} skipped, {} ignored",
                    class_root.display(),
                    classes.len(),
                    counts.join(", "),
                    skipped.len(),
                    ignored
                ));
                if let Some(m) = &report.multi_label {
                    let pairs: Vec<String> =
                        m.frequent_pairs.iter().map(|p| p.to_string()).collect();
                    self.line(&format!(
                        "multi-label: {}; pairs: {}",
                        m.summary(),
                        pairs.join(", ")
                    ));
                }
                for s in skipped {
                    self.line(&format!("  skipped {}: {}", s.path.display(), s.reason));
                }
                for c in &report.candidates {
                    let mark = if c.chosen { "used" } else { "  passed over" };
                    self.line(&format!("{mark} {}: {}", c.path.display(), c.reason));
                }
                self.line(&format!(
                    "copies: {} group(s) of duplicate images; {} validation image(s) with a copy in training",
                    report.duplicates.len(),
                    report.leakage.val_images_with_train_twin
                ));
            }
            Event::Download { progress } => match progress {
                DownloadProgress::Bytes { file, done, total } => {
                    let pct = if *total > 0 { 100 * done / total } else { 0 };
                    self.bar(&format!(
                        "downloading {file}: {:.1}/{:.1} MB ({pct}%)",
                        mb(*done),
                        mb(*total)
                    ));
                }
                DownloadProgress::Done { file, bytes } => {
                    self.line(&format!("downloaded {file} ({:.1} MB)", mb(*bytes)))
                }
                DownloadProgress::Cached { file, bytes } => {
                    self.line(&format!("{file}: from cache ({:.1} MB)", mb(*bytes)))
                }
                DownloadProgress::Retry {
                    file,
                    attempt,
                    reason,
                } => self.line(&format!("retrying {file} (attempt {attempt}): {reason}")),
            },
            Event::ModelReady {
                backbone,
                architecture,
                device,
                groups,
                ..
            } => self.line(&format!(
                "model: {backbone} ({architecture}) on {device}, {} layer groups",
                groups.len()
            )),
            Event::Features { status } => match status {
                FeatureStatus::Loaded { images, path } => self.line(&format!(
                    "features: {images} images loaded from the cache {} (backbone pass skipped)",
                    path.display()
                )),
                FeatureStatus::Computed {
                    images, seconds, ..
                } => self.line(&format!(
                    "features: {images} images through the backbone in {seconds:.1} s"
                )),
            },
            Event::PhaseChanged {
                phase: Some(p),
                epochs,
            } => self.line(&format!("{p}: {epochs} epoch(s)")),
            Event::Progress {
                pass,
                done,
                total,
                images_per_sec,
                eta_seconds,
            } => self.bar(&format!(
                "{pass} {done}/{total} {images_per_sec:.1} img/s ETA {eta_seconds:.0} s"
            )),
            Event::PhaseFinished {
                phase,
                epochs,
                reason,
            } => self.line(&format!(
                "{phase} finished after {epochs} epoch(s): {reason}"
            )),
            Event::LrChanged { phase, peak, lr } => self.line(&format!(
                "{phase} learning rate: peak {peak:.2e}, next batch {lr:.2e}"
            )),
            Event::LrFind(f) => self.line(&match f.suggestion {
                Some(s) => format!(
                    "lr finder: {} batches in {:.1} s{}; suggestion {:.2e} (valley), steepest descent at {:.2e}{}",
                    f.points.len(),
                    f.seconds,
                    if f.diverged { ", stopped at divergence" } else { "" },
                    s.valley,
                    s.steepest,
                    if f.adopted.is_some() { "; adopted" } else { "" }
                ),
                None => format!(
                    "lr finder: {} batches in {:.1} s; {}",
                    f.points.len(),
                    f.seconds,
                    f.message
                ),
            }),
            Event::Batch {
                phase,
                epoch,
                step,
                steps_per_epoch,
                loss,
                accuracy,
                images_per_sec,
                ..
            } => {
                if *step == 1 {
                    (self.epoch_loss, self.epoch_correct, self.epoch_batches) = (0.0, 0.0, 0);
                }
                self.epoch_loss += *loss as f64;
                self.epoch_correct += *accuracy as f64;
                self.epoch_batches += 1;
                let filled = 20 * step / steps_per_epoch;
                self.bar(&format!(
                    "{phase} epoch {epoch} [{}{}] {step}/{steps_per_epoch} loss {loss:.4} acc {accuracy:.3} {images_per_sec:.1} img/s",
                    "#".repeat(filled),
                    ".".repeat(20 - filled)
                ));
            }
            Event::Validation {
                phase,
                epoch,
                loss,
                accuracy,
                accuracy_clean,
                multi_label,
                seconds,
                ..
            } => {
                let n = self.epoch_batches.max(1) as f64;
                let label = crate::train::validation_label(*phase, *epoch);
                let clean = accuracy_clean
                    .map(|a| format!(" (without leaked images {a:.4})"))
                    .unwrap_or_default();
                let scores = match multi_label {
                    Some(m) => format!(
                        "mAP {:.4} F1 micro {:.4} macro {:.4} exact match {accuracy:.4}",
                        m.map, m.f1_micro, m.f1_macro
                    ),
                    None => format!("acc {accuracy:.4}{clean}"),
                };
                self.line(&format!(
                    "{label}: train loss {:.4} acc {:.4} | val loss {loss:.4} {scores} (validation {seconds:.1} s)",
                    self.epoch_loss / n,
                    self.epoch_correct / n
                ));
                for l in multi_label.iter().flat_map(|m| &m.per_label) {
                    let ap = l.ap.map_or("-".into(), |a| format!("{a:.4}"));
                    self.line(&format!(
                        "  {}: AP {ap} F1 {:.4} precision {:.4} recall {:.4} threshold {:.3} ({} in val)",
                        l.name, l.f1, l.precision, l.recall, l.threshold, l.support
                    ));
                }
            }
            Event::CheckpointSaved { path, reason } => {
                self.line(&format!("checkpoint ({reason}): {}", path.display()))
            }
            Event::LabelIssues(issues) => {
                let mut text = Vec::new();
                issues.write_text(&self.dataset, &mut text)?;
                self.line(String::from_utf8_lossy(&text).trim());
            }
            Event::Paused => self.line("paused"),
            Event::AugmentationPreview { .. } => {}
            Event::Resumed => self.line("resumed"),
            Event::Warning { message } => {
                self.line("");
                eprintln!("warning: {message}");
            }
            Event::Error { message } => {
                self.line("");
                eprintln!("error: {message}");
            }
            Event::Finished(s) => {
                let fmt =
                    |a: Option<f32>| a.map(|a| format!("{a:.4}")).unwrap_or_else(|| "-".into());
                self.line(&format!(
                    "{} in {:.1} s: warm-up val acc {}, fine-tune val acc {}, best {}{}",
                    if s.interrupted {
                        "interrupted"
                    } else if s.error.is_some() {
                        "failed"
                    } else {
                        "done"
                    },
                    s.seconds,
                    fmt(s.warmup_val_accuracy),
                    fmt(s.finetune_val_accuracy),
                    fmt(s.best_val_accuracy),
                    s.checkpoint
                        .as_ref()
                        .map(|p| format!("; checkpoint {}", p.display()))
                        .unwrap_or_default()
                ));
            }
            Event::PhaseChanged { phase: None, .. } | Event::FreezeChanged { .. } => {}
        }
        Ok(())
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
