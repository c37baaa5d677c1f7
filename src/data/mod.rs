//! Everything that turns labelled images — class folders, labelled file names, a label file or
//! a Hub dataset — into batches: discovery, split, decoding, preprocessing, augmentation and the
//! bad-file report.

pub mod augment;
pub mod corrections;
pub mod decode;
pub mod discover;
pub mod discovery;
pub mod fingerprint;
pub mod groups;
pub mod hub_dataset;
pub mod label_file;
pub mod names;
pub mod parquet;
pub mod preprocess;
pub mod resample;
pub mod source;
pub mod split;
pub mod store;

use crate::config::DuplicateMode;
use fingerprint::Fingerprint;
use groups::{Components, DuplicateGroup, Leakage, LeakedPair};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

pub use discovery::{CandidateReport, ClassFiles, Discovery, DiscoveryError};
pub use preprocess::{Preprocess, PretrainedCfg};
pub use source::{dataset_name, discover_source, SourceArgs, SourceOptions};
pub use store::ImageStore;

/// Extensions read as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"];

/// Whether `path` has an image extension.
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// `labels` by name (`?` for an index beyond `classes`), joined by `+`; `none` for no label.
pub fn label_names(classes: &[String], labels: &[usize]) -> String {
    if labels.is_empty() {
        return "none".into();
    }
    let names: Vec<&str> = labels
        .iter()
        .map(|&i| classes.get(i).map_or("?", String::as_str))
        .collect();
    names.join("+")
}

/// Serialises a path as text, replacing what is not UTF-8 (a file name need not be).
pub fn lossy_path<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// A file passed over, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    pub reason: String,
}

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub path: PathBuf,
    /// Indices into the class names: exactly one for a single-label dataset; any number,
    /// sorted, for a multi-label one (none for an image that shows no label).
    pub labels: Vec<usize>,
}

impl Sample {
    /// An image of one class.
    pub fn new(path: PathBuf, class: usize) -> Self {
        Self {
            path,
            labels: vec![class],
        }
    }

    /// The class of a single-label sample.
    pub fn class(&self) -> usize {
        debug_assert_eq!(self.labels.len(), 1, "a single-label sample");
        self.labels[0]
    }
}

/// Whether each image has one class or any number of labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    #[default]
    SingleLabel,
    MultiLabel,
}

/// Image counts of one class per split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassCount {
    pub name: String,
    pub train: usize,
    pub val: usize,
}

/// Multi-label: how often two labels tag one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelPair {
    pub labels: [String; 2],
    pub images: usize,
}

/// How a dataset is split (`data.val_fraction`, `data.seed`, `data.duplicates`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitOptions {
    pub val_fraction: f64,
    pub seed: u64,
    pub duplicates: DuplicateMode,
}

impl SplitOptions {
    /// The options of a configuration's `[data]` table.
    pub fn of(data: &crate::config::DataConfig) -> Self {
        Self {
            val_fraction: data.val_fraction,
            seed: data.seed,
            duplicates: data.duplicates,
        }
    }
}

/// What the data checks found: how the class root was chosen, copies among the images, and
/// validation images with a twin in training.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DataReport {
    /// Class roots considered, the chosen one first.
    pub candidates: Vec<CandidateReport>,
    /// Groups of exact or near copies (empty with `data.duplicates = "off"`).
    pub duplicates: Vec<DuplicateGroup>,
    /// Zero by construction when tltui splits with `data.duplicates = "group"`.
    pub leakage: Leakage,
    /// The label corrections applied ([`corrections`]), in the order they were decided.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub corrections: Vec<corrections::Correction>,
    /// Multi-label: images with no label and the labels that most often go together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_label: Option<MultiLabelReport>,
}

/// What a multi-label dataset's report adds to the per-label counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MultiLabelReport {
    /// Training and validation images (each once, whatever its labels).
    pub train_images: usize,
    pub val_images: usize,
    /// Training and validation images that carry no label.
    pub untagged_train: usize,
    pub untagged_val: usize,
    /// Images with two labels or more.
    pub images_with_several: usize,
    /// The label pairs that tag the most images together, most first.
    pub frequent_pairs: Vec<LabelPair>,
}

