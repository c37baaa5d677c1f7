//! Why discovery chose what it chose, and why nothing usable was found, in words for the
//! dataset report.

use super::rank::{Candidate, Judgement, Layout};
use super::walk::Scan;
use super::MAX_DEPTH;
use crate::data::discovery::{file_name, relative_to, DiscoveryError};
use crate::data::names::is_split_name;
use std::path::{Path, PathBuf};

impl Judgement {
    pub(super) fn why_chosen(&self, c: &Candidate, candidates: usize) -> String {
        let kind = match &c.layout {
            Layout::Folders => "class folders".to_string(),
            Layout::Names(n) => format!("labels from file names: {}", n.pattern),
        };
        if self.split_sibling.is_some() {
            return format!("split layout: {}/ ({kind}) beside a validation folder with the same classes; the dataset's own split is used", c.name());
        }
        if candidates == 1 {
            return format!("the only class root ({kind})");
        }
        let mut traits = vec![kind];
        if self.data_named {
            traits.push("named like training data".to_string());
        }
        traits.push(format!("depth {}", c.depth));
        traits.push(format!("{} images", c.images));
        format!("ranked first: {}", traits.join(", "))
    }

    /// Why `c` lost to the chosen root: the first rule that ranks it lower.
    /// `val_root` is the validation half of the chosen split layout, if any.
    pub(super) fn why_not(
        &self,
        c: &Candidate,
        best: &Judgement,
        b: &Candidate,
        val_root: Option<&Path>,
        dataset: &Path,
    ) -> String {
        let (mine, theirs) = (self.key(c), best.key(b));
        if mine.0 != theirs.0 {
            return match self.output_word.as_deref() {
                Some("val") if val_root == Some(c.path.as_path()) => {
                    format!(
                        "used as the validation split, beside {} (the same classes)",
                        relative_to(dataset, &b.path).display()
                    )
                }
                Some("val") => "a validation folder: used only beside a train folder".into(),
                Some(why) => why.to_string(),
                None => "ranked lower".into(),
            };
        }
        if mine.1 != theirs.1 {
            return self.derived.clone().unwrap_or_default();
        }
        if mine.2 != theirs.2 {
            return "no train/val split beside it; the chosen root has one".into();
        }
        if mine.3 != theirs.3 {
            return "not named like training data".into();
        }
        if mine.4 != theirs.4 {
            return format!(
                "runner-up: deeper (depth {}) than the chosen root ({}); --classes-dir {} would take it",
                c.depth,
                b.depth,
                c.path.display()
            );
        }
        if mine.5 != theirs.5 {
            return format!("fewer images ({} against {})", c.images, b.images);
        }
        "same rank; the chosen root comes first alphabetically".into()
    }
}

/// Explains why no class root exists: no images at all, images of a single class, or images
/// that carry no labels.
pub(super) fn nothing_usable(
    dataset: &Path,
    scan: &mut Scan,
    passed: &[(PathBuf, (usize, String))],
) -> DiscoveryError {
    if scan.images_below(dataset, 0) == 0 {
        return DiscoveryError::NoImages(dataset.to_owned());
    }
    // Descend while one folder holds every class-like image: its name is the one class seen.
    let mut dir = dataset.to_owned();
    for _ in 0..=MAX_DEPTH {
        let listing = scan.list(&dir, false);
        let with_images: Vec<PathBuf> = listing
            .dirs
            .iter()
            .filter(|d| !is_split_name(&file_name(d)))
            .filter(|d| scan.images_below(d, 0) > 0)
            .cloned()
            .collect();
        match (with_images.as_slice(), listing.images.is_empty()) {
            ([only], true) if scan.images_below(only, 0) > 0 => {
                let inner = scan.list(only, false);
                let sub_classes = inner
                    .dirs
                    .iter()
                    .filter(|d| scan.images_below(d, 0) > 0)
                    .count();
                if sub_classes == 0 || !inner.images.is_empty() {
                    return DiscoveryError::OneClass {
                        path: dataset.to_owned(),
                        class: relative_to(dataset, only).display().to_string(),
                    };
                }
                dir = only.clone();
            }
            _ => break,
        }
    }
    let detail = passed
        .iter()
        .map(|(p, (_, reason))| format!("{}: {reason}", relative_to(dataset, p).display()))
        .collect::<Vec<_>>()
        .join("; ");
    let single_label = passed
        .iter()
        .find_map(|(_, (_, r))| r.strip_prefix("one label: ").map(str::to_owned));
    match single_label {
        Some(class) => DiscoveryError::OneClass {
            path: dataset.to_owned(),
            class,
        },
        None => DiscoveryError::NoClasses {
            path: dataset.to_owned(),
            detail: if detail.is_empty() {
                "no folder of class folders was found".into()
            } else {
                detail
            },
        },
    }
}
