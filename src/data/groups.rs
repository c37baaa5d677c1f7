//! Files that come from one source: derived copies under suffixed names, and exact or near
//! copies under any name. The split keeps each group on one side; a given split is measured for
//! validation images that have a twin in training (leakage).
//!
//! # Derived names
//! A file's *source stem* is its name without the extension and without derivation suffixes,
//! stripped from the end, within its class folder:
//! 1. a copy marker: ` (N)`, or a last part `copy` / `copyN` (`photo - Copy`, `photo_copy2`);
//! 2. a last part (after `-`, `_`, `.` or a space) made of letters only (`image_0241-center`,
//!    `image_0241-east-f`), stripped while what remains still holds a digit, so that word names
//!    like `beach_sunset` stay whole; a known derivation word, alone or with digits (`aug`,
//!    `aug3`, `flip`, `rot90`, `crop`, `mirror`, …), is stripped whatever remains;
//! 3. a short number (`_1`, `-2`, up to 3 digits) when what remains is the stem of another file in
//!    the folder with at most [`MAX_NUMBERED_COPIES`] such numbered variants (more is a numbering
//!    scheme, `img.jpg`, `img_1.jpg` … `img_500.jpg`, not copies).
//!
//! Files of one class with the same source stem form one group.

use super::fingerprint::{Fingerprint, Likeness};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Numbered variants (`x_1`, `x_2`, …) of one stem beyond which they are a numbering scheme.
pub const MAX_NUMBERED_COPIES: usize = 8;

/// Words that name a derivation (augmentation or copy) wherever they appear.
const DERIVATION_WORDS: &[&str] = &[
    "aug",
    "augment",
    "augmented",
    "copy",
    "flip",
    "flipped",
    "hflip",
    "vflip",
    "mirror",
    "mirrored",
    "crop",
    "cropped",
    "rot",
    "rotate",
    "rotated",
    "resized",
    "scaled",
    "shift",
    "shifted",
    "zoom",
    "bright",
    "dark",
    "noise",
    "noisy",
    "blur",
    "blurred",
    "edit",
    "edited",
    "thumb",
];

const SEPARATORS: &[char] = &['-', '_', '.', ' '];

/// A stem without the derivation suffixes of rules 1 and 2 (see the module documentation).
pub fn strip_derivation(stem: &str) -> &str {
    let mut s = stem.trim_end();
    loop {
        if let Some(base) = strip_copy_number(s) {
            s = base;
            continue;
        }
        let Some(i) = s.rfind(SEPARATORS) else {
            return s;
        };
        let (base, token) = (s[..i].trim_end_matches(SEPARATORS), &s[i + 1..]);
        if base.is_empty() || !is_derivation_token(token, base) {
            return s;
        }
        s = base;
    }
}

/// `name (3)` → `name`.
fn strip_copy_number(s: &str) -> Option<&str> {
    let inner = s.strip_suffix(')')?;
    let open = inner.rfind('(')?;
    let digits = &inner[open + 1..];
    let base = inner[..open].trim_end();
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !base.is_empty())
        .then_some(base)
}

fn is_derivation_token(token: &str, base: &str) -> bool {
    let lower = token.to_ascii_lowercase();
    let letters = lower.trim_end_matches(|c: char| c.is_ascii_digit());
    if letters.is_empty() || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return false;
    }
    if DERIVATION_WORDS.contains(&letters) {
        return true;
    }
    letters.len() == lower.len() && lower.len() <= 12 && base.bytes().any(|b| b.is_ascii_digit())
}

/// Source stem of every file of one class folder (rules 1–3), in the order given.
pub fn source_stems(files: &[PathBuf]) -> Vec<String> {
    let stems: Vec<&str> = files
        .iter()
        .map(|p| p.file_stem().and_then(|s| s.to_str()).unwrap_or(""))
        .collect();
    let present: HashSet<&str> = stems.iter().copied().collect();
    let numbered = |stem: &str| -> Option<usize> {
        let i = stem.rfind(SEPARATORS)?;
        let (base, n) = (&stem[..i], &stem[i + 1..]);
        (!n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()))
            .then(|| present.contains(base).then_some(i))
            .flatten()
    };
    let mut variants: HashMap<&str, usize> = HashMap::new();
    for s in &stems {
        if let Some(i) = numbered(s) {
            *variants.entry(&s[..i]).or_default() += 1;
        }
    }
    stems
        .iter()
        .map(|s| {
            let s = strip_derivation(s);
            let s = match numbered(s) {
                Some(i) if variants[&s[..i]] <= MAX_NUMBERED_COPIES => strip_derivation(&s[..i]),
                _ => s,
            };
            s.to_string()
        })
        .collect()
}

/// A pair of images that are copies of one picture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Twin {
    pub a: usize,
    pub b: usize,
    pub likeness: Likeness,
    /// Bits in which their perceptual hashes differ.
    pub distance: u32,
}