impl MultiLabelReport {
    /// The counts in words: images per side, those with no label, those with several.
    pub fn summary(&self) -> String {
        format!(
            "{} images ({} train, {} val), {} with no label ({} train, {} val), {} with two labels or more",
            self.train_images + self.val_images,
            self.train_images,
            self.val_images,
            self.untagged_train + self.untagged_val,
            self.untagged_train,
            self.untagged_val,
            self.images_with_several
        )
    }
}

impl std::fmt::Display for LabelPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} + {}: {}",
            self.labels[0], self.labels[1], self.images
        )
    }
}

/// Label pairs a report lists.
const REPORTED_PAIRS: usize = 5;

/// A dataset split into labelled training and validation samples.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The folder whose sub-folders (or file names) are the classes, the label file's folder,
    /// or the Hub dataset (`hf://datasets/ORG/NAME`).
    pub class_root: PathBuf,
    /// The rule that labelled the images (see [`Discovery::rule`]).
    pub rule: String,
    /// One class per image, or any number of labels.
    pub task: Task,
    pub class_names: Vec<String>,
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    /// Files that are not usable images, with reasons.
    pub skipped: Vec<Skipped>,
    /// Hidden and non-image files passed over.
    pub ignored: usize,
    /// Whether the validation split came from the dataset's own folders.
    pub given_split: bool,
    /// The group of every file: files derived from one source, or copies of one picture.
    pub groups: HashMap<PathBuf, usize>,
    pub report: DataReport,
    /// What the user should know: classes left out, images filed under two classes, leakage.
    pub warnings: Vec<String>,
}

impl Dataset {
    /// Finds the labelled images of `path` ([`discover_source`]; Hub downloads are reported
    /// on stderr), decodes every image once to fingerprint it and to find unusable files, then
    /// groups and splits ([`Dataset::build`]).
    pub fn open(
        path: &Path,
        source: &SourceOptions,
        options: &SplitOptions,
        max_pixels: u64,
    ) -> Result<Self, DiscoveryError> {
        let (found, notes) = discover_source(
            path,
            source,
            std::sync::Arc::new(crate::hub::report_on_stderr),
        )?;
        let (fingerprints, bad) = fingerprint_all(
            &found.files(),
            max_pixels,
            options.duplicates != DuplicateMode::Off,
        );
        let mut ds = Self::build(found, &fingerprints, bad, options)?;
        ds.warnings.splice(0..0, notes);
        Ok(ds)
    }

