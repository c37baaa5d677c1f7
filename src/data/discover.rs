//! Finding the classes inside a dataset directory, however it is laid out.
//!
//! A *class root* is one of two things:
//! - a **folder of class folders**: a directory with at least two sub-directories that hold
//!   images, directly or at any depth below; each sub-directory is a class and its images are
//!   collected at any depth (as Keras' `image_dataset_from_directory` and torchvision's
//!   `ImageFolder` do). Sub-directories named like splits (`train`, `training`, `val`, `valid`,
//!   `validation`, `test`, `testing`, `eval`, any case) are never classes;
//! - a **folder of labelled file names**: a directory whose images, directly in it, carry their
//!   class in their names (`cat.0.jpg`, `Abyssinian_12.jpg`; see [`super::names`]). With
//!   `--label-regex` only these are considered, labelled by the user's pattern.
//!
//! When several class roots exist (a clone of a project often carries layer visualisations,
//! augmented copies or sample outputs beside the training data, or a nested class folder is
//! itself a folder of sub-folders), they are ranked, each rule deciding only between roots the
//! rules above it tie:
//! 1. a root whose path has a part that looks like generated output (`output`, `layer`,
//!    `feature`, `visual`, `checkpoint`, `log`, `result`, `sample`) loses, and so does the
//!    validation half of a split layout (it is used with its `train` folder, never alone), and
//!    a root most of whose class folders are named like data, splits or output (`Train_Data`,
//!    `Layer_Outputs`): those are folders of a project, not classes;
//! 2. a *derived copy* loses: a root whose own folder name says so (`augmented`, `aug`, `resized`,
//!    `processed`, `preview`, `thumb`, `thumbs`, `thumbnails`, `copy`, `backup`, `old`, `tmp`, as the
//!    whole name or a `_`/`-`/space-separated part: `train_augmented`, `images-resized`), or one
//!    whose file stems are mostly another root's stems plus a derivation suffix
//!    ([`super::groups::strip_derivation`]);
//! 3. a *split layout* wins: a root named `train` or `training` with a sibling named `val`,
//!    `valid`, `validation`, `test`, `testing` or `eval` that is a class root with the same class
//!    names (or some of them); the dataset's own split is then used;
//! 4. a root whose path has a part named like training data (`train`, `data`, `image`, `dataset`)
//!    wins over one that has none;
//! 5. a shallower root wins: of `animals/{cats,dogs}/{2019,2020}` the classes are `cats` and
//!    `dogs`, and `animals/cats` (classes `2019`, `2020`) is the runner-up (`--classes-dir`
//!    decides otherwise);
//! 6. a root with more images wins; then the path, alphabetically.
//!
//! Folders considered and passed over (a folder of only split folders, images whose names carry
//! no label) are reported with the reason, beside the ranked roots.
//!
//! Symbolic links are followed, but a directory is walked at most once per real path: a link to
//! the dataset root, to one of its parents or to a folder already walked is not followed and is
//! reported in `skipped`; a file reached twice through links counts once.

use super::groups::strip_derivation;
use super::names::{classes_from_names, is_split_name, LabelPattern, SPLIT_NAMES};
use super::{is_image_name, Skipped};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// Directory levels searched below the dataset for a class root.
const MAX_DEPTH: usize = 6;

const OUTPUT_WORDS: &[&str] = &[
    "output",
    "layer",
    "feature",
    "visual",
    "checkpoint",
    "log",
    "result",
    "sample",
];
const DATA_WORDS: &[&str] = &["train", "data", "image", "dataset"];
const TRAIN_NAMES: &[&str] = &["train", "training"];
/// Validation folder names, the preferred first.
const VAL_NAMES: &[&str] = &["val", "valid", "validation", "test", "testing", "eval"];
const DERIVED_WORDS: &[&str] = &[
    "augmented",
    "aug",
    "resized",
    "processed",
    "preview",
    "thumb",
    "thumbs",
    "thumbnails",
    "copy",
    "backup",
    "old",
    "tmp",
];
/// Share of a root's files whose stems are another root's stems plus a suffix that makes it a
/// derived copy of that root.
const DERIVED_SHARE: f64 = 0.5;

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