/// Every pair of exact or near copies among `fingerprints` (`a < b`).
pub fn twins(fingerprints: &[Fingerprint]) -> Vec<Twin> {
    (0..fingerprints.len())
        .into_par_iter()
        .flat_map_iter(|a| {
            let fa = fingerprints[a];
            fingerprints[a + 1..]
                .iter()
                .enumerate()
                .filter_map(move |(k, fb)| {
                    fa.twin(fb).map(|likeness| Twin {
                        a,
                        b: a + 1 + k,
                        likeness,
                        distance: fa.distance(fb),
                    })
                })
        })
        .collect()
}

/// Union-find over `n` items; [`Components::ids`] numbers the sets by their first item.
pub struct Components {
    parent: Vec<usize>,
}

impl Components {
    /// Every item in a set of its own.
    pub fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
        }
    }

    /// The set's representative.
    pub fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    /// Puts `a` and `b` in one set.
    pub fn join(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }

    /// A group id per item: 0, 1, 2, … in the order of each set's first item.
    pub fn ids(&mut self) -> Vec<usize> {
        let mut number = HashMap::new();
        (0..self.parent.len())
            .map(|i| {
                let root = self.find(i);
                let next = number.len();
                *number.entry(root).or_insert(next)
            })
            .collect()
    }
}

/// Files that are copies of one another.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateGroup {
    #[serde(serialize_with = "lossy_paths")]
    pub files: Vec<PathBuf>,
    /// `exact` when every file has the same bytes, `near` otherwise.
    pub kind: Likeness,
}

/// A validation image with a twin in training.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeakedPair {
    #[serde(serialize_with = "super::lossy_path")]
    pub train: PathBuf,
    #[serde(serialize_with = "super::lossy_path")]
    pub val: PathBuf,
    /// Bits in which their perceptual hashes differ (0 for exact copies).
    pub distance: u32,
}

/// Validation images that have an exact or near twin in training.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Leakage {
    pub val_images_with_train_twin: usize,
    pub pairs: Vec<LeakedPair>,
}

fn lossy_paths<S: serde::Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(paths.iter().map(|p| p.to_string_lossy()))
}

/// Groups of copies (two or more files each) from the twin pairs among `paths`, largest first.
pub fn duplicate_groups(paths: &[&Path], twins: &[Twin]) -> Vec<DuplicateGroup> {
    let mut sets = Components::new(paths.len());
    for t in twins {
        sets.join(t.a, t.b);
    }
    let ids = sets.ids();
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        members.entry(*id).or_default().push(i);
    }
    let mut near: HashSet<usize> = HashSet::new();
    for t in twins.iter().filter(|t| t.likeness == Likeness::Near) {
        near.insert(ids[t.a]);
    }
    let mut groups: Vec<(usize, DuplicateGroup)> = members
        .into_iter()
        .filter(|(_, m)| m.len() > 1)
        .map(|(id, m)| {
            let group = DuplicateGroup {
                files: m.iter().map(|&i| paths[i].to_path_buf()).collect(),
                kind: if near.contains(&id) {
                    Likeness::Near
                } else {
                    Likeness::Exact
                },
            };
            (id, group)
        })
        .collect();
    groups.sort_by(|(ia, a), (ib, b)| b.files.len().cmp(&a.files.len()).then(ia.cmp(ib)));
    groups.into_iter().map(|(_, g)| g).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_suffixes_are_stripped() {
        for (stem, source) in [
            ("image_0241-center", "image_0241"),
            ("image_0241-east-f", "image_0241"),
            ("image_0241", "image_0241"),
            ("IMG_2020_aug3", "IMG_2020"),
            ("dog_flip", "dog"),
            ("dog (1)", "dog"),
            ("photo - Copy", "photo"),
            ("photo_copy2", "photo"),
            ("beach_sunset", "beach_sunset"),
            ("cat.123", "cat.123"),
            ("n02085620_10074", "n02085620_10074"),
            ("1_left", "1"),
        ] {
            assert_eq!(strip_derivation(stem), source, "{stem}");
        }
    }

    #[test]
    fn numbered_copies_group_only_when_few() {
        let files = |names: &[&str]| -> Vec<PathBuf> {
            names
                .iter()
                .map(|n| PathBuf::from(format!("c/{n}.jpg")))
                .collect()
        };
        let few = source_stems(&files(&["dog", "dog_1", "dog_2", "cat.10", "cat.1"]));
        assert_eq!(few, ["dog", "dog", "dog", "cat.10", "cat.1"]);
        let mut names: Vec<String> = (1..=20).map(|i| format!("img_{i}")).collect();
        names.push("img".into());
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let many = source_stems(&files(&refs));
        assert_eq!(
            many[0], "img_1",
            "a numbering scheme is not a family of copies"
        );
    }

    #[test]
    fn components_number_sets_in_order() {
        let mut c = Components::new(5);
        c.join(3, 1);
        c.join(4, 0);
        assert_eq!(c.ids(), [0, 1, 2, 1, 0]);
    }
}