    /// Groups the discovered files (derived names, and with `duplicates = "group"` exact and
    /// near copies), splits them unless the dataset has its own validation folder, removes the
    /// `bad` files and measures leakage.
    pub fn build(
        found: Discovery,
        fingerprints: &HashMap<PathBuf, Fingerprint>,
        bad: Vec<Skipped>,
        options: &SplitOptions,
    ) -> Result<Self, DiscoveryError> {
        let task = if found.tagging.is_some() {
            Task::MultiLabel
        } else {
            Task::SingleLabel
        };
        let (items, val_from) = labelled_items(&found);
        // With `duplicates = "off"` nothing is compared, even where fingerprints exist (the
        // engine's image store always computes them).
        let checked = options.duplicates != DuplicateMode::Off;
        let fingerprinted: Vec<usize> = (0..items.len())
            .filter(|&i| checked && fingerprints.contains_key(&items[i].0))
            .collect();
        let prints: Vec<Fingerprint> = fingerprinted
            .iter()
            .map(|&i| fingerprints[&items[i].0])
            .collect();
        let twins: Vec<groups::Twin> = groups::twins(&prints)
            .into_iter()
            .map(|t| groups::Twin {
                a: fingerprinted[t.a],
                b: fingerprinted[t.b],
                ..t
            })
            .collect();
        let paths: Vec<&Path> = items.iter().map(|(p, _)| p.as_path()).collect();
        let duplicates = groups::duplicate_groups(&paths, &twins);

        let mut sets = Components::new(items.len());
        if options.duplicates == DuplicateMode::Group {
            for members in stem_lists(&items, val_from, task == Task::MultiLabel) {
                let files: Vec<PathBuf> = members.iter().map(|&i| items[i].0.clone()).collect();
                let mut by_stem: HashMap<String, usize> = HashMap::new();
                for (k, stem) in groups::source_stems(&files).into_iter().enumerate() {
                    let at = *by_stem.entry(stem).or_insert(members[k]);
                    sets.join(at, members[k]);
                }
            }
            for t in &twins {
                sets.join(t.a, t.b);
            }
        }
        let ids = sets.ids();
        let mut sizes: HashMap<usize, usize> = HashMap::new();
        for id in &ids {
            *sizes.entry(*id).or_default() += 1;
        }
        let groups: HashMap<PathBuf, usize> = paths
            .iter()
            .zip(&ids)
            .map(|(p, id)| (p.to_path_buf(), *id))
            .collect();
        let group_of = |p: &Path| groups.get(p).copied().filter(|id| sizes[id] > 1);

        let sample = |i: usize| Sample {
            path: items[i].0.clone(),
            labels: items[i].1.clone(),
        };
        let (train, val): (Vec<Sample>, Vec<Sample>) = match (task, val_from) {
            (_, Some(from)) => (
                (0..from).map(sample).collect(),
                (from..items.len()).map(sample).collect(),
            ),
            (Task::SingleLabel, None) => {
                let files: Vec<Vec<PathBuf>> =
                    found.classes.iter().map(|c| c.files.clone()).collect();
                let (train, val) =
                    split::stratified_split(&files, options.val_fraction, options.seed, group_of);
                let label = |lists: Vec<Vec<PathBuf>>| -> Vec<Sample> {
                    lists
                        .into_iter()
                        .enumerate()
                        .flat_map(|(c, files)| files.into_iter().map(move |p| Sample::new(p, c)))
                        .collect()
                };
                (label(train), label(val))
            }
            (Task::MultiLabel, None) => {
                let tagged: Vec<(&Path, &[usize])> = items
                    .iter()
                    .map(|(p, l)| (p.as_path(), l.as_slice()))
                    .collect();
                let to_val = split::iterative_split(
                    &tagged,
                    found.classes.len(),
                    options.val_fraction,
                    options.seed,
                    group_of,
                );
                let (mut train, mut val) = (Vec::new(), Vec::new());
                for (i, v) in to_val.into_iter().enumerate() {
                    if v { &mut val } else { &mut train }.push(sample(i));
                }
                (train, val)
            }
        };
        let class_names: Vec<String> = found.classes.iter().map(|c| c.name.clone()).collect();
        let labels: HashMap<&Path, &[usize]> = items
            .iter()
            .map(|(p, l)| (p.as_path(), l.as_slice()))
            .collect();
        let mut warnings: Vec<String> = duplicates
            .iter()
            .filter_map(|g| {
                let first = labels[g.files[0].as_path()];
                g.files
                    .iter()
                    .any(|f| labels[f.as_path()] != first)
                    .then(|| {
                        let places: Vec<String> = g
                            .files
                            .iter()
                            .map(|f| {
                                let names = label_names(&class_names, labels[f.as_path()]);
                                format!("{} ({names})", f.display())
                            })
                            .collect();
                        let what = match task {
                            Task::SingleLabel => "is in more than one class",
                            Task::MultiLabel => "carries different labels",
                        };
                        format!("the same image {what}: {}", places.join(", "))
                    })
            })
            .collect();
        let mut ds = Self {
            class_root: found.class_root,
            rule: found.rule,
            task,
            class_names,
            train,
            val,
            skipped: found.skipped,
            ignored: found.ignored,
            given_split: found.given_val.is_some(),
            groups,
            report: DataReport {
                candidates: found.candidates,
                duplicates,
                leakage: Leakage::default(),
                corrections: found.corrections,
                multi_label: None,
            },
            warnings: Vec::new(),
        };
        warnings.extend(ds.remove_unusable(bad)?);
        if options.duplicates != DuplicateMode::Off {
            ds.report.leakage = ds.leakage(&twins, &paths);
            let leaked = ds.report.leakage.val_images_with_train_twin;
            if leaked > 0 {
                warnings.push(format!(
                    "{leaked} of {} validation images have an exact or near copy in training: their accuracy is not a test of generalisation (accuracy_clean leaves them out)",
                    ds.val.len()
                ));
            }
        }
        ds.warnings = warnings;
        if task == Task::MultiLabel {
            let (untagged_train, untagged_val) = ds.untagged_counts();
            ds.report.multi_label = Some(MultiLabelReport {
                train_images: ds.train.len(),
                val_images: ds.val.len(),
                untagged_train,
                untagged_val,
                images_with_several: ds
                    .train
                    .iter()
                    .chain(&ds.val)
                    .filter(|s| s.labels.len() >= 2)
                    .count(),
                frequent_pairs: ds.frequent_pairs(REPORTED_PAIRS),
            });
        }
        Ok(ds)
    }