/// How discovery labels what it finds.
#[derive(Debug, Clone, Default)]
pub struct DiscoverOptions {
    /// Use this folder's sub-folders as the classes (`--classes-dir`).
    pub classes_dir: Option<PathBuf>,
    /// `--label-regex`: only folders labelled by file names, by this pattern.
    pub label_regex: Option<LabelPattern>,
}

/// Finds the class root under `dataset` by the ranking above, or takes `classes_dir` when given.
pub fn discover(dataset: &Path, options: &DiscoverOptions) -> Result<Discovery, DiscoveryError> {
    check_dir(dataset)?;
    let mut scan = Scan {
        pattern: options.label_regex.clone(),
        ..Scan::default()
    };
    if let Some(dir) = &options.classes_dir {
        check_dir(dir)?;
        let classes = scan.classes_of(dir);
        let candidates = vec![CandidateReport {
            path: relative_to(dataset, dir),
            images: classes.iter().map(|c| c.files.len()).sum(),
            chosen: true,
            reason: "given with --classes-dir".into(),
        }];
        let rule = "class folders (--classes-dir)".to_string();
        return finish(dir.clone(), rule, classes, None, scan, dataset, candidates);
    }
    let mut roots = Vec::new();
    let mut passed = Vec::new();
    let mut visited: HashSet<PathBuf> = match dataset.canonicalize() {
        Ok(real) => with_ancestors(&real).skip(1).collect(),
        Err(_) => HashSet::new(),
    };
    scan.find_roots(dataset, 0, &mut roots, &mut passed, &mut visited);
    if roots.is_empty() {
        return Err(nothing_usable(dataset, &mut scan, &passed));
    }
    let judged: Vec<Judgement> = (0..roots.len())
        .map(|i| judge(i, &roots, dataset))
        .collect();
    let mut order: Vec<usize> = (0..roots.len()).collect();
    order.sort_by_key(|&i| judged[i].key(&roots[i]));
    let best = order[0];
    let val_root = judged[best].split_sibling.map(|v| roots[v].path.clone());
    let mut candidates: Vec<CandidateReport> = order
        .iter()
        .map(|&i| CandidateReport {
            path: relative_to(dataset, &roots[i].path),
            images: roots[i].images,
            chosen: i == best,
            reason: if i == best {
                judged[i].why_chosen(&roots[i], roots.len())
            } else {
                let beside = val_root.as_deref();
                judged[i].why_not(&roots[i], &judged[best], &roots[best], beside, dataset)
            },
        })
        .collect();
    // Folders passed over inside the chosen root's classes, or named like generated output,
    // say nothing about the dataset.
    let chosen_path = roots[best].path.clone();
    let generated = |path: &Path| {
        let rel = relative_to(dataset, path).to_string_lossy().to_lowercase();
        OUTPUT_WORDS.iter().any(|w| rel.contains(w))
    };
    candidates.extend(
        passed
            .into_iter()
            .filter(|(path, _)| path == &chosen_path || !path.starts_with(&chosen_path))
            .filter(|(path, _)| !generated(path))
            .map(|(path, (images, reason))| CandidateReport {
                path: relative_to(dataset, &path),
                images,
                chosen: false,
                reason,
            }),
    );
    let mut chosen = roots.swap_remove(best);
    let (rule, classes) = scan.labelled(&mut chosen);
    let val = val_root.map(|v| {
        let mut root = roots
            .into_iter()
            .find(|r| r.path == v)
            .expect("the split sibling is a root");
        scan.labelled(&mut root).1
    });
    finish(chosen.path, rule, classes, val, scan, dataset, candidates)
}

/// `path` relative to `dataset`, `.` for the dataset folder itself.
pub fn relative_to(dataset: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix(dataset) {
        Ok(rel) if rel.as_os_str().is_empty() => PathBuf::from("."),
        Ok(rel) => rel.to_path_buf(),
        Err(_) => path.to_path_buf(),
    }
}

fn check_dir(path: &Path) -> Result<(), DiscoveryError> {
    match std::fs::metadata(path) {
        Err(_) => Err(DiscoveryError::Missing(path.to_owned())),
        Ok(m) if !m.is_dir() => Err(DiscoveryError::NotADirectory(path.to_owned())),
        Ok(_) => Ok(()),
    }
}

