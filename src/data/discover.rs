//! Finding the class folders inside a dataset directory, however it is nested.
//!
//! A *class root* is a directory with at least two sub-directories that hold image files directly;
//! those sub-directories are the classes. When several class roots exist (a clone of a project
//! often carries layer visualisations or sample outputs beside the training data), they are ranked:
//! 1. a root whose path has a part that looks like generated output (`output`, `layer`, `feature`,
//!    `visual`, `checkpoint`, `log`, `result`, `sample`) loses to one that has none;
//! 2. a root whose path has a part named like training data (`train`, `data`, `image`, `dataset`)
//!    wins over one that has none;
//! 3. a shallower root wins;
//! 4. a root with more images wins; then the path, alphabetically.
//!
//! A root named `train` with a sibling named `val`, `valid`, `validation` or `test` that is a class
//! root too is a *split layout*: the dataset's own split is used.

use super::{is_image_name, Skipped};
use std::collections::{BTreeMap, HashSet};
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
const VAL_NAMES: &[&str] = &["val", "valid", "validation", "test"];

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
        return finish(dir.to_owned(), classes, None, scan, dataset);
    }
    let mut roots = Vec::new();
    scan.find_roots(dataset, 0, &mut roots);
    let best = roots.iter().min_by_key(|r| r.rank(dataset));
    let Some(best) = best else {
        return Err(nothing_usable(dataset, &mut scan));
    };
    let best = best.path.clone();
    let given_val = split_sibling(&best, &roots);
    let classes = scan.classes_of(&best);
    let val = given_val.map(|v| scan.classes_of(&v));
    finish(best, classes, val, scan, dataset)
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
    })
}

/// The `val`-like sibling of a root named `train`, when it is a class root too.
fn split_sibling(root: &Path, roots: &[Candidate]) -> Option<PathBuf> {
    let name = root.file_name()?.to_string_lossy().to_lowercase();
    if name != "train" {
        return None;
    }
    let parent = root.parent()?;
    roots
        .iter()
        .filter(|r| r.path.parent() == Some(parent))
        .filter(|r| {
            let n = r
                .path
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase());
            n.is_some_and(|n| VAL_NAMES.contains(&n.as_str()))
        })
        .min_by_key(|r| {
            let n = r.path.file_name().unwrap().to_string_lossy().to_lowercase();
            VAL_NAMES.iter().position(|v| *v == n)
        })
        .map(|r| r.path.clone())
}

/// A directory that qualifies as a class root.
struct Candidate {
    path: PathBuf,
    depth: usize,
    images: usize,
}

impl Candidate {
    /// Smaller is better; see the module documentation for the order.
    fn rank(&self, dataset: &Path) -> (bool, bool, usize, std::cmp::Reverse<usize>, PathBuf) {
        let rel = self.path.strip_prefix(dataset).unwrap_or(&self.path);
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_lowercase())
            .collect();
        let has = |words: &[&str]| parts.iter().any(|p| words.iter().any(|w| p.contains(w)));
        // A split layout's `val` folder ranks with its `train` folder, never on its own.
        let is_val = parts
            .last()
            .is_some_and(|p| VAL_NAMES.contains(&p.as_str()));
        (
            has(OUTPUT_WORDS) || is_val,
            !has(DATA_WORDS),
            self.depth,
            std::cmp::Reverse(self.images),
            self.path.clone(),
        )
    }
}

/// Walks the tree once per question, remembering what it passed over.
#[derive(Default)]
struct Scan {
    skipped: Vec<Skipped>,
    ignored: usize,
    skipped_seen: HashSet<PathBuf>,
}

/// A directory's entries, split into sub-directories and image files.
#[derive(Default)]
struct Listing {
    dirs: Vec<PathBuf>,
    images: Vec<PathBuf>,
    ignored: usize,
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
    fn find_roots(&mut self, dir: &Path, depth: usize, out: &mut Vec<Candidate>) {
        let mut visited = HashSet::new();
        self.find_roots_inner(dir, depth, out, &mut visited);
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
        let mut image_children = 0;
        let mut images = 0;
        for child in &listing.dirs {
            let n = self.list(child, false).images.len();
            if n > 0 {
                image_children += 1;
                images += n;
            }
        }
        if image_children >= 2 {
            out.push(Candidate {
                path: dir.to_owned(),
                depth,
                images,
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
        let listing = self.list(root, true);
        self.ignored += listing.ignored;
        listing
            .dirs
            .iter()
            .map(|dir| {
                let mut files = Vec::new();
                let mut visited = HashSet::new();
                self.collect_images(dir, 0, &mut files, &mut visited);
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

    fn collect_images(
        &mut self,
        dir: &Path,
        depth: usize,
        out: &mut Vec<PathBuf>,
        visited: &mut HashSet<PathBuf>,
    ) {
        let canonical = match dir.canonicalize() {
            Ok(c) => c,
            Err(e) => {
                self.skip(dir.to_owned(), format!("cannot read directory: {e}"));
                return;
            }
        };
        if depth > MAX_DEPTH || !visited.insert(canonical) {
            return;
        }
        let listing = self.list(dir, true);
        self.ignored += listing.ignored;
        out.extend(listing.images);
        for child in &listing.dirs {
            self.collect_images(child, depth + 1, out, visited);
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
