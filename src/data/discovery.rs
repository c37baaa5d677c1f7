//! What finding a dataset's classes yields, whatever the source: the classes and their files,
//! the report of what was considered, and the checks every source's result passes.

use super::Skipped;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The images of one class, with their paths sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassFiles {
    pub name: String,
    pub files: Vec<PathBuf>,
}

/// What discovery found: the chosen folder(s), the classes and what was passed over.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The folder whose sub-folders (or file names) are the classes (for a split layout: the
    /// `train` folder).
    pub class_root: PathBuf,
    /// The rule that labelled the images, for reports: `class folders`, `labels from file
    /// names: <class>.<n>.jpg`, `labels from train.csv (columns path, label)`, …
    pub rule: String,
    /// Training images per class (all images when the dataset has no split of its own).
    pub classes: Vec<ClassFiles>,
    /// Validation images per class, when the dataset has its own split (same class order).
    pub given_val: Option<Vec<ClassFiles>>,
    /// Image-named files that could not be used as labelled images (broken links, permission
    /// errors, names that carry no label).
    pub skipped: Vec<Skipped>,
    /// Files ignored because they are hidden or not images.
    pub ignored: usize,
    /// Every class root considered, the chosen one first, each with why it ranks where it does,
    /// then the folders passed over.
    pub candidates: Vec<CandidateReport>,
    /// The label corrections applied to these images ([`super::corrections`]).
    pub corrections: Vec<super::corrections::Correction>,
    /// Multi-label: set when an image may carry any number of labels (then `classes` are the
    /// labels, a file listed under each label it carries).
    pub tagging: Option<Tagging>,
}

/// What a multi-label reading adds: the images that carry no label.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tagging {
    /// Training images (all images without a split of the dataset's own) with no label.
    pub untagged: Vec<PathBuf>,
    /// Validation images with no label, when the dataset has its own split.
    pub untagged_val: Vec<PathBuf>,
}

impl Discovery {
    /// Every file found once, training classes first.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut seen = std::collections::HashSet::new();
        let untagged = self
            .tagging
            .iter()
            .flat_map(|t| t.untagged.iter().chain(&t.untagged_val));
        self.classes
            .iter()
            .chain(self.given_val.iter().flatten())
            .flat_map(|c| c.files.iter())
            .chain(untagged)
            .filter(|f| seen.insert(*f))
            .cloned()
            .collect()
    }
}

/// A class root that discovery considered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateReport {
    /// Relative to the dataset folder (`.` for the folder itself).
    #[serde(serialize_with = "super::lossy_path")]
    pub path: PathBuf,
    pub images: usize,
    pub chosen: bool,
    pub reason: String,
}

/// A dataset directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("dataset path {0} does not exist")]
    Missing(PathBuf),
    #[error("dataset path {0} is a file; give the folder that holds one sub-folder per class")]
    NotADirectory(PathBuf),
    #[error("no images found under {0} (looked for .jpg .jpeg .png .bmp .gif .webp .tif .tiff)")]
    NoImages(PathBuf),
    #[error(
        "{path} has only one class ({class}); a classifier needs at least two: one sub-folder per class, labels in the file names, or a label file (--labels)"
    )]
    OneClass { path: PathBuf, class: String },
    #[error(
        "{path} has images but no classes: {detail}. Give one sub-folder per class, a label file (--labels FILE), or --label-regex"
    )]
    NoClasses { path: PathBuf, detail: String },
    #[error(
        "{rule}: {singles} of its {classes} classes would hold a single image ({examples}, …): \
         these look like {looks}, not labels. Say which column holds the labels with \
         --label-column, or which folder holds one sub-folder per class with --classes-dir"
    )]
    OneImageClasses {
        rule: String,
        classes: usize,
        singles: usize,
        examples: String,
        looks: &'static str,
    },
    #[error("{0}")]
    Labels(String),
}

/// One-image classes from which on a reading where most classes hold one image is refused.
const ONE_IMAGE_REFUSED_FROM: usize = 3;