/// Explains why no class root exists: no images at all, images of a single class, or images
/// that carry no labels.
fn nothing_usable(
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

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Checks what was found and assembles the [`Discovery`]: the classes of both splits aligned,
/// at least two classes with images.
pub fn finish(
    class_root: PathBuf,
    rule: String,
    mut classes: Vec<ClassFiles>,
    mut given_val: Option<Vec<ClassFiles>>,
    scan: Scan,
    dataset: &Path,
    candidates: Vec<CandidateReport>,
) -> Result<Discovery, DiscoveryError> {
    if let Some(val) = &mut given_val {
        align_classes(&mut classes, val);
    }
    let with_images = classes.iter().filter(|c| !c.files.is_empty()).count();
    if with_images == 0 {
        return Err(DiscoveryError::NoImages(class_root));
    }
    if classes.len() < 2 {
        return Err(DiscoveryError::OneClass {
            path: dataset.to_owned(),
            class: classes[0].name.clone(),
        });
    }
    Ok(Discovery {
        class_root,
        rule,
        classes,
        given_val,
        skipped: scan.skipped,
        ignored: scan.ignored,
        candidates,
    })
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

/// How a candidate's images are labelled.
enum Layout {
    /// Each sub-folder is a class.
    Folders,
    /// The images directly in the folder, labelled by their names.
    Names(super::names::NamedClasses),
}

/// A directory that qualifies as a class root.
struct Candidate {
    path: PathBuf,
    depth: usize,
    images: usize,
    /// Names of its classes, lower-cased.
    classes: BTreeSet<String>,
    /// Stems of its images.
    stems: HashSet<String>,
    layout: Layout,
}

impl Candidate {
    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default()
    }
}

/// What the ranking rules make of one candidate.
struct Judgement {
    /// Rule 1: a path part that looks like generated output, `val` for a validation folder, or
    /// why its class folders look like a project's folders.
    output_word: Option<String>,
    /// Rule 2: why it is a derived copy.
    derived: Option<String>,
    /// Rule 3: its validation sibling (an index into the roots), when it is the `train` half of
    /// a split layout.
    split_sibling: Option<usize>,
    /// Rule 4.
    data_named: bool,
}

/// Whether a class folder's name reads like a project folder (data, a split, output) rather
/// than a class: `Train_Data`, `Layer_Outputs`, `images`.
fn folder_like(class: &str) -> bool {
    let lower = class.to_lowercase();
    lower
        .split(['_', '-', ' ', '.'])
        .any(|part| SPLIT_NAMES.contains(&part) || ["data", "dataset", "images"].contains(&part))
        || OUTPUT_WORDS.iter().any(|w| lower.contains(w))
}

/// Applies the ranking rules to `roots[i]`.
fn judge(i: usize, roots: &[Candidate], dataset: &Path) -> Judgement {
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
fn derived_share(stems: &HashSet<String>, of: &HashSet<String>) -> f64 {
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
fn split_sibling(root: &Candidate, roots: &[Candidate]) -> Option<usize> {
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

type RankKey = (
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
    fn key(&self, c: &Candidate) -> RankKey {
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

    fn why_chosen(&self, c: &Candidate, candidates: usize) -> String {
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
    fn why_not(
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
                        "validation half of the split layout with {}",
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

/// Walks the tree once per question, remembering what it passed over.
#[derive(Default)]
pub struct Scan {
    /// `--label-regex`, when given.
    pattern: Option<LabelPattern>,
    skipped: Vec<Skipped>,
    ignored: usize,
    skipped_seen: HashSet<PathBuf>,
    /// Real paths of the class roots and the folders above them.
    above_classes: HashSet<PathBuf>,
    /// Real paths of the directories walked for class files.
    walked: HashSet<PathBuf>,
    /// Real paths of the image files counted.
    counted: HashSet<PathBuf>,
}

/// A directory's entries, split into sub-directories and image files.
#[derive(Default)]
struct Listing {
    dirs: Vec<PathBuf>,
    images: Vec<PathBuf>,
    ignored: usize,
}

/// The images below one directory, as the root search counts them.
#[derive(Default)]
struct Subtree {
    images: usize,
    stems: Vec<String>,
}

/// A sub-directory and the images below it.
type Child = (PathBuf, Subtree);

/// `path` and every folder above it.
fn with_ancestors(path: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    path.ancestors().map(Path::to_path_buf)
}

fn stems_of(files: &[PathBuf]) -> impl Iterator<Item = String> + '_ {
    files
        .iter()
        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
}

impl Scan {
    /// Lists `dir`, following links, recording unreadable image-named entries as skipped.
    fn list(&mut self, dir: &Path, record: bool) -> Listing {
        let mut out = Listing::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                if record {
                    self.skip(dir.to_owned(), format!("cannot read directory: {e}"));
                }
                return out;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let hidden = name.to_string_lossy().starts_with('.');
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => {
                    if !hidden {
                        out.dirs.push(path);
                    }
                }
                Ok(_) if !hidden && is_image_name(&path) => out.images.push(path),
                Ok(_) => out.ignored += 1,
                Err(e) if is_image_name(&path) && !hidden => {
                    if record {
                        self.skip(path, format!("cannot read file: {e}"));
                    }
                }
                Err(_) => out.ignored += 1,
            }
        }
        out.dirs.sort();
        out.images.sort();
        out
    }

    /// Records `path` as skipped, once.
    pub(crate) fn skip(&mut self, path: PathBuf, reason: String) {
        if self.skipped_seen.insert(path.clone()) {
            self.skipped.push(Skipped { path, reason });
        }
    }

    /// Collects every directory under `dir` (to `MAX_DEPTH`) that is a class root into `out`,
    /// and the folders considered and passed over (with their image counts and reasons) into
    /// `passed`. Returns the images below `dir`.
    fn find_roots(
        &mut self,
        dir: &Path,
        depth: usize,
        out: &mut Vec<Candidate>,
        passed: &mut Vec<(PathBuf, (usize, String))>,
        visited: &mut HashSet<PathBuf>,
    ) -> Subtree {
        let Ok(canonical) = dir.canonicalize() else {
            return Subtree::default();
        };
        if depth > MAX_DEPTH || !visited.insert(canonical) {
            return Subtree::default();
        }
        let listing = self.list(dir, false);
        let children: Vec<(PathBuf, Subtree)> = listing
            .dirs
            .iter()
            .map(|child| {
                let below = self.find_roots(child, depth + 1, out, passed, visited);
                (child.clone(), below)
            })
            .filter(|(_, below)| below.images > 0)
            .collect();
        let (splits, classes): (Vec<&Child>, Vec<&Child>) = children
            .iter()
            .partition(|(child, _)| is_split_name(&file_name(child)));
        if self.pattern.is_none() && classes.len() >= 2 {
            out.push(Candidate {
                path: dir.to_owned(),
                depth,
                images: classes.iter().map(|(_, s)| s.images).sum(),
                classes: classes
                    .iter()
                    .map(|(c, _)| file_name(c).to_lowercase())
                    .collect(),
                stems: classes
                    .iter()
                    .flat_map(|(_, s)| s.stems.iter().cloned())
                    .collect(),
                layout: Layout::Folders,
            });
        } else if !splits.is_empty() {
            let names: Vec<String> = splits.iter().map(|(c, _)| file_name(c)).collect();
            let rest: Vec<String> = classes.iter().map(|(c, _)| file_name(c)).collect();
            let mut reason = format!("{} name splits, not classes", names.join(", "));
            if !rest.is_empty() {
                reason += &format!("; {} alone is one class", rest.join(", "));
            }
            passed.push((
                dir.to_owned(),
                (children.iter().map(|(_, s)| s.images).sum(), reason),
            ));
        }
        if !listing.images.is_empty() {
            let pattern = self.pattern.clone().unwrap_or_default();
            match classes_from_names(&listing.images, &pattern) {
                Ok(named) => out.push(Candidate {
                    path: dir.to_owned(),
                    depth,
                    images: named.classes.iter().map(|c| c.files.len()).sum(),
                    classes: named
                        .classes
                        .iter()
                        .map(|c| c.name.to_lowercase())
                        .collect(),
                    stems: named
                        .classes
                        .iter()
                        .flat_map(|c| stems_of(&c.files))
                        .collect(),
                    layout: Layout::Names(named),
                }),
                Err(why) => passed.push((
                    dir.to_owned(),
                    (
                        listing.images.len(),
                        format!("{} images directly in it: {why}", listing.images.len()),
                    ),
                )),
            }
        }
        let mut stems: Vec<String> = stems_of(&listing.images).collect();
        let mut images = listing.images.len();
        for (_, below) in children {
            images += below.images;
            stems.extend(below.stems);
        }
        Subtree { images, stems }
    }

    /// Number of images at or below `dir` (to `MAX_DEPTH`), links not followed twice.
    fn images_below(&mut self, dir: &Path, depth: usize) -> usize {
        if depth > MAX_DEPTH || dir.is_symlink() && depth > 0 {
            return 0;
        }
        let listing = self.list(dir, false);
        listing.images.len()
            + listing
                .dirs
                .iter()
                .map(|d| self.images_below(d, depth + 1))
                .sum::<usize>()
    }

    /// The classes of a chosen candidate and the rule that labelled them.
    fn labelled(&mut self, root: &mut Candidate) -> (String, Vec<ClassFiles>) {
        match std::mem::replace(&mut root.layout, Layout::Folders) {
            Layout::Folders => ("class folders".into(), self.classes_of(&root.path)),
            Layout::Names(named) => {
                self.ignored += self.list(&root.path, false).ignored;
                for s in named.skipped {
                    self.skip(s.path, s.reason);
                }
                (
                    format!("labels from file names: {}", named.pattern),
                    named.classes,
                )
            }
        }
    }

    /// Every sub-folder of `root` but those named like splits as a class, with the images
    /// anywhere below it.
    fn classes_of(&mut self, root: &Path) -> Vec<ClassFiles> {
        if let Ok(real) = root.canonicalize() {
            self.above_classes.extend(with_ancestors(&real));
        }
        let listing = self.list(root, true);
        self.ignored += listing.ignored;
        listing
            .dirs
            .iter()
            .filter(|dir| !is_split_name(&file_name(dir)))
            .map(|dir| {
                let mut files = Vec::new();
                self.collect_images(dir, 0, &mut files);
                files.sort();
                ClassFiles {
                    name: file_name(dir),
                    files,
                }
            })
            .collect()
    }

    fn collect_images(&mut self, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let canonical = match dir.canonicalize() {
            Ok(c) => c,
            Err(e) => {
                self.skip(dir.to_owned(), format!("cannot read directory: {e}"));
                return;
            }
        };
        if depth > MAX_DEPTH {
            return;
        }
        let above = self.above_classes.contains(&canonical);
        if above || self.walked.contains(&canonical) {
            if dir.is_symlink() {
                let what = if above {
                    "the class root or a folder above it"
                } else {
                    "a folder already walked"
                };
                self.skip(
                    dir.to_owned(),
                    format!(
                        "symbolic link to {} ({what}); not followed",
                        canonical.display()
                    ),
                );
            }
            return;
        }
        self.walked.insert(canonical);
        let listing = self.list(dir, true);
        self.ignored += listing.ignored;
        for image in listing.images {
            match image.canonicalize() {
                Ok(real) if !self.counted.insert(real.clone()) => self.skip(
                    image,
                    format!("the same file as {}, counted once", real.display()),
                ),
                _ => out.push(image),
            }
        }
        for child in &listing.dirs {
            self.collect_images(child, depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    fn counts(classes: &[ClassFiles]) -> Vec<(String, usize)> {
        classes
            .iter()
            .map(|c| (c.name.clone(), c.files.len()))
            .collect()
    }

    #[test]
    fn image_folder_layout() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..3 {
            touch(t.path(), &format!("ants/{i}.JPG"));
            touch(t.path(), &format!("bees/{i}.png"));
        }
        touch(t.path(), "bees/notes.txt");
        touch(t.path(), "bees/.hidden.jpg");
        let d = discover(t.path(), &DiscoverOptions::default()).unwrap();
        assert_eq!(d.class_root, t.path());
        assert_eq!(
            counts(&d.classes),
            vec![("ants".into(), 3), ("bees".into(), 3)]
        );
        assert_eq!(d.ignored, 2);
        assert!(d.given_val.is_none());
    }

    #[test]
    fn split_layout_uses_given_split() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..4 {
            touch(t.path(), &format!("train/cat/{i}.jpg"));
            touch(t.path(), &format!("train/dog/{i}.jpg"));
        }
        touch(t.path(), "valid/cat/a.jpg");
        touch(t.path(), "valid/dog/a.jpg");
        touch(t.path(), "valid/dog/b.jpg");
        let d = discover(t.path(), &DiscoverOptions::default()).unwrap();
        assert_eq!(d.class_root, t.path().join("train"));
        assert_eq!(
            counts(d.given_val.as_ref().unwrap()),
            vec![("cat".into(), 1), ("dog".into(), 2)]
        );
    }

    #[test]
    fn nested_clone_prefers_training_data_over_decoys() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..3 {
            touch(t.path(), &format!("Data/Train_Data/cat/{i}.jpg"));
            touch(t.path(), &format!("Data/Train_Data/dog/{i}.jpg"));
        }
        for layer in 1..4 {
            for i in 0..5 {
                touch(
                    t.path(),
                    &format!("Data/Layer_Outputs/Cat/Layer_{layer}_Outputs/{i}.jpg"),
                );
            }
        }
        touch(t.path(), "test_cat.jpg");
        let d = discover(t.path(), &DiscoverOptions::default()).unwrap();
        assert_eq!(d.class_root, t.path().join("Data/Train_Data"));
        assert_eq!(
            counts(&d.classes),
            vec![("cat".into(), 3), ("dog".into(), 3)]
        );
    }

    #[test]
    fn classes_dir_overrides_the_ranking() {
        let t = tempfile::tempdir().unwrap();
        touch(t.path(), "a/x/1.jpg");
        touch(t.path(), "a/y/1.jpg");
        touch(t.path(), "b/p/1.jpg");
        touch(t.path(), "b/q/1.jpg");
        let options = DiscoverOptions {
            classes_dir: Some(t.path().join("b")),
            ..DiscoverOptions::default()
        };
        let d = discover(t.path(), &options).unwrap();
        assert_eq!(d.classes[0].name, "p");
    }

    #[test]
    fn dataset_level_errors() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            discover(&t.path().join("nope"), &DiscoverOptions::default()),
            Err(DiscoveryError::Missing(_))
        ));
        touch(t.path(), "file.jpg");
        assert!(matches!(
            discover(&t.path().join("file.jpg"), &DiscoverOptions::default()),
            Err(DiscoveryError::NotADirectory(_))
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            discover(empty.path(), &DiscoverOptions::default()),
            Err(DiscoveryError::NoImages(_))
        ));
        touch(empty.path(), "only/1.jpg");
        assert!(matches!(
            discover(empty.path(), &DiscoverOptions::default()),
            Err(DiscoveryError::OneClass { .. })
        ));
    }

    #[test]
    fn split_names_are_never_classes() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..4 {
            touch(t.path(), &format!("pets/cat/{i:04}.jpg"));
            touch(t.path(), &format!("pets/dog/{i:04}.jpg"));
            for split in ["train", "val", "test"] {
                touch(t.path(), &format!("{split}/cat.{i}.jpg"));
                touch(t.path(), &format!("{split}/dog.{i}.jpg"));
            }
        }
        let d = discover(t.path(), &DiscoverOptions::default()).unwrap();
        let names: Vec<&str> = d.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["cat", "dog"]);
        assert_eq!(d.class_root, t.path().join("train"));
        assert_eq!(d.rule, "labels from file names: <class>.<n>.jpg");
        assert_eq!(
            counts(d.given_val.as_ref().unwrap()),
            vec![("cat".into(), 4), ("dog".into(), 4)]
        );
        let reasons: Vec<String> = d
            .candidates
            .iter()
            .map(|c| format!("{}: {}", c.path.display(), c.reason))
            .collect();
        assert!(
            reasons.iter().any(|r| r.starts_with("pets:")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with(".: ") && r.contains("name splits, not classes")),
            "{reasons:?}"
        );
        // Only the split folders: a split layout of class folders.
        let s = tempfile::tempdir().unwrap();
        for split in ["Train", "Test"] {
            touch(s.path(), &format!("{split}/a/1.jpg"));
            touch(s.path(), &format!("{split}/b/1.jpg"));
        }
        let d = discover(s.path(), &DiscoverOptions::default()).unwrap();
        assert_eq!(d.class_root, s.path().join("Train"));
        assert!(d.given_val.is_some());
    }

    #[test]
    fn a_class_split_into_sub_folders_is_one_class() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..3 {
            touch(t.path(), &format!("Cats/indoor/{i}.jpg"));
            touch(t.path(), &format!("Cats/outdoor/{i}.JPG"));
            touch(t.path(), &format!("dogs/{i}.jpg"));
        }
        let d = discover(t.path(), &DiscoverOptions::default()).unwrap();
        assert_eq!(
            counts(&d.classes),
            vec![("Cats".into(), 6), ("dogs".into(), 3)]
        );
        assert_eq!(d.rule, "class folders");
    }

    #[test]
    fn two_readings_choose_the_shallower_and_name_the_runner_up() {
        let t = tempfile::tempdir().unwrap();
        for animal in ["cats", "dogs"] {
            for year in ["2019", "2020"] {
                for i in 0..2 {
                    touch(t.path(), &format!("animals/{animal}/{year}/{i}.jpg"));
                }
            }
        }
        let d = discover(t.path(), &DiscoverOptions::default()).unwrap();
        assert_eq!(
            counts(&d.classes),
            vec![("cats".into(), 4), ("dogs".into(), 4)]
        );
        let runner_up = &d.candidates[1];
        assert_eq!(runner_up.path, PathBuf::from("animals/cats"));
        assert!(
            runner_up.reason.starts_with("runner-up"),
            "{}",
            runner_up.reason
        );
        let options = DiscoverOptions {
            classes_dir: Some(t.path().join("animals/cats")),
            ..DiscoverOptions::default()
        };
        let d = discover(t.path(), &options).unwrap();
        assert_eq!(
            counts(&d.classes),
            vec![("2019".into(), 2), ("2020".into(), 2)]
        );
    }

    #[test]
    fn labels_from_file_names_and_an_unlabelled_test_folder() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..5 {
            touch(t.path(), &format!("train/cat.{i}.jpg"));
            touch(t.path(), &format!("train/dog.{i}.jpg"));
            touch(t.path(), &format!("test/{i}.jpg"));
        }
        let d = discover(t.path(), &DiscoverOptions::default()).unwrap();
        assert_eq!(d.class_root, t.path().join("train"));
        assert!(d.given_val.is_none());
        let test = d
            .candidates
            .iter()
            .find(|c| c.path == Path::new("test"))
            .unwrap();
        assert!(
            test.reason.contains("carry no label (e.g. 0.jpg)"),
            "{}",
            test.reason
        );
        // Pointed at the flat folder itself (Kaggle's dogs-vs-cats `train/`).
        let d = discover(&t.path().join("train"), &DiscoverOptions::default()).unwrap();
        assert_eq!(
            counts(&d.classes),
            vec![("cat".into(), 5), ("dog".into(), 5)]
        );
        // Only unlabelled images: a refusal that says so.
        let err = discover(&t.path().join("test"), &DiscoverOptions::default()).unwrap_err();
        assert!(matches!(err, DiscoveryError::NoClasses { .. }), "{err}");
        assert!(err.to_string().contains("carry no label"), "{err}");
    }

    #[test]
    fn a_label_regex_labels_by_names_only() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..5 {
            touch(t.path(), &format!("imgs/a{i}_left.png"));
            touch(t.path(), &format!("imgs/b{i}_right.png"));
        }
        touch(t.path(), "imgs/notes.png");
        let options = DiscoverOptions {
            label_regex: Some(LabelPattern::regex(r"_(left|right)\.png$").unwrap()),
            ..DiscoverOptions::default()
        };
        let d = discover(t.path(), &options).unwrap();
        assert_eq!(
            counts(&d.classes),
            vec![("left".into(), 5), ("right".into(), 5)]
        );
        assert_eq!(d.skipped.len(), 1, "{:?}", d.skipped);
    }

    #[test]
    fn one_class_names_the_class() {
        let t = tempfile::tempdir().unwrap();
        touch(t.path(), "photos/Cats/indoor/1.jpg");
        touch(t.path(), "photos/Cats/indoor/2.jpg");
        let err = discover(t.path(), &DiscoverOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("only one class (photos/Cats/indoor)"),
            "{err}"
        );
    }
}