    /// Validation images with a twin among the training images, from the twin pairs over `paths`.
    fn leakage(&self, twins: &[groups::Twin], paths: &[&Path]) -> Leakage {
        let train: HashSet<&Path> = self.train.iter().map(|s| s.path.as_path()).collect();
        let val: HashSet<&Path> = self.val.iter().map(|s| s.path.as_path()).collect();
        let mut pairs: Vec<LeakedPair> = twins
            .iter()
            .filter_map(|t| {
                let (a, b) = (paths[t.a], paths[t.b]);
                let (tr, va) = if train.contains(a) && val.contains(b) {
                    (a, b)
                } else if train.contains(b) && val.contains(a) {
                    (b, a)
                } else {
                    return None;
                };
                Some(LeakedPair {
                    train: tr.to_path_buf(),
                    val: va.to_path_buf(),
                    distance: t.distance,
                })
            })
            .collect();
        pairs.sort_by(|x, y| (&x.val, &x.train).cmp(&(&y.val, &y.train)));
        let leaked: HashSet<&PathBuf> = pairs.iter().map(|p| &p.val).collect();
        Leakage {
            val_images_with_train_twin: leaked.len(),
            pairs,
        }
    }

    /// Validation images that have a twin in training (see [`DataReport::leakage`]).
    pub fn leaked_val_paths(&self) -> HashSet<&Path> {
        self.report
            .leakage
            .pairs
            .iter()
            .map(|p| p.val.as_path())
            .collect()
    }

    /// Training and validation counts per class (per label: the images it tags).
    pub fn class_counts(&self) -> Vec<ClassCount> {
        let mut counts: Vec<ClassCount> = self
            .class_names
            .iter()
            .map(|n| ClassCount {
                name: n.clone(),
                train: 0,
                val: 0,
            })
            .collect();
        for s in &self.train {
            for &l in &s.labels {
                counts[l].train += 1;
            }
        }
        for s in &self.val {
            for &l in &s.labels {
                counts[l].val += 1;
            }
        }
        counts
    }

    /// `sample`'s labels as a label file's tag list holds them: their names joined by a space
    /// (empty for an image with none).
    pub fn tag_list(&self, sample: &Sample) -> String {
        let names: Vec<&str> = sample
            .labels
            .iter()
            .map(|&l| self.class_names[l].as_str())
            .collect();
        names.join(" ")
    }

    /// Multi-label: the images with no label, in training and in validation.
    fn untagged_counts(&self) -> (usize, usize) {
        let none = |v: &[Sample]| v.iter().filter(|s| s.labels.is_empty()).count();
        (none(&self.train), none(&self.val))
    }

    /// Multi-label: the `n` label pairs that tag the most images together, most first.
    fn frequent_pairs(&self, n: usize) -> Vec<LabelPair> {
        let mut counts: HashMap<(usize, usize), usize> = HashMap::new();
        for s in self.train.iter().chain(&self.val) {
            for (k, &a) in s.labels.iter().enumerate() {
                for &b in &s.labels[k + 1..] {
                    *counts.entry((a, b)).or_default() += 1;
                }
            }
        }
        let mut pairs: Vec<((usize, usize), usize)> = counts.into_iter().collect();
        pairs.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        pairs
            .into_iter()
            .take(n)
            .map(|((a, b), images)| LabelPair {
                labels: [self.class_names[a].clone(), self.class_names[b].clone()],
                images,
            })
            .collect()
    }

