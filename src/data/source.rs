//! The one way in for every kind of dataset: which rule labels the images, applied in this
//! order:
//! 1. `hf://datasets/ORG/NAME[@REVISION]`: a Hub dataset of parquet files ([`super::hub_dataset`]);
//! 2. `--labels FILE`: a label file ([`super::label_file`]);
//! 3. `--classes-dir DIR`: that folder's sub-folders are the classes;
//! 4. `--label-regex REGEX`: the folders whose file names carry the class, by that pattern;
//! 5. a dataset folder holding exactly one label file (`.csv`, `.tsv`, `.txt`, `.jsonl`) that
//!    names its images: that file, said so in the report;
//! 6. otherwise the class folders or labelled file names found by [`super::discover`]'s ranking.
//!
//! Then the label corrections saved for the dataset ([`super::corrections`]) are applied.

use super::corrections::{self, Correction, CorrectionsChoice, CorrectionsFile, Decision};
use super::discover::{self, DiscoverOptions};
use super::discovery::{self, CandidateReport, ClassFiles, Discovery, DiscoveryError, Tagging};
use super::hub_dataset::{self, HubDatasetOptions};
use super::label_file::{self, ColumnChoice};
use super::names::LabelPattern;
use crate::hub::{DownloadProgress, HubOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The flags that say how a dataset's images are labelled.
#[derive(Debug, Clone, Default, clap::Args)]
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
    /// Each image may carry any number of labels: a label column is read as tag lists, and
    /// the model gets one sigmoid output per label. Tag lists, 0/1 columns and Hub
    /// `Sequence(ClassLabel)` features are read so without it.
    #[arg(long)]
    pub multi_label: bool,
    /// Hub dataset: the config to read (default `default`, else the first).
    #[arg(long, value_name = "NAME")]
    pub dataset_config: Option<String>,
    /// Hub dataset: the training split (default `train`).
    #[arg(long, value_name = "SPLIT")]
    pub train_split: Option<String>,
    /// Hub dataset: the validation split (default `validation`, `valid`, `val`, else `test`).
    #[arg(long, value_name = "SPLIT")]
    pub val_split: Option<String>,
    /// Train on the labels as given, without the corrections saved for this dataset by the
    /// dashboard's review of label issues.
    #[arg(long)]
    pub ignore_corrections: bool,
}

impl SourceArgs {
    /// How to read the dataset under `config`: these flags, the Hub settings, the memory budget.
    pub fn options(&self, config: &crate::config::Config) -> SourceOptions {
        SourceOptions {
            classes_dir: self.classes_dir.clone(),
            label_regex: self.label_regex.clone(),
            labels: self.labels.clone(),
            columns: ColumnChoice {
                path: self.path_column.clone(),
                label: self.label_column.clone(),
                multi_label: self.multi_label,
            },
            hub_dataset: HubDatasetOptions {
                config: self.dataset_config.clone(),
                train_split: self.train_split.clone(),
                val_split: self.val_split.clone(),
                label_column: self.label_column.clone(),
            },
            hub: HubOptions::from_config(&config.hub),
            cache_budget_bytes: config.data.cache_memory_mb * 1024 * 1024,
            corrections: if self.ignore_corrections {
                CorrectionsChoice::Ignored
            } else {
                CorrectionsChoice::Saved
            },
        }
    }
}

/// How to read a dataset, whatever its source.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// `--classes-dir`.
    pub classes_dir: Option<PathBuf>,
    /// `--label-regex`.
    pub label_regex: Option<String>,
    /// `--labels`.
    pub labels: Option<PathBuf>,
    /// `--path-column`, `--label-column` (the label column also for Hub datasets).
    pub columns: ColumnChoice,
    /// `--dataset-config`, `--train-split`, `--val-split`.
    pub hub_dataset: HubDatasetOptions,
    /// How to reach the Hub for `hf://datasets/…`.
    pub hub: HubOptions,
    /// Memory for the encoded images of parquet row groups (`data.cache_memory_mb`).
    pub cache_budget_bytes: u64,
    /// The label corrections to apply.
    pub corrections: CorrectionsChoice,
}

impl SourceOptions {
    /// Folder discovery with no options, the Hub as configured by default.
    pub fn folders() -> Self {
        let config = crate::config::Config::default();
        Self {
            classes_dir: None,
            label_regex: None,
            labels: None,
            columns: ColumnChoice::default(),
            hub_dataset: HubDatasetOptions::default(),
            hub: HubOptions::from_config(&config.hub),
            cache_budget_bytes: config.data.cache_memory_mb * 1024 * 1024,
            corrections: CorrectionsChoice::Ignored,
        }
    }
}

/// A short name for `dataset`: the Hub repository's name, else the folder's.
pub fn dataset_name(dataset: &Path) -> String {
    match hub_dataset::parse_spec(dataset) {
        Some(Ok(repo)) => repo.name,
        _ => std::fs::canonicalize(dataset)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "dataset".into()),
    }
}

