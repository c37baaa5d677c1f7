//! Which image a label file's value names.

use crate::data::{is_image_name, IMAGE_EXTENSIONS};
use std::path::{Path, PathBuf};

/// Finds the image a label file's value names: relative to the label file's folder or the
/// dataset folder, else to one image folder below the label file (Kaggle's `train.csv` beside
/// `train/`, a CSV beside `images/`).
pub(super) struct Resolver {
    bases: Vec<PathBuf>,
    /// The folders directly below the label file's.
    below: Vec<PathBuf>,
}

/// What a label file's value names.
#[derive(Debug, PartialEq)]
pub(super) enum Resolved {
    One(PathBuf),
    /// Two files, found under two of the folders below the label file.
    Two(PathBuf, PathBuf),
    None,
}

impl Resolver {
    pub(super) fn new(file: &Path, dataset: &Path) -> Self {
        let folder = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut below: Vec<PathBuf> = std::fs::read_dir(&folder)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        below.sort();
        let mut bases = vec![folder];
        if bases[0].canonicalize().ok() != dataset.canonicalize().ok() {
            bases.push(dataset.to_path_buf());
        }
        Self { bases, below }
    }

    /// The image `value` names, if exactly one does.
    pub(super) fn resolve(&self, value: &str) -> Option<PathBuf> {
        match self.lookup(value) {
            Resolved::One(path) => Some(path),
            _ => None,
        }
    }

    pub(super) fn lookup(&self, value: &str) -> Resolved {
        let rel = value.trim().replace('\\', "/");
        let rel = rel.trim_start_matches("./");
        if rel.is_empty() {
            return Resolved::None;
        }
        let has_ext = is_image_name(Path::new(rel));
        let at = |base: &Path| {
            let p = base.join(rel);
            if has_ext {
                return p.is_file().then_some(p);
            }
            IMAGE_EXTENSIONS
                .iter()
                .map(|e| base.join(format!("{rel}.{e}")))
                .find(|p| p.is_file())
        };
        if let Some(p) = self.bases.iter().find_map(|b| at(b)) {
            return Resolved::One(p);
        }
        let mut found = self.below.iter().filter_map(|b| at(b));
        match (found.next(), found.next()) {
            (Some(a), Some(b)) => Resolved::Two(a, b),
            (Some(a), None) => Resolved::One(a),
            _ => Resolved::None,
        }
    }
}
