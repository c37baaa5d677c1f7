//! Walking the dataset's tree: listing folders (links followed once), collecting the class
//! roots and what was passed over, and the images of the chosen root's classes.

use super::rank::{Candidate, Layout};
use super::MAX_DEPTH;
use crate::data::discovery::{file_name, ClassFiles};
use crate::data::names::{classes_from_names, is_split_name, LabelPattern};
use crate::data::{is_image_name, Skipped};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Walks the tree once per question, remembering what it passed over.
#[derive(Default)]
pub struct Scan {
    /// `--label-regex`, when given.
    pub(super) pattern: Option<LabelPattern>,
    pub(super) skipped: Vec<Skipped>,
    pub(super) ignored: usize,
    pub(super) skipped_seen: HashSet<PathBuf>,
    /// Real paths of the class roots and the folders above them.
    pub(super) above_classes: HashSet<PathBuf>,
    /// Real paths of the directories walked for class files.
    pub(super) walked: HashSet<PathBuf>,
    /// Real paths of the image files counted.
    pub(super) counted: HashSet<PathBuf>,
}

/// A directory's entries, split into sub-directories and image files.
#[derive(Default)]
pub(super) struct Listing {
    pub(super) dirs: Vec<PathBuf>,
    pub(super) images: Vec<PathBuf>,
    pub(super) ignored: usize,
}

/// The images below one directory, as the root search counts them.
#[derive(Default)]
pub(super) struct Subtree {
    pub(super) images: usize,
    pub(super) stems: Vec<String>,
}

/// A sub-directory and the images below it.
pub(super) type Child = (PathBuf, Subtree);

/// `path` and every folder above it.
pub(super) fn with_ancestors(path: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    path.ancestors().map(Path::to_path_buf)
}

pub(super) fn stems_of(files: &[PathBuf]) -> impl Iterator<Item = String> + '_ {
    files
        .iter()
        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
}

impl Scan {
    /// Lists `dir`, following links, recording unreadable image-named entries as skipped.
    pub(super) fn list(&mut self, dir: &Path, record: bool) -> Listing {
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
    pub(super) fn find_roots(
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
    pub(super) fn images_below(&mut self, dir: &Path, depth: usize) -> usize {
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
    pub(super) fn labelled(&mut self, root: &mut Candidate) -> (String, Vec<ClassFiles>) {
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
    pub(super) fn classes_of(&mut self, root: &Path) -> Vec<ClassFiles> {
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

    pub(super) fn collect_images(&mut self, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
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
