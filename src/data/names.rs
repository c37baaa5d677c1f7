//! Labels carried in file names (fastai's `from_name_re`): `cat.0.jpg`, `Abyssinian_12.jpg`,
//! `english_setter_3.jpg`, `dog-001.png`.
//!
//! The built-in pattern reads a file's stem as `<label><sep><number>`: trailing digits, one
//! separator (`.`, `_`, `-` or a space) before them, and a label with at least one letter. Labels
//! that name a camera or a generic picture (`IMG`, `DSC`, `image`, `photo`, …) or a split
//! (`train`, `test`, …) carry no class. A folder is labelled from its names when at least
//! [`NAME_SHARE`] of its images carry a label and at least two labels have
//! [`MIN_LABEL_IMAGES`] images or more; the other files are reported as skipped. A user's
//! `--label-regex` replaces the built-in pattern: its first capture group, matched against the
//! whole file name, is the class, and every label it gives is kept.

use super::discovery::ClassFiles;
use super::Skipped;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Share of a folder's images that must carry a label for the folder to be labelled by names.
pub const NAME_SHARE: f64 = 0.9;
/// Images a label needs (with the built-in pattern) to count as a class.
pub const MIN_LABEL_IMAGES: usize = 2;

/// Names of splits (any case): never classes.
pub const SPLIT_NAMES: &[&str] = &[
    "train",
    "training",
    "val",
    "valid",
    "validation",
    "test",
    "testing",
    "eval",
];

/// Stems of camera files and generic picture names: not labels.
const GENERIC_LABELS: &[&str] = &[
    "img",
    "image",
    "images",
    "dsc",
    "dscn",
    "dscf",
    "pxl",
    "mvimg",
    "photo",
    "pic",
    "picture",
    "frame",
    "screenshot",
    "scan",
    "file",
    "untitled",
    "sample",
];

/// Whether `name` names a split (`train`, `Val`, `TEST`, …).
pub fn is_split_name(name: &str) -> bool {
    SPLIT_NAMES.contains(&name.to_lowercase().as_str())
}

/// How labels are read from file names.
#[derive(Debug, Clone, Default)]
pub enum LabelPattern {
    /// `<label><sep><number>.<ext>`.
    #[default]
    Builtin,
    /// A user's regular expression; the first capture group is the class.
    Regex(regex::Regex),
}

impl LabelPattern {
    /// A user's `--label-regex`, checked to have a capture group.
    pub fn regex(pattern: &str) -> Result<Self, String> {
        let re = regex::Regex::new(pattern)
            .map_err(|e| format!("--label-regex {pattern:?} is not a regular expression: {e}"))?;
        if re.captures_len() < 2 {
            return Err(format!(
                "--label-regex {pattern:?} has no capture group: put the class in (…)"
            ));
        }
        Ok(Self::Regex(re))
    }

    /// The label of a file name, if it carries one.
    pub fn label(&self, file_name: &str) -> Option<String> {
        match self {
            Self::Builtin => builtin_label(file_name).map(str::to_owned),
            Self::Regex(re) => re
                .captures(file_name)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str().to_owned())
                .filter(|l| !l.is_empty()),
        }
    }
}

/// The label of `file_name` by the built-in `<label><sep><number>` pattern.
pub fn builtin_label(file_name: &str) -> Option<&str> {
    let stem = Path::new(file_name).file_stem()?.to_str()?;
    let without_digits = stem.trim_end_matches(|c: char| c.is_ascii_digit());
    if without_digits.len() == stem.len() {
        return None;
    }
    let label = without_digits.strip_suffix(['.', '_', '-', ' '])?;
    let generic = |l: &str| {
        let l = l.to_lowercase();
        GENERIC_LABELS.contains(&l.as_str()) || SPLIT_NAMES.contains(&l.as_str())
    };
    (label.chars().any(char::is_alphabetic) && !generic(label)).then_some(label)
}

/// A folder's images grouped by the labels in their names.
#[derive(Debug, Clone)]
pub struct NamedClasses {
    /// Classes in name order, each with its files sorted.
    pub classes: Vec<ClassFiles>,
    /// Files whose names carry no label (or a label with too few images).
    pub skipped: Vec<Skipped>,
    /// The pattern as seen, for reports: `<class>.<n>.jpg`, or the user's regex.
    pub pattern: String,
}

