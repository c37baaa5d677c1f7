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

mod rank;
mod report;
mod walk;

use super::discovery::{file_name, relative_to, CandidateReport, Discovery, DiscoveryError};
use super::names::LabelPattern;
use rank::{judge, Candidate, Judgement};
use report::nothing_usable;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use walk::{with_ancestors, Scan};

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
        return Discovery {
            class_root: dir.clone(),
            rule,
            classes,
            given_val: None,
            skipped: scan.skipped,
            ignored: scan.ignored,
            candidates,
            corrections: Vec::new(),
            tagging: None,
        }
        .checked(dataset);
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
            chosen: i == best || Some(&roots[i].path) == val_root.as_ref(),
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
            .filter(|(path, _)| !val_root.as_ref().is_some_and(|v| path.starts_with(v)))
            .filter(|(path, _)| !generated(path))
            .map(|(path, (images, reason))| CandidateReport {
                path: relative_to(dataset, &path),
                images,
                chosen: false,
                reason,
            }),
    );
    if val_root.is_none() {
        candidates.extend(unused_val_folders(&mut scan, &roots[best], dataset));
    }
    let mut chosen = roots.swap_remove(best);
    let (rule, classes) = scan.labelled(&mut chosen);
    let val = val_root.map(|v| {
        let mut root = roots
            .into_iter()
            .find(|r| r.path == v)
            .expect("the split sibling is a root");
        scan.labelled(&mut root).1
    });
    Discovery {
        class_root: chosen.path,
        rule,
        classes,
        given_val: val,
        skipped: scan.skipped,
        ignored: scan.ignored,
        candidates,
        corrections: Vec::new(),
        tagging: None,
    }
    .checked(dataset)
}

/// The validation folders beside a `train` root that are no class root of their own (one class
/// folder, say), each with the classes it lacks: not used, so tltui splits the training data.
fn unused_val_folders(scan: &mut Scan, train: &Candidate, dataset: &Path) -> Vec<CandidateReport> {
    let Some(parent) = train.path.parent() else {
        return Vec::new();
    };
    if !TRAIN_NAMES.contains(&train.name().as_str()) {
        return Vec::new();
    }
    let siblings = scan.list(parent, false).dirs;
    siblings
        .into_iter()
        .filter(|d| VAL_NAMES.contains(&file_name(d).to_lowercase().as_str()))
        .filter_map(|dir| {
            let images = scan.images_below(&dir, 0);
            let classes: Vec<String> = scan
                .list(&dir, false)
                .dirs
                .into_iter()
                .filter(|d| scan.images_below(d, 0) > 0)
                .map(|d| file_name(&d))
                .collect();
            if images == 0 {
                return None;
            }
            let lower: Vec<String> = classes.iter().map(|c| c.to_lowercase()).collect();
            let lacking: Vec<&String> = train
                .classes
                .iter()
                .filter(|c| !lower.contains(c))
                .collect();
            let has = if classes.is_empty() {
                "holds no class folders".to_string()
            } else {
                format!("holds only {}", classes.join(", "))
            };
            let lacks = lacking.iter().map(|c| c.as_str()).collect::<Vec<_>>();
            Some(CandidateReport {
                path: relative_to(dataset, &dir),
                images,
                chosen: false,
                reason: format!(
                    "not used as the validation split: it {has} and lacks {} of the training \
                     classes; tltui splits the training data itself",
                    lacks.join(", ")
                ),
            })
        })
        .collect()
}

fn check_dir(path: &Path) -> Result<(), DiscoveryError> {
    match std::fs::metadata(path) {
        Err(_) => Err(DiscoveryError::Missing(path.to_owned())),
        Ok(m) if !m.is_dir() => Err(DiscoveryError::NotADirectory(path.to_owned())),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ClassFiles;
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
    fn a_validation_folder_of_one_class_is_reported_unused() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..3 {
            touch(t.path(), &format!("train/cat/{i}.jpg"));
            touch(t.path(), &format!("train/dog/{i}.jpg"));
            touch(t.path(), &format!("val/dog/{i}.jpg"));
        }
        let d = discover(t.path(), &DiscoverOptions::default()).unwrap();
        assert!(d.given_val.is_none());
        let val = d
            .candidates
            .iter()
            .find(|c| c.path == Path::new("val"))
            .expect("val/ is reported");
        assert!(!val.chosen);
        assert!(
            val.reason.contains("holds only dog") && val.reason.contains("lacks cat"),
            "{}",
            val.reason
        );
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
