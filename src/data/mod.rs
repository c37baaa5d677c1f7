//! Everything that turns a folder of images into batches: discovery, split, decoding,
//! preprocessing, augmentation and the bad-file report.

pub mod augment;
pub mod decode;
pub mod discover;
pub mod preprocess;
pub mod split;
pub mod store;

use serde::Serialize;
use std::path::{Path, PathBuf};

pub use discover::DiscoveryError;
pub use preprocess::{Preprocess, PretrainedCfg};
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

/// A dataset split into labelled training and validation samples.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The folder whose sub-folders are the classes.
    pub class_root: PathBuf,
    pub class_names: Vec<String>,
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    /// Files that are not usable images, with reasons.
    pub skipped: Vec<Skipped>,
    /// Hidden and non-image files passed over.
    pub ignored: usize,
    /// Whether the validation split came from the dataset's own folders.
    pub given_split: bool,
}

impl Dataset {
    /// Discovers the classes under `path` and splits them (stratified, seeded) unless the dataset
    /// has its own validation folder.
    pub fn open(
        path: &Path,
        classes_dir: Option<&Path>,
        val_fraction: f64,
        seed: u64,
    ) -> Result<Self, DiscoveryError> {
        let found = discover::discover(path, classes_dir)?;
        let files: Vec<Vec<PathBuf>> = found.classes.iter().map(|c| c.files.clone()).collect();
        let (train, val) = match &found.given_val {
            Some(val) => (files, val.iter().map(|c| c.files.clone()).collect()),
            None => split::stratified_split(&files, val_fraction, seed),
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
        Ok(Self {
            class_root: found.class_root,
            class_names: found.classes.into_iter().map(|c| c.name).collect(),
            train: label(train),
            val: label(val),
            skipped: found.skipped,
            ignored: found.ignored,
            given_split: found.given_val.is_some(),
        })
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
    pub fn remove_unusable(&mut self, bad: Vec<Skipped>) -> Result<Vec<String>, DiscoveryError> {
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

impl Dataset {
    /// Warnings for identical files filed under different classes (a labelling mistake that
    /// also leaks validation images into training). Only files of equal size are hashed.
    pub fn duplicates_across_classes(&self) -> Vec<String> {
        use rayon::prelude::*;
        use sha2::Digest;
        let mut by_size: std::collections::HashMap<u64, Vec<&Sample>> =
            std::collections::HashMap::new();
        for s in self.train.iter().chain(&self.val) {
            if let Ok(m) = std::fs::metadata(&s.path) {
                by_size.entry(m.len()).or_default().push(s);
            }
        }
        let candidates: Vec<&Sample> = by_size
            .into_values()
            .filter(|v| v.len() > 1)
            .flatten()
            .collect();
        let hashed: Vec<([u8; 32], &Sample)> = candidates
            .par_iter()
            .filter_map(|s| {
                std::fs::read(&s.path)
                    .ok()
                    .map(|b| (sha2::Sha256::digest(&b).into(), *s))
            })
            .collect();
        let mut by_hash: std::collections::BTreeMap<[u8; 32], Vec<&Sample>> =
            std::collections::BTreeMap::new();
        for (h, s) in hashed {
            by_hash.entry(h).or_default().push(s);
        }
        by_hash
            .into_values()
            .filter(|group| group.iter().any(|s| s.label != group[0].label))
            .map(|group| {
                let places: Vec<String> = group
                    .iter()
                    .map(|s| format!("{} ({})", s.path.display(), self.class_names[s.label]))
                    .collect();
                format!(
                    "the same image is in more than one class: {}",
                    places.join(", ")
                )
            })
            .collect()
    }
}

/// Decodes every file in parallel (and drops the pixels), reporting those that are unusable.
pub fn check_images(paths: &[PathBuf], max_pixels: u64) -> Vec<Skipped> {
    use rayon::prelude::*;
    paths
        .par_iter()
        .filter_map(|p| {
            decode::decode_rgb(p, max_pixels)
                .err()
                .map(|reason| Skipped {
                    path: p.clone(),
                    reason,
                })
        })
        .collect()
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
        for (class, n) in [("a", 3), ("b", 3), ("c", 1)] {
            std::fs::create_dir_all(t.path().join(class)).unwrap();
            for i in 0..n {
                std::fs::write(t.path().join(format!("{class}/{i}.jpg")), b"x").unwrap();
            }
        }
        let mut d = Dataset::open(t.path(), None, 0.0, 0).unwrap();
        let bad = vec![Skipped {
            path: t.path().join("c/0.jpg"),
            reason: "corrupt".into(),
        }];
        let warnings = d.remove_unusable(bad).unwrap();
        assert_eq!(warnings.len(), 1);
        assert_eq!(d.class_names, vec!["a", "b"]);
        assert_eq!(d.skipped.len(), 1);
        assert!(d.train.iter().all(|s| s.label < 2));
    }
}