    /// Removes the samples at `bad` (paths found unusable while decoding) and records why, then
    /// drops classes left without training images. Returns a warning per dropped class, or an
    /// error when fewer than two classes remain.
    fn remove_unusable(&mut self, bad: Vec<Skipped>) -> Result<Vec<String>, DiscoveryError> {
        let paths: std::collections::HashSet<&PathBuf> = bad.iter().map(|s| &s.path).collect();
        self.train.retain(|s| !paths.contains(&s.path));
        self.val.retain(|s| !paths.contains(&s.path));
        self.skipped.extend(bad);
        let counts = self.class_counts();
        let keep: Vec<usize> = (0..counts.len()).filter(|&i| counts[i].train > 0).collect();
        let what = match self.task {
            Task::SingleLabel => "class",
            Task::MultiLabel => "label",
        };
        let warnings = counts
            .iter()
            .filter(|c| c.train == 0)
            .map(|c| {
                format!(
                    "{what} {:?} has no usable training images and was left out",
                    c.name
                )
            })
            .collect();
        // A multi-label head learns each label against the images without it: one will do.
        let least = match self.task {
            Task::SingleLabel => 2,
            Task::MultiLabel => 1,
        };
        if keep.len() < least {
            return match keep.first() {
                Some(&i) => Err(DiscoveryError::OneClass {
                    path: self.class_root.clone(),
                    class: self.class_names[i].clone(),
                }),
                None => Err(DiscoveryError::NoImages(self.class_root.clone())),
            };
        }
        if keep.len() < counts.len() {
            let single = self.task == Task::SingleLabel;
            let relabel = |v: &mut Vec<Sample>| {
                if single {
                    v.retain(|s| keep.contains(&s.class()));
                }
                for s in v.iter_mut() {
                    s.labels = s
                        .labels
                        .iter()
                        .filter_map(|l| keep.iter().position(|k| k == l))
                        .collect();
                }
            };
            relabel(&mut self.train);
            relabel(&mut self.val);
            self.class_names = keep.iter().map(|&i| self.class_names[i].clone()).collect();
        }
        Ok(warnings)
    }
}

/// Every file `found` once, with its sorted labels, training files first; and where the
/// validation files start when the dataset has its own split.
fn labelled_items(found: &Discovery) -> (Vec<(PathBuf, Vec<usize>)>, Option<usize>) {
    let multi = found.tagging.is_some();
    let mut items: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    let add = |items: &mut Vec<(PathBuf, Vec<usize>)>,
               classes: &[discovery::ClassFiles],
               untagged: &[PathBuf]| {
        let mut at: HashMap<PathBuf, usize> = HashMap::new();
        let first = items.len();
        for (c, class) in classes.iter().enumerate() {
            for f in &class.files {
                match at.get(f) {
                    Some(&i) => items[i].1.push(c),
                    None => {
                        at.insert(f.clone(), items.len());
                        items.push((f.clone(), vec![c]));
                    }
                }
            }
        }
        for f in untagged {
            if !at.contains_key(f) {
                at.insert(f.clone(), items.len());
                items.push((f.clone(), Vec::new()));
            }
        }
        for item in &mut items[first..] {
            item.1.sort_unstable();
            item.1.dedup();
            if !multi {
                // One class an image: the first it is filed under.
                item.1.truncate(1);
            }
        }
    };
    let tagging = found.tagging.as_ref();
    add(
        &mut items,
        &found.classes,
        tagging.map_or(&[][..], |t| &t.untagged),
    );
    let val_from = found.given_val.as_ref().map(|val| {
        let from = items.len();
        add(
            &mut items,
            val,
            tagging.map_or(&[][..], |t| &t.untagged_val),
        );
        from
    });
    (items, val_from)
}

/// The item indices whose derived names are compared: each class folder's files (for
/// multi-label, each split's files), in order.
fn stem_lists(
    items: &[(PathBuf, Vec<usize>)],
    val_from: Option<usize>,
    multi: bool,
) -> Vec<Vec<usize>> {
    let from = val_from.unwrap_or(items.len());
    let mut lists: BTreeMap<(bool, usize), Vec<usize>> = BTreeMap::new();
    for (i, (_, labels)) in items.iter().enumerate() {
        let class = if multi { 0 } else { labels[0] };
        lists.entry((i >= from, class)).or_default().push(i);
    }
    lists.into_values().collect()
}

