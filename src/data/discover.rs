//! Finding the class folders inside a dataset directory, however it is nested.
//!
//! A *class root* is a directory with at least two sub-directories that hold image files directly;
//! those sub-directories are the classes. When several class roots exist (a clone of a project
//! often carries layer visualisations, augmented copies or sample outputs beside the training
//! data), they are ranked, each rule deciding only between roots the rules above it tie:
//! 1. a root whose path has a part that looks like generated output (`output`, `layer`, `feature`,
//!    `visual`, `checkpoint`, `log`, `result`, `sample`) loses, and so does the validation half of
//!    a split layout (it is used with its `train` folder, never alone);
//! 2. a *derived copy* loses: a root whose own folder name says so (`augmented`, `aug`, `resized`,
//!    `processed`, `preview`, `thumb`, `thumbs`, `thumbnails`, `copy`, `backup`, `old`, `tmp`, as the
//!    whole name or a `_`/`-`/space-separated part: `train_augmented`, `images-resized`), or one
//!    whose file stems are mostly another root's stems plus a derivation suffix
//!    ([`super::groups::strip_derivation`]);
//! 3. a *split layout* wins: a root named `train` or `training` with a sibling named `val`,
//!    `valid`, `validation` or `test` that is a class root with the same class names (or some of
//!    them); the dataset's own split is then used;
//! 4. a root whose path has a part named like training data (`train`, `data`, `image`, `dataset`)
//!    wins over one that has none;
//! 5. a shallower root wins;
//! 6. a root with more images wins; then the path, alphabetically.
//!
//! Symbolic links are followed, but a directory is walked at most once per real path: a link to
//! the dataset root, to one of its parents or to a folder already walked is not followed and is
//! reported in `skipped`; a file reached twice through links counts once.

use super::groups::strip_derivation;
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
const VAL_NAMES: &[&str] = &["val", "valid", "validation", "test"];
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
    /// The folder whose sub-folders are the classes (for a split layout: the `train` folder).
    pub class_root: PathBuf,
    /// Training images per class (all images when the dataset has no split of its own).
    pub classes: Vec<ClassFiles>,
    /// Validation images per class, when the dataset has its own split (same class order).
    pub given_val: Option<Vec<ClassFiles>>,
    /// Image-named files that could not be read as files (broken links, permission errors).
    pub skipped: Vec<Skipped>,
    /// Files ignored because they are hidden or not images.
    pub ignored: usize,
    /// Every class root considered, the chosen one first, each with why it ranks where it does.
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
        "{path} has only one class folder ({class}); a classifier needs at least two, one sub-folder per class"
    )]
    OneClass { path: PathBuf, class: String },
}

/// Finds the class root under `dataset` by the ranking above, or takes `classes_dir` when given.
pub fn discover(dataset: &Path, classes_dir: Option<&Path>) -> Result<Discovery, DiscoveryError> {
    check_dir(dataset)?;
    let mut scan = Scan::default();
    if let Some(dir) = classes_dir {
        check_dir(dir)?;
        let classes = scan.classes_of(dir);
        let candidates = vec![CandidateReport {
            path: relative_to(dataset, dir),
            images: classes.iter().map(|c| c.files.len()).sum(),
            chosen: true,
            reason: "given with --classes-dir".into(),
        }];
        return finish(dir.to_owned(), classes, None, scan, dataset, candidates);
    }
    let mut roots = Vec::new();
    scan.find_roots(dataset, &mut roots);
    if roots.is_empty() {
        return Err(nothing_usable(dataset, &mut scan));
    }
    let judged: Vec<Judgement> = (0..roots.len())
        .map(|i| judge(i, &roots, dataset))
        .collect();
    let mut order: Vec<usize> = (0..roots.len()).collect();
    order.sort_by_key(|&i| judged[i].key(&roots[i]));
    let best = order[0];
    let candidates = order
        .iter()
        .map(|&i| CandidateReport {
            path: relative_to(dataset, &roots[i].path),
            images: roots[i].images,
            chosen: i == best,
            reason: if i == best {
                judged[i].why_chosen(&roots[i], roots.len())
            } else {
                judged[i].why_not(&roots[i], &judged[best], &roots[best], dataset)
            },
        })
        .collect();
    let best_path = roots[best].path.clone();
    let classes = scan.classes_of(&best_path);
    let val = judged[best]
        .split_sibling
        .clone()
        .map(|v| scan.classes_of(&v));
    finish(best_path, classes, val, scan, dataset, candidates)
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

/// Explains why no class root exists: no images at all, or images of a single class.
fn nothing_usable(dataset: &Path, scan: &mut Scan) -> DiscoveryError {
    let single = scan.first_image_dir(dataset, 0);
    match single {
        Some(dir) => DiscoveryError::OneClass {
            path: dataset.to_owned(),
            class: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string()),
        },
        None => DiscoveryError::NoImages(dataset.to_owned()),
    }
}

