//! The ranking of class roots: the candidates the walk found, the rules applied to each, and
//! the order they give.

use super::{DATA_WORDS, DERIVED_SHARE, DERIVED_WORDS, OUTPUT_WORDS, TRAIN_NAMES, VAL_NAMES};
use crate::data::groups::strip_derivation;
use crate::data::names::SPLIT_NAMES;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// How a candidate's images are labelled.
pub(super) enum Layout {
    /// Each sub-folder is a class.
    Folders,
    /// The images directly in the folder, labelled by their names.
    Names(crate::data::names::NamedClasses),
}

/// A directory that qualifies as a class root.
pub(super) struct Candidate {
    pub(super) path: PathBuf,
    pub(super) depth: usize,
    pub(super) images: usize,
    /// Names of its classes, lower-cased.
    pub(super) classes: BTreeSet<String>,
    /// Stems of its images.
    pub(super) stems: HashSet<String>,
    pub(super) layout: Layout,
}

impl Candidate {
    pub(super) fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default()
    }
}

/// What the ranking rules make of one candidate.
pub(super) struct Judgement {
    /// Rule 1: a path part that looks like generated output, `val` for a validation folder, or
    /// why its class folders look like a project's folders.
    pub(super) output_word: Option<String>,
    /// Rule 2: why it is a derived copy.
    pub(super) derived: Option<String>,
    /// Rule 3: its validation sibling (an index into the roots), when it is the `train` half of
    /// a split layout.
    pub(super) split_sibling: Option<usize>,
    /// Rule 4.
    pub(super) data_named: bool,
}

/// Whether a class folder's name reads like a project folder (data, a split, output) rather
/// than a class: `Train_Data`, `Layer_Outputs`, `images`.
pub(super) fn folder_like(class: &str) -> bool {
    let lower = class.to_lowercase();
    lower
        .split(['_', '-', ' ', '.'])
        .any(|part| SPLIT_NAMES.contains(&part) || ["data", "dataset", "images"].contains(&part))
        || OUTPUT_WORDS.iter().any(|w| lower.contains(w))
}

/// Applies the ranking rules to `roots[i]`.
pub(super) fn judge(i: usize, roots: &[Candidate], dataset: &Path) -> Judgement {
    let c = &roots[i];
    let parts: Vec<String> = c
        .path
        .strip_prefix(dataset)
        .unwrap_or(&c.path)
        .components()
        .map(|p| p.as_os_str().to_string_lossy().to_lowercase())
        .collect();
    let find = |words: &[&str]| {
        parts
            .iter()
            .find_map(|p| words.iter().find(|w| p.contains(*w)).map(|w| w.to_string()))
    };
    let name = c.name();
    let folder_like_classes: Vec<&String> = c.classes.iter().filter(|n| folder_like(n)).collect();
    let output_word = find(OUTPUT_WORDS)
        .map(|w| format!("looks like generated output (`{w}`)"))
        .or_else(|| {
            VAL_NAMES
                .contains(&name.as_str())
                .then(|| "val".to_string())
        })
        .or_else(|| {
            (matches!(c.layout, Layout::Folders) && 2 * folder_like_classes.len() > c.classes.len())
                .then(|| {
                    let names: Vec<&str> = folder_like_classes.iter().map(|s| s.as_str()).collect();
                    format!(
                        "its sub-folders ({}) are named like data or output folders, not classes",
                        names.join(", ")
                    )
                })
        });
    let derived_by_name = name
        .split(['_', '-', ' '])
        .find(|part| DERIVED_WORDS.contains(part))
        .map(|w| format!("derived copy: its folder name says `{w}`"));
    let derived = derived_by_name.or_else(|| {
        roots
            .iter()
            .filter(|other| other.path != c.path)
            .find_map(|other| {
                let share = derived_share(&c.stems, &other.stems);
                (share > DERIVED_SHARE).then(|| {
                    format!(
                        "derived copy of {}: {:.0}% of its file names are that folder's names plus a suffix",
                        other.path.display(),
                        share * 100.0
                    )
                })
            })
    });
    Judgement {
        output_word,
        derived,
        split_sibling: split_sibling(c, roots),
        data_named: find(DATA_WORDS).is_some(),
    }
}

/// Share of `stems` that are a stem of `of` plus a derivation suffix.
pub(super) fn derived_share(stems: &HashSet<String>, of: &HashSet<String>) -> f64 {
    if stems.is_empty() {
        return 0.0;
    }
    let derived = stems
        .iter()
        .filter(|s| {
            let source = strip_derivation(s);
            source.len() < s.len() && of.contains(source)
        })
        .count();
    derived as f64 / stems.len() as f64
}

/// The validation sibling of a root named `train`/`training`: a class root named like a
/// validation folder whose classes are among the root's.
pub(super) fn split_sibling(root: &Candidate, roots: &[Candidate]) -> Option<usize> {
    if !TRAIN_NAMES.contains(&root.name().as_str()) {
        return None;
    }
    let parent = root.path.parent()?;
    roots
        .iter()
        .enumerate()
        .filter(|(_, r)| r.path.parent() == Some(parent))
        .filter(|(_, r)| r.classes.is_subset(&root.classes))
        .filter_map(|(i, r)| {
            let n = r.name();
            VAL_NAMES.iter().position(|v| *v == n).map(|rank| (rank, i))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, i)| i)
}

pub(super) type RankKey = (
    bool,
    bool,
    bool,
    bool,
    usize,
    std::cmp::Reverse<usize>,
    PathBuf,
);

impl Judgement {
    /// Smaller is better; see the module documentation for the order.
    pub(super) fn key(&self, c: &Candidate) -> RankKey {
        (
            self.output_word.is_some(),
            self.derived.is_some(),
            self.split_sibling.is_none(),
            !self.data_named,
            c.depth,
            std::cmp::Reverse(c.images),
            c.path.clone(),
        )
    }
}