/// Finds the labelled images of `dataset` by the first rule above that applies, then checks
/// what every source must pass ([`Discovery::settled`]). Returns them with warnings (an offline
/// fallback, an image listed under two labels, a few one-image classes, a validation split that
/// lacks classes). `progress` hears of Hub downloads.
pub fn discover_source(
    dataset: &Path,
    options: &SourceOptions,
    progress: Arc<dyn Fn(DownloadProgress) + Send + Sync>,
) -> Result<(Discovery, Vec<String>), DiscoveryError> {
    let (mut found, mut warnings) = find(dataset, options, progress)?;
    if options.columns.multi_label && found.tagging.is_none() {
        found.tagging = Some(Tagging::default());
        found.rule.push_str(", read as multi-label");
    }
    warnings.extend(apply_corrections(&mut found, dataset, &options.corrections));
    let (found, more) = found.settled()?;
    warnings.extend(more);
    Ok((found, warnings))
}

/// What applying corrections did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// The corrections that found their image (and, to relabel, their class).
    pub applied: Vec<Correction>,
    pub relabelled: usize,
    pub excluded: usize,
    /// Corrections that could not be applied, each in words.
    pub problems: Vec<String>,
}

/// Applies `corrections` to the images `found` in `dataset`: relabelled images move to their
/// class (within their split), excluded ones are dropped.
pub fn apply(found: &mut Discovery, dataset: &Path, corrections: &[Correction]) -> Applied {
    let mut wanted: HashMap<&str, &Correction> =
        corrections.iter().map(|c| (c.file.as_str(), c)).collect();
    let mut done = Applied::default();
    let mut apply_split = |classes: &mut Vec<ClassFiles>, done: &mut Applied| {
        let index: HashMap<String, usize> = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let mut moved: Vec<(usize, PathBuf)> = Vec::new();
        for class in classes.iter_mut() {
            class.files.retain(|file| {
                let key = corrections::key_of(dataset, file);
                let Some(c) = wanted.remove(key.as_str()) else {
                    return true;
                };
                match (c.decision, c.label.as_ref().and_then(|l| index.get(l))) {
                    (Decision::Keep, _) => {
                        done.applied.push(c.clone());
                        true
                    }
                    (Decision::Exclude, _) => {
                        done.applied.push(c.clone());
                        done.excluded += 1;
                        false
                    }
                    (Decision::Relabel, Some(&to)) => {
                        done.applied.push(c.clone());
                        done.relabelled += 1;
                        moved.push((to, file.clone()));
                        false
                    }
                    (Decision::Relabel, None) => {
                        done.problems.push(format!(
                            "correction of {}: no class {:?} in this dataset; label kept",
                            c.file,
                            c.label.as_deref().unwrap_or("")
                        ));
                        true
                    }
                }
            });
        }
        for (to, file) in moved {
            classes[to].files.push(file);
            classes[to].files.sort();
        }
    };
    apply_split(&mut found.classes, &mut done);
    if let Some(val) = found.given_val.as_mut() {
        apply_split(val, &mut done);
    }
    let mut missing: Vec<&str> = wanted.into_keys().collect();
    missing.sort();
    if !missing.is_empty() {
        done.problems.push(format!(
            "{} correction(s) name images this dataset no longer has, e.g. {}",
            missing.len(),
            missing[0]
        ));
    }
    done
}

/// Applies the corrections `choice` names to `found` and records them there; the one line that
/// says so, and what could not be applied.
fn apply_corrections(
    found: &mut Discovery,
    dataset: &Path,
    choice: &CorrectionsChoice,
) -> Vec<String> {
    let (corrections, from) = match choice {
        CorrectionsChoice::Ignored => return Vec::new(),
        CorrectionsChoice::Given(list) => (list.clone(), "the recipe".to_string()),
        CorrectionsChoice::Saved => {
            let Some(cache) = crate::cache_dir() else {
                return Vec::new();
            };
            match CorrectionsFile::open(CorrectionsFile::path_for(&cache, dataset)) {
                Ok(file) => (file.effective(), file.path().display().to_string()),
                Err(e) => return vec![format!("label corrections not applied: {e}")],
            }
        }
    };
    if corrections.is_empty() {
        return Vec::new();
    }
    if found.tagging.is_some() {
        return vec![format!(
            "{} label correction(s) saved for this dataset not applied: they were decided for one class an image, and this dataset is read as multi-label",
            corrections.len()
        )];
    }
    let done = apply(found, dataset, &corrections);
    let mut lines = vec![format!(
        "applied {} label correction(s) from {from}: {} relabelled, {} left out{}",
        done.applied.len(),
        done.relabelled,
        done.excluded,
        if matches!(choice, CorrectionsChoice::Saved) {
            "; --ignore-corrections trains on the labels as given"
        } else {
            ""
        }
    )];
    lines.extend(done.problems);
    found.corrections = done.applied;
    lines
}