/// Groups `files` (the images directly in one folder) by the labels in their names, or says
/// why the folder is not labelled by them.
pub fn classes_from_names(
    files: &[PathBuf],
    pattern: &LabelPattern,
) -> Result<NamedClasses, String> {
    let name_of = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut by_label: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut unlabelled = Vec::new();
    for f in files {
        match name_of(f).and_then(|n| pattern.label(&n)) {
            Some(label) => by_label.entry(label).or_default().push(f.clone()),
            None => unlabelled.push(f.clone()),
        }
    }
    let example = |list: &[PathBuf]| list.first().and_then(|p| name_of(p)).unwrap_or_default();
    let labelled: usize = by_label.values().map(Vec::len).sum();
    if labelled == 0 {
        return Err(format!(
            "their file names carry no label (e.g. {})",
            example(&unlabelled)
        ));
    }
    if (labelled as f64) < NAME_SHARE * files.len() as f64 {
        return Err(format!(
            "only {labelled} of {} file names carry a label (e.g. {} does not)",
            files.len(),
            example(&unlabelled)
        ));
    }
    let min = match pattern {
        LabelPattern::Builtin => MIN_LABEL_IMAGES,
        LabelPattern::Regex(_) => 1,
    };
    let (kept, rare): (BTreeMap<_, _>, BTreeMap<_, _>) =
        by_label.into_iter().partition(|(_, v)| v.len() >= min);
    if kept.len() < 2 {
        let seen: Vec<String> = kept.keys().chain(rare.keys()).take(5).cloned().collect();
        return Err(format!(
            "their file names give fewer than two labels with {min} or more images ({})",
            seen.join(", ")
        ));
    }
    let reason = match pattern {
        LabelPattern::Builtin => "file name carries no label (<label><sep><number>)".to_string(),
        LabelPattern::Regex(re) => {
            format!("file name does not match --label-regex {}", re.as_str())
        }
    };
    let mut skipped: Vec<Skipped> = unlabelled
        .into_iter()
        .map(|path| Skipped {
            path,
            reason: reason.clone(),
        })
        .collect();
    for (label, files) in rare {
        skipped.extend(files.into_iter().map(|path| Skipped {
            path,
            reason: format!("its label {label:?} has fewer than {min} images"),
        }));
    }
    let first = kept.values().next().and_then(|v| v.first()).cloned();
    let pattern = match pattern {
        LabelPattern::Builtin => first
            .and_then(|p| name_of(&p))
            .map(|n| describe_builtin(&n))
            .unwrap_or_default(),
        LabelPattern::Regex(re) => format!("--label-regex {}", re.as_str()),
    };
    let classes = kept
        .into_iter()
        .map(|(name, mut files)| {
            files.sort();
            ClassFiles { name, files }
        })
        .collect();
    Ok(NamedClasses {
        classes,
        skipped,
        pattern,
    })
}

/// `cat.0.jpg` → `<class>.<n>.jpg`.
fn describe_builtin(file_name: &str) -> String {
    let label = builtin_label(file_name).unwrap_or_default();
    let rest = &file_name[label.len()..];
    let sep = rest.chars().next().unwrap_or('.');
    let ext = Path::new(file_name)
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    format!("<class>{sep}<n>{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_labels() {
        assert_eq!(builtin_label("cat.0.jpg"), Some("cat"));
        assert_eq!(builtin_label("Abyssinian_12.jpg"), Some("Abyssinian"));
        assert_eq!(
            builtin_label("english_setter_3.jpg"),
            Some("english_setter")
        );
        assert_eq!(builtin_label("dog-001.png"), Some("dog"));
        assert_eq!(builtin_label("17.jpg"), None);
        assert_eq!(builtin_label("cat.jpg"), None);
        assert_eq!(builtin_label("IMG_0042.JPG"), None);
        assert_eq!(builtin_label("test_3.jpg"), None);
        assert_eq!(builtin_label("dog001.png"), None);
    }

    fn paths(names: &[&str]) -> Vec<PathBuf> {
        names
            .iter()
            .map(|n| PathBuf::from(format!("d/{n}")))
            .collect()
    }

    #[test]
    fn folder_labelled_by_names() {
        let files = paths(&[
            "cat.0.jpg",
            "cat.1.jpg",
            "dog.0.jpg",
            "dog.1.jpg",
            "dog.2.jpg",
        ]);
        let named = classes_from_names(&files, &LabelPattern::Builtin).unwrap();
        let counts: Vec<(String, usize)> = named
            .classes
            .iter()
            .map(|c| (c.name.clone(), c.files.len()))
            .collect();
        assert_eq!(counts, vec![("cat".into(), 2), ("dog".into(), 3)]);
        assert_eq!(named.pattern, "<class>.<n>.jpg");
        assert!(named.skipped.is_empty());
    }

    #[test]
    fn unlabelled_and_mixed_folders_are_refused() {
        let err = classes_from_names(&paths(&["1.jpg", "2.jpg"]), &LabelPattern::Builtin);
        assert!(err.unwrap_err().contains("carry no label (e.g. 1.jpg)"));
        let mixed = paths(&["cat.0.jpg", "dog.1.jpg", "a.jpg", "b.jpg"]);
        assert!(classes_from_names(&mixed, &LabelPattern::Builtin)
            .unwrap_err()
            .contains("only 2 of 4"));
        let one = paths(&["cat.0.jpg", "cat.1.jpg", "dog.1.jpg"]);
        assert!(classes_from_names(&one, &LabelPattern::Builtin)
            .unwrap_err()
            .contains("fewer than two labels"));
    }

    #[test]
    fn a_regex_overrides_the_builtin_pattern() {
        let re = LabelPattern::regex(r"^([a-z]+)\d+\.png$").unwrap();
        let files = paths(&["dog001.png", "cat7.png", "cat8.png"]);
        let named = classes_from_names(&files, &re).unwrap();
        assert_eq!(named.classes.len(), 2);
        assert!(LabelPattern::regex("no-group").is_err());
        assert!(LabelPattern::regex("(").is_err());
    }
}
