//! The run directory: what a run leaves beside its checkpoints for people and tools to open
//! afterwards. [`RunLog`] is a consumer of the engine's [`Event`] stream, fed by both front
//! ends (headless and the dashboard); it writes
//!
//! - [`METRICS_CSV`]: a row per validation ([`METRICS_HEADER`]),
//! - [`BATCHES_CSV`]: a row per optimisation step ([`BATCHES_HEADER`]),
//! - [`RUNS_DIR`]`/events.out.tfevents.*`: the same scalars for TensorBoard,
//!
//! each appended and flushed as the run goes, [`LABEL_ISSUES_CSV`] when the label-issue finder
//! ran, and at each checkpoint save the pictures
//! [`HISTORY_PNG`], [`CONFUSION_PNG`] and [`TOP_LOSSES_PNG`]. A new run in the same directory
//! replaces the previous run's log, as it replaces its checkpoints. A failure to write is
//! reported once as a message and the run goes on without that file.

pub mod csv;
pub mod plots;
pub mod tensorboard;

use crate::train::label_issues::LabelIssues;
use crate::train::metrics::TopLoss;
use crate::train::{Event, Phase};
use csv::CsvFile;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tensorboard::EventWriter;

/// One row per validation.
pub const METRICS_CSV: &str = "metrics.csv";
/// One row per optimisation step.
pub const BATCHES_CSV: &str = "batches.csv";
/// The label-issue finder's findings ([`LABEL_ISSUES_HEADER`]).
pub const LABEL_ISSUES_CSV: &str = "label_issues.csv";
/// The columns of [`LABEL_ISSUES_CSV`]: the image, the issue (`mislabelled`, most suspicious
/// first, then `fits_no_class`), its given label, the suggested one and both out-of-fold
/// probabilities (empty for an image that fits no class), and why, in words.
pub const LABEL_ISSUES_HEADER: [&str; 7] = [
    "path",
    "issue",
    "given",
    "suggested",
    "given_probability",
    "suggested_probability",
    "reason",
];
/// TensorBoard's log directory, inside the run directory.
pub const RUNS_DIR: &str = "runs";
/// Loss and accuracy per epoch.
pub const HISTORY_PNG: &str = "history.png";
/// The last validation's confusion matrix.
pub const CONFUSION_PNG: &str = "confusion_matrix.png";
/// The last validation's worst images.
pub const TOP_LOSSES_PNG: &str = "top_losses.png";
/// The pictures, in the order a model card shows them.
pub const PICTURES: [&str; 3] = [HISTORY_PNG, CONFUSION_PNG, TOP_LOSSES_PNG];

/// The columns of [`METRICS_CSV`]: the phase (`warmup`, `finetune`, empty for a validation
/// asked for outside a phase) and its epoch, the optimisation steps so far, the learning rate
/// of the last batch, the mean training loss and accuracy of the epoch's batches, the
/// validation's loss, accuracy and `accuracy_clean` (empty when no validation image has a copy
/// in training), the seconds since the run started, and for a multi-label run the validation's
/// mAP and micro and macro F1 (else empty).
pub const METRICS_HEADER: [&str; 13] = [
    "phase",
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_accuracy_clean",
    "seconds",
    "val_map",
    "val_f1_micro",
    "val_f1_macro",
];
/// The columns of [`BATCHES_CSV`]: the optimisation step (counted across phases), the phase,
/// the batch's loss, accuracy and learning rate, and the phase's epoch.
pub const BATCHES_HEADER: [&str; 6] = ["step", "phase", "loss", "accuracy", "lr", "epoch"];

/// One validation as [`METRICS_CSV`] records it.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRow {
    pub phase: Option<Phase>,
    pub epoch: usize,
    pub step: usize,
    pub lr: f64,
    /// Means over the epoch's batches so far; `None` before any batch.
    pub train_loss: Option<f32>,
    pub train_accuracy: Option<f32>,
    pub val_loss: f32,
    pub val_accuracy: f32,
    pub val_accuracy_clean: Option<f32>,
    pub seconds: f64,
    /// Multi-label: mAP, micro and macro F1.
    pub val_map: Option<f32>,
    pub val_f1_micro: Option<f32>,
    pub val_f1_macro: Option<f32>,
}