/// What class names that each label one image look like.
fn looks_like(names: &[&str]) -> &'static str {
    let share = |f: &dyn Fn(&str) -> bool| names.iter().filter(|n| f(n)).count() * 2 > names.len();
    if share(&|n| n.contains('/') || n.contains('\\') || super::is_image_name(Path::new(n))) {
        "file paths or names"
    } else if share(&|n| {
        n.chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_')
    }) {
        "ids or hashes"
    } else {
        "names of single images"
    }
}

/// `path` relative to `dataset`, `.` for the dataset folder itself.
pub fn relative_to(dataset: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix(dataset) {
        Ok(rel) if rel.as_os_str().is_empty() => PathBuf::from("."),
        Ok(rel) => rel.to_path_buf(),
        Err(_) => path.to_path_buf(),
    }
}

/// The last component of `path`, or the whole path when it has none.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

impl Discovery {
    /// This discovery of `dataset` checked: the classes of both splits aligned, at least two
    /// classes with images.
    pub fn checked(mut self, dataset: &Path) -> Result<Self, DiscoveryError> {
        if let Some(val) = &mut self.given_val {
            align_classes(&mut self.classes, val);
        }
        let with_images = self.classes.iter().filter(|c| !c.files.is_empty()).count();
        if with_images == 0 {
            return Err(DiscoveryError::NoImages(self.class_root));
        }
        if self.classes.len() < 2 && self.tagging.is_none() {
            return Err(DiscoveryError::OneClass {
                path: dataset.to_owned(),
                class: self.classes[0].name.clone(),
            });
        }
        Ok(self)
    }
}

impl Discovery {
    /// This discovery after the checks every source passes, with warnings: a reading where
    /// most classes (and at least three) hold a single image is refused, naming the source and
    /// what the classes look like; a few such classes are named in a warning. A validation split
    /// of the dataset's own that lacks classes training has is not used: its images join the
    /// training data, which tltui then splits, and the report says so.
    pub fn settled(mut self) -> Result<(Self, Vec<String>), DiscoveryError> {
        let mut warnings = Vec::new();
        let val_count = |i: usize| {
            self.given_val
                .as_ref()
                .and_then(|v| v.get(i))
                .map_or(0, |c| c.files.len())
        };
        let singles: Vec<&str> = (0..self.classes.len())
            .filter(|&i| self.classes[i].files.len() + val_count(i) == 1)
            .map(|i| self.classes[i].name.as_str())
            .collect();
        if singles.len() >= ONE_IMAGE_REFUSED_FROM && 2 * singles.len() > self.classes.len() {
            return Err(DiscoveryError::OneImageClasses {
                rule: self.rule.clone(),
                classes: self.classes.len(),
                singles: singles.len(),
                examples: singles[..3].join(", "),
                looks: looks_like(&singles),
            });
        }
        if !singles.is_empty() {
            warnings.push(format!(
                "{} class(es) hold a single image, too few to learn or validate: {}",
                singles.len(),
                singles.join(", ")
            ));
        }
        let lacking: Vec<String> = match &self.given_val {
            Some(val) => self
                .classes
                .iter()
                .zip(val)
                .filter(|(t, v)| !t.files.is_empty() && v.files.is_empty())
                .map(|(t, _)| t.name.clone())
                .collect(),
            None => Vec::new(),
        };
        let unused_val = if lacking.is_empty() {
            None
        } else {
            self.given_val.take()
        };
        if let Some(val) = unused_val {
            let images: usize = val.iter().map(|c| c.files.len()).sum();
            for (t, v) in self.classes.iter_mut().zip(val) {
                t.files.extend(v.files);
                t.files.sort();
            }
            if let Some(t) = self.tagging.as_mut() {
                let val = std::mem::take(&mut t.untagged_val);
                t.untagged.extend(val);
                t.untagged.sort();
            }
            let message = format!(
                "the dataset's own validation split lacks {} of the training classes: not used \
                 as the validation split; its {images} images join the training data, which \
                 tltui splits itself",
                lacking.join(", ")
            );
            for c in &mut self.candidates {
                if c.chosen {
                    c.reason = format!("{}; but {message}", c.reason);
                }
            }
            warnings.push(message);
        }
        Ok((self, warnings))
    }
}