/// Decodes every file in parallel (and drops the pixels): the fingerprints of the usable ones
/// (when `fingerprint` is set) and the unusable ones with reasons.
pub fn fingerprint_all(
    paths: &[PathBuf],
    max_pixels: u64,
    fingerprint: bool,
) -> (HashMap<PathBuf, Fingerprint>, Vec<Skipped>) {
    use rayon::prelude::*;
    let results: Vec<(PathBuf, Result<Option<Fingerprint>, String>)> =
        parquet::storage_order(paths)
            .par_iter()
            .map(|p| {
                let result = if fingerprint {
                    decode::decode_fingerprinted(p, max_pixels).map(|(_, f)| Some(f))
                } else {
                    decode::decode_rgb(p, max_pixels).map(|_| None)
                };
                (p.clone(), result)
            })
            .collect();
    let mut prints = HashMap::new();
    let mut bad = Vec::new();
    for (path, result) in results {
        match result {
            Ok(Some(f)) => {
                prints.insert(path, f);
            }
            Ok(None) => {}
            Err(reason) => bad.push(Skipped { path, reason }),
        }
    }
    (prints, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_any_case() {
        assert!(is_image_name(Path::new("a/b.JPEG")));
        assert!(is_image_name(Path::new("x.TiF")));
        assert!(!is_image_name(Path::new("x.txt")));
        assert!(!is_image_name(Path::new("jpg")));
    }

    #[test]
    fn a_tag_list_file_gives_a_multi_label_dataset_split_on_both_sides() {
        let t = tempfile::tempdir().unwrap();
        let mut csv = String::from("file_name,tags\n");
        for i in 0..40u32 {
            decode::tests::gradient(8 + i, 8)
                .save(t.path().join(format!("{i}.png")))
                .unwrap();
            let tags = match i % 4 {
                0 => "cat",
                1 => "dog",
                2 => "cat dog",
                _ => "",
            };
            csv.push_str(&format!("{i}.png,{tags}\n"));
        }
        std::fs::write(t.path().join("labels.csv"), csv).unwrap();
        let options = SplitOptions {
            val_fraction: 0.25,
            seed: 0,
            duplicates: DuplicateMode::Off,
        };
        let d = Dataset::open(t.path(), &SourceOptions::folders(), &options, u64::MAX).unwrap();
        assert_eq!(d.task, Task::MultiLabel);
        assert_eq!(d.class_names, vec!["cat", "dog"]);
        let counts = d.class_counts();
        assert_eq!(
            (
                counts[0].train + counts[0].val,
                counts[1].train + counts[1].val
            ),
            (20, 20)
        );
        assert!(
            counts.iter().all(|c| (4..=6).contains(&c.val)),
            "{counts:?}"
        );
        let report = d.report.multi_label.as_ref().unwrap();
        assert_eq!(report.untagged_train + report.untagged_val, 10);
        assert_eq!(report.images_with_several, 10);
        assert_eq!(
            report.frequent_pairs[0].labels,
            ["cat".to_string(), "dog".to_string()]
        );
        assert_eq!(report.frequent_pairs[0].images, 10);
        assert_eq!(d.train.len() + d.val.len(), 40);
    }

    #[test]
    fn unusable_files_and_empty_classes_drop_out() {
        let t = tempfile::tempdir().unwrap();
        for (class, n) in [("a", 3), ("b", 3)] {
            std::fs::create_dir_all(t.path().join(class)).unwrap();
            for i in 0..n {
                decode::tests::gradient(8 + i, 8)
                    .save(t.path().join(format!("{class}/{i}.png")))
                    .unwrap();
            }
        }
        std::fs::create_dir_all(t.path().join("c")).unwrap();
        std::fs::write(t.path().join("c/0.jpg"), b"x").unwrap();
        let options = SplitOptions {
            val_fraction: 0.0,
            seed: 0,
            duplicates: DuplicateMode::Group,
        };
        let d = Dataset::open(t.path(), &SourceOptions::folders(), &options, u64::MAX).unwrap();
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("class \"c\" has no usable")),
            "{:?}",
            d.warnings
        );
        assert_eq!(d.class_names, vec!["a", "b"]);
        assert_eq!(d.skipped.len(), 1);
        assert!(d.train.iter().all(|s| s.class() < 2));
    }
}