/// A phase as the CSV files and the JSON events name it.
fn phase_name(phase: Option<Phase>) -> &'static str {
    match phase {
        Some(Phase::Warmup) => "warmup",
        Some(Phase::Finetune) => "finetune",
        None => "",
    }
}

/// An optional value as a CSV field: empty when absent.
fn opt(v: Option<f32>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl EpochRow {
    fn fields(&self) -> [String; 13] {
        [
            phase_name(self.phase).into(),
            self.epoch.to_string(),
            self.step.to_string(),
            self.lr.to_string(),
            opt(self.train_loss),
            opt(self.train_accuracy),
            self.val_loss.to_string(),
            self.val_accuracy.to_string(),
            opt(self.val_accuracy_clean),
            format!("{:.3}", self.seconds),
            opt(self.val_map),
            opt(self.val_f1_micro),
            opt(self.val_f1_macro),
        ]
    }

    /// The TensorBoard scalars of this row, tagged as `train/…`, `val/…` and `lr`.
    fn scalars(&self) -> Vec<(&'static str, f32)> {
        let mut s = vec![
            ("val/loss", self.val_loss),
            ("val/accuracy", self.val_accuracy),
            ("lr", self.lr as f32),
        ];
        s.extend(self.train_loss.map(|v| ("train/loss", v)));
        s.extend(self.train_accuracy.map(|v| ("train/accuracy", v)));
        s.extend(self.val_accuracy_clean.map(|v| ("val/accuracy_clean", v)));
        s.extend(self.val_map.map(|v| ("val/map", v)));
        s.extend(self.val_f1_micro.map(|v| ("val/f1_micro", v)));
        s.extend(self.val_f1_macro.map(|v| ("val/f1_macro", v)));
        s
    }
}

/// The open log files.
struct Writers {
    metrics: CsvFile,
    batches: CsvFile,
    events: EventWriter,
}

impl Writers {
    /// Creates the files, removing the event files a previous run left in [`RUNS_DIR`].
    fn open(dir: &Path) -> std::io::Result<Self> {
        let runs = dir.join(RUNS_DIR);
        if let Ok(entries) = std::fs::read_dir(&runs) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().contains("tfevents") {
                    std::fs::remove_file(e.path())?;
                }
            }
        }
        Ok(Self {
            metrics: CsvFile::create(&dir.join(METRICS_CSV), &METRICS_HEADER)?,
            batches: CsvFile::create(&dir.join(BATCHES_CSV), &BATCHES_HEADER)?,
            events: EventWriter::create(&runs)?,
        })
    }
}

/// Where the log files stand.
enum Files {
    /// Nothing written yet: the files are made at the first batch or validation.
    NotYet,
    Open(Writers),
    /// Writing failed once (and was reported); the run goes on without the files.
    Failed,
}

/// The run directory's writer, fed every engine event.
pub struct RunLog {
    dir: PathBuf,
    started: Instant,
    classes: Vec<String>,
    /// Optimisation steps so far.
    step: usize,
    lr: f64,
    /// Loss and accuracy sums and batches of the epoch in progress.
    sums: (f64, f64, usize),
    /// Every validation of a phase, for the history picture.
    epochs: Vec<EpochRow>,
    confusion: Option<Vec<Vec<usize>>>,
    top_losses: Vec<TopLoss>,
    files: Files,
}