/// The labelled images of `dataset` by the first rule that applies.
fn find(
    dataset: &Path,
    options: &SourceOptions,
    progress: Arc<dyn Fn(DownloadProgress) + Send + Sync>,
) -> Result<(Discovery, Vec<String>), DiscoveryError> {
    if let Some(repo) = hub_dataset::parse_spec(dataset) {
        let repo = repo.map_err(DiscoveryError::Labels)?;
        let mut hub = options.hub_dataset.clone();
        hub.label_column = hub.label_column.or(options.columns.label.clone());
        return hub_dataset::open(
            &repo,
            &hub,
            &options.hub,
            options.cache_budget_bytes,
            progress,
        );
    }
    let label_regex = options
        .label_regex
        .as_deref()
        .map(LabelPattern::regex)
        .transpose()
        .map_err(DiscoveryError::Labels)?;
    match (&options.labels, &options.classes_dir, &label_regex) {
        (Some(file), _, _) => {
            if !file.is_file() {
                return Err(DiscoveryError::Labels(format!(
                    "label file {} does not exist",
                    file.display()
                )));
            }
            let root = if dataset.is_dir() {
                dataset
            } else {
                file.parent().unwrap_or(Path::new("."))
            };
            let labelled =
                label_file::read(file, root, &options.columns).map_err(DiscoveryError::Labels)?;
            return from_label_file(dataset, root, file, labelled, "given with --labels");
        }
        (None, None, None) if dataset.is_dir() => {
            if let Some((file, labelled)) = label_file::find_in(dataset, &options.columns) {
                let reason = "the one label file in the dataset folder, and it names the images";
                return from_label_file(dataset, dataset, &file, labelled, reason);
            }
        }
        _ => {}
    }
    discover::discover(
        dataset,
        &DiscoverOptions {
            classes_dir: options.classes_dir.clone(),
            label_regex,
        },
    )
    .map(|d| (d, Vec::new()))
}

/// A [`Discovery`] of what the label `file` labels, its images resolved under `root`.
fn from_label_file(
    dataset: &Path,
    root: &Path,
    file: &Path,
    labelled: label_file::LabelledFiles,
    reason: &str,
) -> Result<(Discovery, Vec<String>), DiscoveryError> {
    let images = labelled.images();
    let candidates = vec![CandidateReport {
        path: discovery::relative_to(root, file),
        images,
        chosen: true,
        reason: format!("{}: {reason}", labelled.rule),
    }];
    let discovery = Discovery {
        class_root: root.to_path_buf(),
        rule: labelled.rule,
        classes: labelled.classes,
        given_val: None,
        skipped: labelled.skipped,
        ignored: 0,
        candidates,
        corrections: Vec::new(),
        tagging: labelled.untagged.map(|untagged| Tagging {
            untagged,
            untagged_val: Vec::new(),
        }),
    }
    .checked(dataset)?;
    Ok((discovery, labelled.conflicts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::corrections::tests::fix;

    fn found(root: &Path) -> Discovery {
        let class = |name: &str, files: &[&str]| ClassFiles {
            name: name.into(),
            files: files.iter().map(|f| root.join(name).join(f)).collect(),
        };
        Discovery {
            class_root: root.to_path_buf(),
            rule: "class folders".into(),
            classes: vec![class("cat", &["1.jpg", "2.jpg"]), class("dog", &["3.jpg"])],
            given_val: None,
            skipped: Vec::new(),
            ignored: 0,
            candidates: Vec::new(),
            corrections: Vec::new(),
            tagging: None,
        }
    }

    #[test]
    fn applying_moves_relabelled_images_drops_excluded_ones_and_reports_the_rest() {
        let root = Path::new("/data/pets");
        let mut d = found(root);
        let done = apply(
            &mut d,
            root,
            &[
                fix("cat/1.jpg", Decision::Relabel, Some("dog")),
                fix("dog/3.jpg", Decision::Exclude, None),
                fix("cat/2.jpg", Decision::Relabel, Some("bird")),
                fix("gone.jpg", Decision::Exclude, None),
            ],
        );
        assert_eq!((done.relabelled, done.excluded), (1, 1));
        assert_eq!(d.classes[0].files, vec![root.join("cat/2.jpg")]);
        assert_eq!(d.classes[1].files, vec![root.join("cat/1.jpg")]);
        assert_eq!(done.applied.len(), 2);
        assert_eq!(done.problems.len(), 2, "{:?}", done.problems);
        assert!(done.problems[0].contains("bird"));
        assert!(done.problems[1].contains("gone.jpg"));
    }
}
