//! Label corrections a person made while reviewing suspect images: kept per dataset in tltui's
//! cache (never in the dataset folder), applied to the images of every later run on that
//! dataset, and recorded in the recipe so that a replay reads the same labels.

use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What was decided about one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// File it under [`Correction::label`].
    Relabel,
    /// Leave it out of training and validation.
    Exclude,
    /// The given label is right (the image is not shown for review again).
    Keep,
}

/// One decision about one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correction {
    /// The image, relative to the dataset folder, with `/` between folders.
    pub file: String,
    pub decision: Decision,
    /// The class for [`Decision::Relabel`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Which corrections a run applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum CorrectionsChoice {
    /// Those saved for the dataset in tltui's cache, if any.
    #[default]
    Saved,
    /// None (`--ignore-corrections`).
    Ignored,
    /// These (a replayed recipe's).
    Given(Vec<Correction>),
}

/// The columns of a corrections file.
const HEADER: [&str; 3] = ["file_name", "decision", "label"];

/// A dataset's corrections file: every decision in the order made, the latest per image counting.
#[derive(Debug, Clone)]
pub struct CorrectionsFile {
    path: PathBuf,
    log: Vec<Correction>,
}

impl CorrectionsFile {
    /// Where the corrections of `dataset` live under tltui's cache folder `cache`:
    /// `corrections/<name>-<hash of the dataset's full path>.csv`.
    pub fn path_for(cache: &Path, dataset: &Path) -> PathBuf {
        let full = std::fs::canonicalize(dataset).unwrap_or_else(|_| dataset.to_path_buf());
        let digest = sha2::Sha256::digest(full.to_string_lossy().as_bytes());
        let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        let name = super::dataset_name(dataset);
        cache.join("corrections").join(format!("{name}-{hash}.csv"))
    }

    /// The corrections file at `path`; one that does not exist yet holds no decisions.
    pub fn open(path: PathBuf) -> Result<Self, String> {
        let log = match std::fs::read(&path) {
            Ok(bytes) => parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Self { path, log })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `correction` and saves the file at once.
    pub fn decide(&mut self, correction: Correction) -> std::io::Result<()> {
        self.log.push(correction);
        self.save()
    }

    /// Takes back the last decision and saves the file; the decision taken back, if any.
    pub fn undo(&mut self) -> std::io::Result<Option<Correction>> {
        let last = self.log.pop();
        if last.is_some() {
            self.save()?;
        }
        Ok(last)
    }

    /// The decision that counts for each image (the latest), in the order the images were first
    /// decided on.
    pub fn effective(&self) -> Vec<Correction> {
        let mut latest: HashMap<&str, &Correction> = HashMap::new();
        let mut order = Vec::new();
        for c in &self.log {
            if latest.insert(c.file.as_str(), c).is_none() {
                order.push(c.file.as_str());
            }
        }
        order.into_iter().map(|f| latest[f].clone()).collect()
    }

    fn save(&self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(HEADER)?;
        for c in &self.log {
            let decision = match c.decision {
                Decision::Relabel => "relabel",
                Decision::Exclude => "exclude",
                Decision::Keep => "keep",
            };
            out.write_record([c.file.as_str(), decision, c.label.as_deref().unwrap_or("")])?;
        }
        let bytes = out.into_inner().map_err(|e| e.into_error())?;
        crate::atomic::atomic_write(&self.path, &bytes)
    }
}

/// The decisions of a corrections file's bytes.
fn parse(bytes: &[u8]) -> Result<Vec<Correction>, String> {
    let mut reader = csv::Reader::from_reader(bytes);
    let header = reader.headers().map_err(|e| e.to_string())?;
    if header.iter().collect::<Vec<_>>() != HEADER {
        return Err(format!(
            "not a corrections file: its header is not {}",
            HEADER.join(",")
        ));
    }
    let mut log = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(|e| e.to_string())?;
        let (file, decision, label) = (&row[0], &row[1], row.get(2).unwrap_or(""));
        let decision = match decision {
            "relabel" if !label.is_empty() => Decision::Relabel,
            "exclude" => Decision::Exclude,
            "keep" => Decision::Keep,
            other => return Err(format!("row {}: unknown decision {other:?}", i + 2)),
        };
        log.push(Correction {
            file: file.to_string(),
            decision,
            label: (decision == Decision::Relabel).then(|| label.to_string()),
        });
    }
    Ok(log)
}

/// The key of `path` in a corrections file of `dataset`.
pub fn key_of(dataset: &Path, path: &Path) -> String {
    path.strip_prefix(dataset)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn fix(file: &str, decision: Decision, label: Option<&str>) -> Correction {
        Correction {
            file: file.into(),
            decision,
            label: label.map(String::from),
        }
    }

    #[test]
    fn decisions_survive_a_reopen_and_the_latest_per_image_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = CorrectionsFile::path_for(dir.path(), Path::new("some/data"));
        assert!(path.starts_with(dir.path().join("corrections")));
        let mut file = CorrectionsFile::open(path.clone()).unwrap();
        assert!(file.effective().is_empty());
        file.decide(fix("cat/1.jpg", Decision::Relabel, Some("dog")))
            .unwrap();
        file.decide(fix("cat/2.jpg", Decision::Exclude, None))
            .unwrap();
        file.decide(fix("cat/1.jpg", Decision::Keep, None)).unwrap();
        let reopened = CorrectionsFile::open(path.clone()).unwrap();
        assert_eq!(
            reopened.effective(),
            vec![
                fix("cat/1.jpg", Decision::Keep, None),
                fix("cat/2.jpg", Decision::Exclude, None)
            ]
        );
        let mut reopened = reopened;
        assert_eq!(
            reopened.undo().unwrap(),
            Some(fix("cat/1.jpg", Decision::Keep, None))
        );
        let again = CorrectionsFile::open(path).unwrap();
        assert_eq!(
            again.effective()[0],
            fix("cat/1.jpg", Decision::Relabel, Some("dog"))
        );
    }

    #[test]
    fn a_file_that_is_not_a_corrections_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.csv");
        std::fs::write(&path, "a,b\n1,2\n").unwrap();
        let e = CorrectionsFile::open(path.clone()).unwrap_err();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("header"),
            "{e}"
        );
    }
}