fn finish(
    class_root: PathBuf,
    mut classes: Vec<ClassFiles>,
    mut given_val: Option<Vec<ClassFiles>>,
    scan: Scan,
    dataset: &Path,
    candidates: Vec<CandidateReport>,
) -> Result<Discovery, DiscoveryError> {
    if let Some(val) = &mut given_val {
        // Keep the classes of both splits aligned: the union of names, in sorted order.
        let names: std::collections::BTreeSet<String> = classes
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
        align(&mut classes);
        align(val);
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
        classes,
        given_val,
        skipped: scan.skipped,
        ignored: scan.ignored,
        candidates,
    })
}

/// A directory that qualifies as a class root.
struct Candidate {
    path: PathBuf,
    depth: usize,
    images: usize,
    /// Names of its class folders, lower-cased.
    classes: BTreeSet<String>,
    /// Stems of the images directly in its class folders.
    stems: HashSet<String>,
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
    /// Rule 1: a path part that looks like generated output, or `val` for a validation folder.
    output_word: Option<String>,
    /// Rule 2: why it is a derived copy.
    derived: Option<String>,
    /// Rule 3: its validation sibling, when it is the `train` half of a split layout.
    split_sibling: Option<PathBuf>,
    /// Rule 4.
    data_named: bool,
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
    let output_word = find(OUTPUT_WORDS).or_else(|| {
        VAL_NAMES
            .contains(&name.as_str())
            .then(|| "val".to_string())
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
    let split_sibling = split_sibling(c, roots);
    Judgement {
        output_word,
        derived,
        split_sibling,
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
fn split_sibling(root: &Candidate, roots: &[Candidate]) -> Option<PathBuf> {
    if !TRAIN_NAMES.contains(&root.name().as_str()) {
        return None;
    }
    let parent = root.path.parent()?;
    roots
        .iter()
        .filter(|r| r.path.parent() == Some(parent))
        .filter(|r| r.classes.is_subset(&root.classes))
        .filter_map(|r| {
            let n = r.name();
            VAL_NAMES.iter().position(|v| *v == n).map(|rank| (rank, r))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, r)| r.path.clone())
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
        if let Some(val) = &self.split_sibling {
            let val = val.file_name().unwrap_or_default().to_string_lossy();
            return format!(
                "split layout: {}/ beside {val}/ with the same classes; the dataset's own split is used",
                c.name()
            );
        }
        if candidates == 1 {
            return "the only folder of class folders".into();
        }
        let mut traits = vec![];
        if self.data_named {
            traits.push("named like training data".to_string());
        }
        traits.push(format!("depth {}", c.depth));
        traits.push(format!("{} images", c.images));
        format!("ranked first: {}", traits.join(", "))
    }

    /// Why `c` lost to the chosen root: the first rule that ranks it lower.
    fn why_not(&self, c: &Candidate, best: &Judgement, b: &Candidate, dataset: &Path) -> String {
        let (mine, theirs) = (self.key(c), best.key(b));
        if mine.0 != theirs.0 {
            return match self.output_word.as_deref() {
                Some("val") if best.split_sibling.as_deref() == Some(c.path.as_path()) => {
                    format!(
                        "validation half of the split layout with {}",
                        relative_to(dataset, &b.path).display()
                    )
                }
                Some("val") => "a validation folder: used only beside a train folder".into(),
                Some(word) => format!("looks like generated output (`{word}`)"),
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
                "deeper (depth {}) than the chosen root ({})",
                c.depth, b.depth
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
struct Scan {
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

/// `path` and every folder above it.
fn with_ancestors(path: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    path.ancestors().map(Path::to_path_buf)
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

    fn skip(&mut self, path: PathBuf, reason: String) {
        if self.skipped_seen.insert(path.clone()) {
            self.skipped.push(Skipped { path, reason });
        }
    }

    /// Collects every directory under `dir` (to `MAX_DEPTH`) that is a class root.
    fn find_roots(&mut self, dir: &Path, out: &mut Vec<Candidate>) {
        let mut visited: HashSet<PathBuf> = match dir.canonicalize() {
            Ok(real) => with_ancestors(&real).skip(1).collect(),
            Err(_) => return,
        };
        self.find_roots_inner(dir, 0, out, &mut visited);
    }

    fn find_roots_inner(
        &mut self,
        dir: &Path,
        depth: usize,
        out: &mut Vec<Candidate>,
        visited: &mut HashSet<PathBuf>,
    ) {
        let Ok(canonical) = dir.canonicalize() else {
            return;
        };
        if depth > MAX_DEPTH || !visited.insert(canonical) {
            return;
        }
        let listing = self.list(dir, false);
        let mut classes = BTreeSet::new();
        let mut stems = HashSet::new();
        let mut images = 0;
        for child in &listing.dirs {
            let files = self.list(child, false).images;
            if !files.is_empty() {
                let name = child.file_name().unwrap_or_default();
                classes.insert(name.to_string_lossy().to_lowercase());
                images += files.len();
                stems.extend(
                    files
                        .iter()
                        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned())),
                );
            }
        }
        if classes.len() >= 2 {
            out.push(Candidate {
                path: dir.to_owned(),
                depth,
                images,
                classes,
                stems,
            });
        }
        for child in &listing.dirs {
            self.find_roots_inner(child, depth + 1, out, visited);
        }
    }

    /// The first directory (depth first) that holds images directly.
    fn first_image_dir(&mut self, dir: &Path, depth: usize) -> Option<PathBuf> {
        if depth > MAX_DEPTH {
            return None;
        }
        let listing = self.list(dir, false);
        if !listing.images.is_empty() {
            return Some(dir.to_owned());
        }
        listing
            .dirs
            .iter()
            .find_map(|d| self.first_image_dir(d, depth + 1))
    }

    /// Every sub-folder of `root` as a class, with the images anywhere below it.
    fn classes_of(&mut self, root: &Path) -> Vec<ClassFiles> {
        if let Ok(real) = root.canonicalize() {
            self.above_classes.extend(with_ancestors(&real));
        }
        let listing = self.list(root, true);
        self.ignored += listing.ignored;
        listing
            .dirs
            .iter()
            .map(|dir| {
                let mut files = Vec::new();
                self.collect_images(dir, 0, &mut files);
                files.sort();
                ClassFiles {
                    name: dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
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
        let d = discover(t.path(), None).unwrap();
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
        let d = discover(t.path(), None).unwrap();
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
        let d = discover(t.path(), None).unwrap();
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
        let d = discover(t.path(), Some(&t.path().join("b"))).unwrap();
        assert_eq!(d.classes[0].name, "p");
    }

    #[test]
    fn dataset_level_errors() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            discover(&t.path().join("nope"), None),
            Err(DiscoveryError::Missing(_))
        ));
        touch(t.path(), "file.jpg");
        assert!(matches!(
            discover(&t.path().join("file.jpg"), None),
            Err(DiscoveryError::NotADirectory(_))
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            discover(empty.path(), None),
            Err(DiscoveryError::NoImages(_))
        ));
        touch(empty.path(), "only/1.jpg");
        assert!(matches!(
            discover(empty.path(), None),
            Err(DiscoveryError::OneClass { .. })
        ));
    }
}