impl RunLog {
    /// A log of the run whose checkpoints go to `dir`; nothing is written until the run trains
    /// or validates.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            started: Instant::now(),
            classes: Vec::new(),
            step: 0,
            lr: 0.0,
            sums: (0.0, 0.0, 0),
            epochs: Vec::new(),
            confusion: None,
            top_losses: Vec::new(),
            files: Files::NotYet,
        }
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes one event; returns what could not be written, as messages for the front end's
    /// log (each failure once).
    pub fn observe(&mut self, event: &Event) -> Vec<String> {
        let mut problems = Vec::new();
        match event {
            Event::DatasetReady { classes, .. } => {
                self.classes = classes.iter().map(|c| c.name.clone()).collect();
            }
            Event::Batch {
                phase,
                epoch,
                step,
                loss,
                accuracy,
                lr,
                ..
            } => {
                if *step == 1 {
                    self.sums = (0.0, 0.0, 0);
                }
                self.sums.0 += f64::from(*loss);
                self.sums.1 += f64::from(*accuracy);
                self.sums.2 += 1;
                self.step += 1;
                self.lr = *lr;
                let n = self.step;
                let fields = [
                    n.to_string(),
                    phase_name(Some(*phase)).to_string(),
                    loss.to_string(),
                    accuracy.to_string(),
                    lr.to_string(),
                    epoch.to_string(),
                ];
                let scalars = [
                    ("batch/loss", *loss),
                    ("batch/accuracy", *accuracy),
                    ("batch/lr", *lr as f32),
                ];
                self.write(&mut problems, |w| {
                    w.batches.row(&fields)?;
                    w.events.scalars(n, &scalars)
                });
            }
            Event::Validation {
                phase,
                epoch,
                loss,
                accuracy,
                accuracy_clean,
                confusion,
                top_losses,
                multi_label,
                ..
            } => {
                let (sum_loss, sum_acc, n) = self.sums;
                let mean = |s: f64| (n > 0).then(|| (s / n as f64) as f32);
                let row = EpochRow {
                    phase: *phase,
                    epoch: *epoch,
                    step: self.step,
                    lr: self.lr,
                    train_loss: mean(sum_loss),
                    train_accuracy: mean(sum_acc),
                    val_loss: *loss,
                    val_accuracy: *accuracy,
                    val_accuracy_clean: *accuracy_clean,
                    seconds: self.started.elapsed().as_secs_f64(),
                    val_map: multi_label.as_ref().map(|m| m.map),
                    val_f1_micro: multi_label.as_ref().map(|m| m.f1_micro),
                    val_f1_macro: multi_label.as_ref().map(|m| m.f1_macro),
                };
                self.confusion = Some(confusion.clone());
                self.top_losses = top_losses.clone();
                let (fields, scalars, step) = (row.fields(), row.scalars(), row.step);
                if phase.is_some() {
                    self.epochs.push(row);
                }
                self.write(&mut problems, |w| {
                    w.metrics.row(&fields)?;
                    w.events.scalars(step, &scalars)
                });
            }
            Event::CheckpointSaved { .. } => problems.extend(self.draw()),
            Event::LabelIssues(issues) => {
                let path = self.dir.join(LABEL_ISSUES_CSV);
                if let Err(e) = write_label_issues(&path, issues) {
                    problems.push(format!("run log: cannot write {}: {e}", path.display()));
                }
            }
            _ => {}
        }
        problems
    }

    /// Runs `write` on the open files (opening them first), reporting the first failure.
    fn write(
        &mut self,
        problems: &mut Vec<String>,
        write: impl FnOnce(&mut Writers) -> std::io::Result<()>,
    ) {
        if matches!(self.files, Files::NotYet) {
            self.files = match Writers::open(&self.dir) {
                Ok(w) => Files::Open(w),
                Err(e) => {
                    problems.push(format!(
                        "run log: cannot write to {}: {e}; training goes on without {METRICS_CSV}, {BATCHES_CSV} and {RUNS_DIR}/",
                        self.dir.display()
                    ));
                    Files::Failed
                }
            };
        }
        if let Files::Open(w) = &mut self.files {
            if let Err(e) = write(w) {
                problems.push(format!(
                    "run log: writing to {} failed: {e}; training goes on without {METRICS_CSV}, {BATCHES_CSV} and {RUNS_DIR}/",
                    self.dir.display()
                ));
                self.files = Files::Failed;
            }
        }
    }

    /// Draws the pictures the run has data for; a message for each that failed.
    pub fn draw(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut report = |name: &str, result: anyhow::Result<()>| {
            if let Err(e) = result {
                problems.push(format!("run log: {name} not drawn: {e:#}"));
            }
        };
        if !self.epochs.is_empty() {
            report(
                HISTORY_PNG,
                plots::history(&self.dir.join(HISTORY_PNG), &self.epochs),
            );
        }
        if let Some(confusion) = self.confusion.as_ref().filter(|c| !c.is_empty()) {
            report(
                CONFUSION_PNG,
                plots::confusion(&self.dir.join(CONFUSION_PNG), &self.classes, confusion),
            );
        }
        if !self.top_losses.is_empty() {
            report(
                TOP_LOSSES_PNG,
                plots::top_losses(
                    &self.dir.join(TOP_LOSSES_PNG),
                    &self.classes,
                    &self.top_losses,
                ),
            );
        }
        problems
    }
}

