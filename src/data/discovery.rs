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
}

impl Discovery {
    /// Every file found, training classes first.
    pub fn files(&self) -> Vec<PathBuf> {
        self.classes
            .iter()
            .chain(self.given_val.iter().flatten())
            .flat_map(|c| c.files.iter().cloned())
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
    #[error("{0}")]
    Labels(String),
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
        if self.classes.len() < 2 {
            return Err(DiscoveryError::OneClass {
                path: dataset.to_owned(),
                class: self.classes[0].name.clone(),
            });
        }
        Ok(self)
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
