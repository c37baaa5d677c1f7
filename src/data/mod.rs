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
use std::collections::{HashMap, HashSet};
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
    pub label: usize,
}

/// Image counts of one class per split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassCount {
    pub name: String,
    pub train: usize,
    pub val: usize,
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
}

/// A dataset split into labelled training and validation samples.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The folder whose sub-folders (or file names) are the classes, the label file's folder,
    /// or the Hub dataset (`hf://datasets/ORG/NAME`).
    pub class_root: PathBuf,
    /// The rule that labelled the images (see [`Discovery::rule`]).
    pub rule: String,
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
        let labelled: Vec<(&Path, usize)> = found
            .classes
            .iter()
            .chain(found.given_val.iter().flatten())
            .enumerate()
            .flat_map(|(i, c)| {
                let label = i % found.classes.len();
                c.files.iter().map(move |f| (f.as_path(), label))
            })
            .collect();
        // With `duplicates = "off"` nothing is compared, even where fingerprints exist (the
        // engine's image store always computes them).
        let checked = options.duplicates != DuplicateMode::Off;
        let fingerprinted: Vec<usize> = (0..labelled.len())
            .filter(|&i| checked && fingerprints.contains_key(labelled[i].0))
            .collect();
        let prints: Vec<Fingerprint> = fingerprinted
            .iter()
            .map(|&i| fingerprints[labelled[i].0])
            .collect();
        let twins: Vec<groups::Twin> = groups::twins(&prints)
            .into_iter()
            .map(|t| groups::Twin {
                a: fingerprinted[t.a],
                b: fingerprinted[t.b],
                ..t
            })
            .collect();
        let paths: Vec<&Path> = labelled.iter().map(|(p, _)| *p).collect();
        let duplicates = groups::duplicate_groups(&paths, &twins);

        let mut sets = Components::new(labelled.len());
        if options.duplicates == DuplicateMode::Group {
            let mut first = 0;
            for c in found.classes.iter().chain(found.given_val.iter().flatten()) {
                let stems = groups::source_stems(&c.files);
                let mut by_stem: HashMap<&str, usize> = HashMap::new();
                for (k, stem) in stems.iter().enumerate() {
                    let at = *by_stem.entry(stem).or_insert(first + k);
                    sets.join(at, first + k);
                }
                first += c.files.len();
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

        let files: Vec<Vec<PathBuf>> = found.classes.iter().map(|c| c.files.clone()).collect();
        let (train, val) = match &found.given_val {
            Some(val) => (files, val.iter().map(|c| c.files.clone()).collect()),
            None => {
                split::stratified_split(&files, options.val_fraction, options.seed, |p: &Path| {
                    groups.get(p).copied().filter(|id| sizes[id] > 1)
                })
            }
        };
        let label = |lists: Vec<Vec<PathBuf>>| -> Vec<Sample> {
            lists
                .into_iter()
                .enumerate()
                .flat_map(|(label, files)| {
                    files.into_iter().map(move |path| Sample { path, label })
                })
                .collect()
        };
        let class_names: Vec<String> = found.classes.iter().map(|c| c.name.clone()).collect();
        let labels: HashMap<&Path, usize> = labelled.iter().copied().collect();
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
                                format!("{} ({})", f.display(), class_names[labels[f.as_path()]])
                            })
                            .collect();
                        format!(
                            "the same image is in more than one class: {}",
                            places.join(", ")
                        )
                    })
            })
            .collect();
        let mut ds = Self {
            class_root: found.class_root,
            rule: found.rule,
            class_names,
            train: label(train),
            val: label(val),
            skipped: found.skipped,
            ignored: found.ignored,
            given_split: found.given_val.is_some(),
            groups,
            report: DataReport {
                candidates: found.candidates,
                duplicates,
                leakage: Leakage::default(),
                corrections: found.corrections,
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

    /// Training and validation counts per class.
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
            counts[s.label].train += 1;
        }
        for s in &self.val {
            counts[s.label].val += 1;
        }
        counts
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
        let warnings = counts
            .iter()
            .filter(|c| c.train == 0)
            .map(|c| {
                format!(
                    "class {:?} has no usable training images and was left out",
                    c.name
                )
            })
            .collect();
        if keep.len() < 2 {
            return match keep.first() {
                Some(&i) => Err(DiscoveryError::OneClass {
                    path: self.class_root.clone(),
                    class: self.class_names[i].clone(),
                }),
                None => Err(DiscoveryError::NoImages(self.class_root.clone())),
            };
        }
        if keep.len() < counts.len() {
            let relabel = |v: &mut Vec<Sample>| {
                v.retain(|s| keep.contains(&s.label));
                for s in v.iter_mut() {
                    s.label = keep.iter().position(|&k| k == s.label).unwrap();
                }
            };
            relabel(&mut self.train);
            relabel(&mut self.val);
            self.class_names = keep.iter().map(|&i| self.class_names[i].clone()).collect();
        }
        Ok(warnings)
    }
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
        assert!(d.train.iter().all(|s| s.label < 2));
    }
}