/// The files of a run directory that a model repository carries, as (path in the repository,
/// file): the pictures, [`METRICS_CSV`] and the event files under [`RUNS_DIR`], those present.
pub fn shared_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = PICTURES
        .iter()
        .chain(&[METRICS_CSV])
        .map(|name| (name.to_string(), dir.join(name)))
        .filter(|(_, path)| path.is_file())
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir.join(RUNS_DIR)) {
        let mut events: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("tfevents"))
            .filter(|e| e.path().is_file())
            .map(|e| {
                (
                    format!("{RUNS_DIR}/{}", e.file_name().to_string_lossy()),
                    e.path(),
                )
            })
            .collect();
        events.sort();
        files.extend(events);
    }
    files
}

/// Writes the finder's findings to `path` as [`LABEL_ISSUES_HEADER`] rows.
fn write_label_issues(path: &Path, issues: &LabelIssues) -> std::io::Result<()> {
    let mut out = ::csv::Writer::from_writer(Vec::new());
    out.write_record(LABEL_ISSUES_HEADER)?;
    for f in &issues.flagged {
        out.write_record([
            f.path.to_string_lossy().as_ref(),
            "mislabelled",
            &f.given,
            &f.suggested,
            &f.given_probability.to_string(),
            &f.suggested_probability.to_string(),
            "another class is likelier out of fold",
        ])?;
    }
    for m in &issues.outliers {
        let path = m.path.to_string_lossy();
        out.write_record([
            path.as_ref(),
            "fits_no_class",
            &m.given,
            "",
            "",
            "",
            &m.reason,
        ])?;
    }
    let bytes = out.into_inner().map_err(|e| e.into_error())?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::atomic::atomic_write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ClassCount;

    fn ready() -> Event {
        Event::DatasetReady {
            task: crate::data::Task::SingleLabel,
            class_root: "data".into(),
            classes: ["cat", "dog"]
                .iter()
                .map(|n| ClassCount {
                    name: n.to_string(),
                    train: 10,
                    val: 4,
                })
                .collect(),
            skipped: vec![],
            ignored: 0,
            cached_images: 28,
            report: Default::default(),
            source: "class folders".into(),
        }
    }

    fn batch(phase: Phase, epoch: usize, step: usize, loss: f32) -> Event {
        Event::Batch {
            phase,
            epoch,
            step,
            steps_per_epoch: 2,
            loss,
            accuracy: 1.0 - loss,
            lr: 1e-3,
            images_per_sec: 10.0,
        }
    }

    fn validation(phase: Option<Phase>, epoch: usize, images: &Path) -> Event {
        Event::Validation {
            multi_label: None,
            phase,
            epoch,
            loss: 0.25,
            accuracy: 0.875,
            accuracy_clean: Some(0.9),
            per_class_accuracy: vec![0.75, 1.0],
            confusion: vec![vec![3, 1], vec![0, 4]],
            top_losses: vec![
                TopLoss {
                    path: images.join("cat.1.png"),
                    truth: vec![0],
                    predicted: vec![1],
                    probability: 0.8,
                    loss: 1.6,
                },
                TopLoss {
                    path: images.join("missing.png"),
                    truth: vec![1],
                    predicted: vec![1],
                    probability: 0.6,
                    loss: 0.5,
                },
            ],
            seconds: 0.1,
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn a_run_leaves_its_metrics_batches_events_and_pictures() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("ckpt");
        image::RgbImage::from_pixel(64, 48, image::Rgb([200, 30, 30]))
            .save(dir.path().join("cat.1.png"))
            .unwrap();
        // A previous run's event file is replaced.
        std::fs::create_dir_all(run.join(RUNS_DIR)).unwrap();
        std::fs::write(run.join(RUNS_DIR).join("events.out.tfevents.old"), b"x").unwrap();
        let mut log = RunLog::new(&run);
        let mut events = vec![ready()];
        for epoch in 1..=2 {
            events.push(batch(Phase::Warmup, epoch, 1, 0.5));
            events.push(batch(Phase::Warmup, epoch, 2, 0.25));
            events.push(validation(Some(Phase::Warmup), epoch, dir.path()));
        }
        events.push(batch(Phase::Finetune, 1, 1, 0.125));
        events.push(validation(Some(Phase::Finetune), 1, dir.path()));
        events.push(Event::CheckpointSaved {
            path: run.join("best.safetensors"),
            reason: "best".into(),
        });
        for e in &events {
            assert_eq!(log.observe(e), Vec::<String>::new());
        }
        let metrics = lines(&run.join(METRICS_CSV));
        assert_eq!(metrics[0], METRICS_HEADER.join(","));
        assert_eq!(metrics.len(), 4);
        assert!(
            metrics[1].starts_with("warmup,1,2,0.001,0.375,0.625,0.25,0.875,0.9,"),
            "{}",
            metrics[1]
        );
        assert!(metrics[3].starts_with("finetune,1,5,0.001,0.125,0.875,"));
        let batches = lines(&run.join(BATCHES_CSV));
        assert_eq!(batches.len(), 6);
        assert_eq!(batches[5], "5,finetune,0.125,0.875,0.001,1");

        let runs: Vec<PathBuf> = std::fs::read_dir(run.join(RUNS_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(runs.len(), 1, "{runs:?}");
        let read = tensorboard::read_events(&runs[0]).unwrap();
        // The file version, five batches, three validations.
        assert_eq!(read.len(), 9);
        let Some(tensorboard::What::Summary(s)) = &read[8].what else {
            panic!("{:?}", read[8]);
        };
        assert_eq!(read[8].step, 5);
        let val_acc = s.value.iter().find(|v| v.tag == "val/accuracy").unwrap();
        assert_eq!(val_acc.simple_value, Some(0.875));

        for name in PICTURES {
            let img = image::open(run.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(img.width() > 300 && img.height() > 200, "{name}");
            // Not a blank canvas: drawn lines, cells or pictures.
            let rgb = img.to_rgb8();
            let inked = rgb.pixels().filter(|p| p.0 != [255, 255, 255]).count();
            assert!(inked > 2000, "{name}: {inked} drawn pixels");
        }
        let top = image::open(run.join(TOP_LOSSES_PNG)).unwrap().to_rgb8();
        let red = top.pixels().filter(|p| p.0 == [200, 30, 30]).count();
        assert!(red > 1000, "the top-loss image is pasted ({red} pixels)");
        let shared: Vec<String> = shared_files(&run).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            &shared[..4],
            &[HISTORY_PNG, CONFUSION_PNG, TOP_LOSSES_PNG, METRICS_CSV]
        );
        assert!(shared[4].starts_with("runs/events.out.tfevents."));
    }

    #[test]
    fn an_unwritable_run_directory_is_reported_once_and_the_run_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let mut log = RunLog::new(&file.join("under"));
        let first = log.observe(&batch(Phase::Warmup, 1, 1, 0.5));
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(first[0].contains("cannot write to"), "{}", first[0]);
        assert!(log.observe(&batch(Phase::Warmup, 1, 2, 0.5)).is_empty());
        let drawn = log.observe(&validation(Some(Phase::Warmup), 1, dir.path()));
        assert!(drawn.is_empty());
        let pictures = log.observe(&Event::CheckpointSaved {
            path: file.join("under/best.safetensors"),
            reason: "best".into(),
        });
        assert_eq!(pictures.len(), 3, "{pictures:?}");
    }
}