/// Gives both splits the same classes: the union of names, in sorted order.
pub fn align_classes(train: &mut Vec<ClassFiles>, val: &mut Vec<ClassFiles>) {
    let names: BTreeSet<String> = train
        .iter()
        .chain(val.iter())
        .map(|c| c.name.clone())
        .collect();
    let align = |list: &mut Vec<ClassFiles>| {
        let mut by_name: BTreeMap<String, Vec<PathBuf>> =
            list.drain(..).map(|c| (c.name, c.files)).collect();
        *list = names
            .iter()
            .map(|n| ClassFiles {
                name: n.clone(),
                files: by_name.remove(n).unwrap_or_default(),
            })
            .collect();
    };
    align(train);
    align(val);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(sizes: &[(&str, usize)]) -> Vec<ClassFiles> {
        sizes
            .iter()
            .map(|&(name, n)| ClassFiles {
                name: name.into(),
                files: (0..n)
                    .map(|i| PathBuf::from(format!("{name}/{i}.jpg")))
                    .collect(),
            })
            .collect()
    }

    fn discovery(train: Vec<ClassFiles>, val: Option<Vec<ClassFiles>>) -> Discovery {
        Discovery {
            class_root: PathBuf::from("d"),
            rule: "labels from list.csv (columns 1, 0)".into(),
            classes: train,
            given_val: val,
            skipped: Vec::new(),
            ignored: 0,
            candidates: vec![CandidateReport {
                path: PathBuf::from("train"),
                images: 0,
                chosen: true,
                reason: "split layout".into(),
            }],
            corrections: Vec::new(),
            tagging: None,
        }
    }

    #[test]
    fn a_reading_of_mostly_one_image_classes_is_refused_and_a_few_are_named() {
        let paths: Vec<(String, usize)> = (0..6).map(|i| (format!("img/{i}.jpg"), 1)).collect();
        let sizes: Vec<(&str, usize)> = paths.iter().map(|(n, k)| (n.as_str(), *k)).collect();
        let err = discovery(classes(&sizes), None)
            .settled()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("labels from list.csv"), "{err}");
        assert!(
            err.contains("6 of its 6 classes") && err.contains("file paths"),
            "{err}"
        );
        assert!(
            err.contains("--label-column") && err.contains("--classes-dir"),
            "{err}"
        );
        let ids = classes(&[("a1f3", 1), ("9b2c", 1), ("77e0", 1), ("cat", 5)]);
        let err = discovery(ids, None).settled().unwrap_err().to_string();
        assert!(err.contains("ids or hashes"), "{err}");
        let few = classes(&[("cat", 5), ("dog", 5), ("fox", 1)]);
        let (_, warnings) = discovery(few, None).settled().unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("1 class(es) hold a single image")
                && warnings[0].ends_with(": fox"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_validation_split_that_lacks_classes_joins_the_training_data() {
        let train = classes(&[("cat", 4), ("dog", 4)]);
        let val = classes(&[("cat", 0), ("dog", 2)]);
        let (d, warnings) = discovery(train, Some(val)).settled().unwrap();
        assert!(d.given_val.is_none());
        assert_eq!(d.classes[1].files.len(), 6);
        assert!(
            warnings[0].contains("lacks cat") && warnings[0].contains("2 images"),
            "{warnings:?}"
        );
        assert!(d.candidates[0].reason.contains("lacks cat"));
        let full = classes(&[("cat", 1), ("dog", 1)]);
        let (d, warnings) = discovery(classes(&[("cat", 4), ("dog", 4)]), Some(full))
            .settled()
            .unwrap();
        assert!(d.given_val.is_some() && warnings.is_empty(), "{warnings:?}");
    }
}
