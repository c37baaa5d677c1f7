//! Datasets on the Hugging Face Hub as parquet files: `hf://datasets/ORG/NAME[@REVISION]`.
//!
//! The repository's files are listed through the Hub API. Each split's files come from the
//! README's `configs` (`data_files`, glob patterns per split; `--dataset-config` picks a config,
//! else `default`, else the first), else from the parquet file names (`data/<split>-*.parquet`,
//! `<config>/<split>/*.parquet`). The files of the splits used are downloaded into the standard
//! Hugging Face cache (shared with Python's `datasets`) with the backbones' progress, integrity
//! checks and offline fallback. The image column is the `Image` feature of the footer's
//! `huggingface` metadata (else the first `*.bytes` column); the label column is its first
//! `ClassLabel` or `Sequence(ClassLabel)` (multi-label; names from the footer, else the README's
//! `dataset_info`), else a string column named like a label; `--label-column` says it.
//! Splits: `--train-split` (default `train`) and `--val-split` (default `validation`,
//! `valid` or `val`, else `test`); without a validation
//! split tltui splits the training one. Images are read from the parquet files themselves
//! ([`super::parquet`]), each named by the `path` stored with it (`cat.0.jpg`), else
//! `FILE#ROW`, so a class's images sort as the same files in a folder do.

use super::discovery::{align_classes, ClassFiles, Discovery, DiscoveryError, Tagging};
use super::parquet::{self, Label};
use super::{CandidateReport, Skipped};
use crate::hub::{self, DownloadProgress, HubOptions, RepoId};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The prefix of a Hub dataset given as a dataset path.
pub const SCHEME: &str = "hf://datasets/";

/// Split names tried for validation, in order, when `--val-split` is not given.
const VAL_SPLITS: &[&str] = &["validation", "valid", "val", "test"];
/// Column names read as labels when the footer names no `ClassLabel`.
const LABEL_NAMES: &[&str] = &["label", "labels", "class", "category", "target"];

/// Which part of a Hub dataset to read.
#[derive(Debug, Clone, Default)]
pub struct HubDatasetOptions {
    /// `--dataset-config`.
    pub config: Option<String>,
    /// `--train-split` (default `train`).
    pub train_split: Option<String>,
    /// `--val-split` (default: `validation`, `valid`, `val`, else `test`).
    pub val_split: Option<String>,
    /// `--label-column`.
    pub label_column: Option<String>,
}

/// The repository named by `spec` when it is `hf://datasets/ORG/NAME[@REVISION]`.
pub fn parse_spec(spec: &Path) -> Option<Result<RepoId, String>> {
    let text = spec.to_str()?;
    let rest = text.strip_prefix(SCHEME)?;
    Some(
        rest.trim_end_matches('/')
            .parse::<RepoId>()
            .map_err(|_| format!("{text} is not of the form {SCHEME}ORG/NAME[@REVISION]")),
    )
}

/// Lists, downloads and reads the Hub dataset `repo` into a [`Discovery`] whose files are the
/// virtual paths of its images; the rows' images stay in the parquet files (a row-group cache
/// of `budget_bytes`). Also returns warnings (an offline fallback, shards that could not be read
/// are in `skipped`).
pub fn open(
    repo: &RepoId,
    options: &HubDatasetOptions,
    hub_options: &HubOptions,
    budget_bytes: u64,
    progress: Arc<dyn Fn(DownloadProgress) + Send + Sync>,
) -> Result<(Discovery, Vec<String>), DiscoveryError> {
    let fail = |e: hub::HubError| DiscoveryError::Labels(e.to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DiscoveryError::Labels(format!("cannot start the Hub client: {e}")))?;
    let mut warnings = Vec::new();
    let (files, offline) = runtime
        .block_on(hub::list_dataset_files(repo, hub_options))
        .map_err(fail)?;
    if offline {
        warnings.push(format!(
            "the Hub is unreachable; using the cached snapshot of datasets/{repo}"
        ));
    }
    let fetch = |file: &str| -> Result<PathBuf, DiscoveryError> {
        runtime
            .block_on(hub::fetch_dataset_file(
                repo,
                file,
                hub_options,
                progress.clone(),
            ))
            .map(|(p, _)| p)
            .map_err(fail)
    };
    let card = match files.iter().any(|f| f == "README.md") {
        true => std::fs::read_to_string(fetch("README.md")?)
            .ok()
            .and_then(|t| front_matter(&t)),
        false => None,
    };
    let splits = split_files(&files, card.as_ref(), options.config.as_deref())?;
    let name = format!("{SCHEME}{repo}");
    if splits.is_empty() {
        return Err(DiscoveryError::NoImages(PathBuf::from(&name)));
    }
    let train_split = options
        .train_split
        .clone()
        .unwrap_or_else(|| "train".into());
    let val_split = match &options.val_split {
        Some(v) => Some(v.clone()),
        None => VAL_SPLITS
            .iter()
            .find(|v| splits.contains_key(**v))
            .map(|v| v.to_string()),
    };
    let missing = |split: &str| {
        DiscoveryError::Labels(format!(
            "{name} has no split {split:?} (splits: {})",
            splits.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    };
    if !splits.contains_key(&train_split) {
        return Err(missing(&train_split));
    }
    if let Some(v) = &val_split {
        if !splits.contains_key(v) {
            return Err(missing(v));
        }
    }
    let mut skipped = Vec::new();
    let mut reader = Reader {
        name: &name,
        card: card.as_ref(),
        label_column: options.label_column.as_deref(),
        budget_bytes,
        skipped: &mut skipped,
        class_names: None,
    };
    let mut train = Vec::new();
    for file in &splits[&train_split] {
        reader.read(&train_split, file, &fetch(file)?, &mut train)?;
    }
    let mut val = Vec::new();
    if let Some(v) = &val_split {
        for file in &splits[v] {
            reader.read(v, file, &fetch(file)?, &mut val)?;
        }
    }
    let class_names = reader.class_names.clone();
    let multi_label = train
        .iter()
        .chain(&val)
        .any(|(l, _)| matches!(l, Label::Many(_)));
    let (mut classes, untagged) = group(train, class_names.as_deref());
    let (mut given_val, untagged_val) = match val_split {
        Some(_) => {
            let (classes, untagged) = group(val, class_names.as_deref());
            (Some(classes), untagged)
        }
        None => (None, Vec::new()),
    };
    if let Some(v) = &mut given_val {
        align_classes(&mut classes, v);
    }
    let count = |c: &[ClassFiles]| c.iter().map(|c| c.files.len()).sum::<usize>();
    let mut rule = format!("{name} {train_split} {}", count(&classes));
    match (&val_split, &given_val) {
        (Some(v), Some(val)) => rule += &format!(" / {v} {}", count(val)),
        _ => rule += " (no validation split: tltui splits it)",
    }
    let mut candidates = vec![CandidateReport {
        path: PathBuf::from(&train_split),
        images: count(&classes),
        chosen: true,
        reason: format!("the training split ({} files)", splits[&train_split].len()),
    }];
    for (split, list) in &splits {
        if *split == train_split {
            continue;
        }
        let used = Some(split) == val_split.as_ref();
        candidates.push(CandidateReport {
            path: PathBuf::from(split),
            images: if used {
                given_val.as_deref().map_or(0, count)
            } else {
                0
            },
            chosen: used,
            reason: if used {
                format!("the validation split ({} files)", list.len())
            } else {
                format!(
                    "{} split ({} files{}): not used for training or validation",
                    split,
                    list.len(),
                    split_rows(card.as_ref(), split)
                        .map_or(String::new(), |n| format!(", {n} rows"))
                )
            },
        });
    }
    for c in &candidates {
        if !c.chosen {
            rule += &format!(", {} not used", c.path.display());
        }
    }
    let discovery = Discovery {
        class_root: PathBuf::from(&name),
        rule,
        classes,
        given_val,
        skipped,
        ignored: 0,
        candidates,
        corrections: Vec::new(),
        tagging: multi_label.then_some(Tagging {
            untagged,
            untagged_val,
        }),
    };
    let least = if multi_label { 1 } else { 2 };
    if discovery
        .classes
        .iter()
        .filter(|c| !c.files.is_empty())
        .count()
        < least
    {
        return match discovery.classes.first() {
            Some(c) => Err(DiscoveryError::OneClass {
                path: PathBuf::from(&name),
                class: c.name.clone(),
            }),
            None => Err(DiscoveryError::NoImages(PathBuf::from(&name))),
        };
    }
    Ok((discovery, warnings))
}

/// Images of one split as (label, virtual path).
type Labelled = Vec<(Label, PathBuf)>;

/// Reads shards, remembering the class names and what it skipped.
struct Reader<'a> {
    name: &'a str,
    card: Option<&'a serde_yaml_ng::Value>,
    label_column: Option<&'a str>,
    budget_bytes: u64,
    skipped: &'a mut Vec<Skipped>,
    class_names: Option<Vec<String>>,
}

impl Reader<'_> {
    /// Reads the rows of the shard `file` (local copy `local`) of `split` into `out`; a shard
    /// that cannot be read is reported in `skipped`.
    fn read(
        &mut self,
        split: &str,
        file: &str,
        local: &Path,
        out: &mut Labelled,
    ) -> Result<(), DiscoveryError> {
        let shard_name = file.rsplit('/').next().unwrap_or(file);
        let report = |reason: String| Skipped {
            path: PathBuf::from(format!("{}/{file}", self.name)),
            reason,
        };
        let schema = match parquet::schema(local) {
            Ok(s) => s,
            Err(e) => {
                self.skipped.push(report(format!(
                    "unreadable parquet shard, its rows left out: {e}"
                )));
                return Ok(());
            }
        };
        let features = schema
            .features
            .as_ref()
            .and_then(|f| f.pointer("/info/features"));
        let image = features
            .and_then(|f| f.as_object())
            .and_then(|f| {
                f.iter()
                    .find(|(_, v)| v["_type"] == "Image")
                    .map(|(k, _)| k.clone())
            })
            .or_else(|| {
                schema
                    .columns
                    .iter()
                    .find_map(|c| c.strip_suffix(".bytes").map(str::to_owned))
            })
            .ok_or_else(|| {
                DiscoveryError::Labels(format!(
                    "{}/{file} has no image column (an Image feature or a struct with bytes)",
                    self.name
                ))
            })?;
        let label = match self.label_column {
            Some(l) => l.to_string(),
            None => features
                .and_then(|f| f.as_object())
                .and_then(|f| {
                    f.iter()
                        .find(|(_, v)| class_label(v).is_some())
                        .map(|(k, _)| k.clone())
                })
                .or_else(|| {
                    schema
                        .columns
                        .iter()
                        .find(|c| LABEL_NAMES.contains(&c.to_lowercase().as_str()))
                        .cloned()
                })
                .ok_or_else(|| {
                    DiscoveryError::Labels(format!(
                        "{}/{file} has no label column (a ClassLabel, or one of {}; say which with --label-column; columns: {})",
                        self.name,
                        LABEL_NAMES.join(", "),
                        schema.columns.join(", ")
                    ))
                })?,
        };
        // A list column's values are the leaf below it (`labels.list.element`).
        let leaf = match schema.columns.iter().find(|c| **c == label) {
            Some(c) => c.clone(),
            None => schema
                .columns
                .iter()
                .find(|c| c.starts_with(&format!("{label}.")))
                .cloned()
                .ok_or_else(|| {
                    DiscoveryError::Labels(format!(
                        "{}/{file} has no column {label:?} (columns: {})",
                        self.name,
                        schema.columns.join(", ")
                    ))
                })?,
        };
        if self.class_names.is_none() {
            self.class_names = features
                .and_then(|f| f.get(&label))
                .and_then(class_label)
                .and_then(|l| l.get("names"))
                .and_then(|n| serde_json::from_value::<Vec<String>>(n.clone()).ok())
                .or_else(|| card_class_names(self.card, &label));
        }
        let name_column = format!("{image}.path");
        let name_column = schema.columns.contains(&name_column).then_some(name_column);
        let rows = match parquet::rows(local, &leaf, name_column.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                self.skipped.push(report(format!(
                    "unreadable parquet shard, its rows left out: {e}"
                )));
                return Ok(());
            }
        };
        let mut seen: HashSet<PathBuf> = out.iter().map(|(_, p)| p.clone()).collect();
        let mut registered = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let stored = row
                .name
                .as_deref()
                .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_string())
                .filter(|n| !n.is_empty());
            let mut path = PathBuf::from(format!(
                "{}/{split}/{}",
                self.name,
                stored
                    .clone()
                    .unwrap_or_else(|| format!("{shard_name}#{i}"))
            ));
            if !seen.insert(path.clone()) {
                path = PathBuf::from(format!("{}/{split}/{shard_name}#{i}", self.name));
                seen.insert(path.clone());
            }
            match &row.label {
                Some(Label::Index(n)) if *n < 0 => self.skipped.push(Skipped {
                    path,
                    reason: format!("unlabelled ({label} = {n})"),
                }),
                None => self.skipped.push(Skipped {
                    path,
                    reason: format!("unlabelled ({label} is null)"),
                }),
                Some(l) => {
                    registered.push((path.clone(), row.group, row.index));
                    out.push((l.clone(), path));
                }
            }
        }
        parquet::register(
            local,
            &format!("{image}.bytes"),
            registered,
            self.budget_bytes,
        )
        .map_err(DiscoveryError::Labels)
    }
}

/// A `ClassLabel` feature, or the `ClassLabel` of a `Sequence`/`List` feature (multi-label).
fn class_label(feature: &serde_json::Value) -> Option<&serde_json::Value> {
    match feature["_type"].as_str()? {
        "ClassLabel" => Some(feature),
        "Sequence" | "List" | "LargeList" => {
            let inner = &feature["feature"];
            (inner["_type"] == "ClassLabel").then_some(inner)
        }
        _ => None,
    }
}

/// Groups labelled images by class: `ClassLabel` indices in the order of `names`, text labels
/// in sorted order; an image with a list of labels is under each, and with an empty list among
/// the images with none (returned second). Files are sorted within each class.
fn group(images: Labelled, names: Option<&[String]>) -> (Vec<ClassFiles>, Vec<PathBuf>) {
    let mut by_label: BTreeMap<Label, Vec<PathBuf>> = BTreeMap::new();
    let mut untagged = Vec::new();
    for (label, path) in images {
        match label {
            Label::Many(list) if list.is_empty() => untagged.push(path),
            Label::Many(list) => {
                for l in list {
                    by_label.entry(l).or_default().push(path.clone());
                }
            }
            one => by_label.entry(one).or_default().push(path),
        }
    }
    untagged.sort();
    let name_of = |label: &Label| match label {
        Label::Index(i) => names
            .and_then(|n| n.get(*i as usize).cloned())
            .unwrap_or_else(|| i.to_string()),
        Label::Text(t) => t.clone(),
        Label::Many(_) => unreachable!("lists are spread over their labels"),
    };
    let mut classes: Vec<ClassFiles> = by_label
        .into_iter()
        .map(|(label, mut files)| {
            files.sort();
            ClassFiles {
                name: name_of(&label),
                files,
            }
        })
        .collect();
    // Every name of a ClassLabel is a class, with images or not, so both splits align.
    if let Some(names) = names {
        for n in names {
            if !classes.iter().any(|c| &c.name == n) {
                classes.push(ClassFiles {
                    name: n.clone(),
                    files: Vec::new(),
                });
            }
        }
        classes.sort_by_key(|c| {
            names
                .iter()
                .position(|n| *n == c.name)
                .unwrap_or(usize::MAX)
        });
    }
    (classes, untagged)
}

/// The YAML front matter of a dataset card.
fn front_matter(card: &str) -> Option<serde_yaml_ng::Value> {
    let rest = card.strip_prefix("---")?;
    let end = rest.find("\n---")?;
    serde_yaml_ng::from_str(&rest[..end]).ok()
}

/// The `ClassLabel` names of `column` in the card's `dataset_info.features`.
fn card_class_names(card: Option<&serde_yaml_ng::Value>, column: &str) -> Option<Vec<String>> {
    let infos = card?.get("dataset_info")?;
    let list = match infos {
        serde_yaml_ng::Value::Sequence(s) => s.clone(),
        one => vec![one.clone()],
    };
    list.iter().find_map(|info| {
        let features = info.get("features")?.as_sequence()?;
        let feature = features
            .iter()
            .find(|f| f.get("name").and_then(|n| n.as_str()) == Some(column))?;
        // `dtype: class_label:` for a ClassLabel, `list:`/`sequence: class_label:` for a list.
        let names = ["dtype", "list", "sequence"]
            .iter()
            .find_map(|key| feature.get(*key)?.get("class_label")?.get("names"))?;
        match names {
            serde_yaml_ng::Value::Mapping(m) => {
                let mut pairs: Vec<(i64, String)> = m
                    .iter()
                    .filter_map(|(k, v)| {
                        let k = k.as_i64().or_else(|| k.as_str()?.parse().ok())?;
                        Some((k, v.as_str()?.to_string()))
                    })
                    .collect();
                pairs.sort();
                Some(pairs.into_iter().map(|(_, v)| v).collect())
            }
            serde_yaml_ng::Value::Sequence(s) => {
                s.iter().map(|v| v.as_str().map(str::to_owned)).collect()
            }
            _ => None,
        }
    })
}

/// The row count the card gives for `split`.
fn split_rows(card: Option<&serde_yaml_ng::Value>, split: &str) -> Option<u64> {
    let info = card?.get("dataset_info")?;
    let info = info.as_sequence().and_then(|s| s.first()).unwrap_or(info);
    info.get("splits")?
        .as_sequence()?
        .iter()
        .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(split))?
        .get("num_examples")?
        .as_u64()
}

/// The parquet files of each split, from the card's `configs` or the file names.
fn split_files(
    files: &[String],
    card: Option<&serde_yaml_ng::Value>,
    config: Option<&str>,
) -> Result<BTreeMap<String, Vec<String>>, DiscoveryError> {
    let parquet: Vec<&String> = files.iter().filter(|f| f.ends_with(".parquet")).collect();
    let configs = card
        .and_then(|c| c.get("configs"))
        .and_then(|c| c.as_sequence())
        .cloned()
        .unwrap_or_default();
    let config_name = |c: &serde_yaml_ng::Value| {
        c.get("config_name")
            .and_then(|n| n.as_str())
            .unwrap_or("default")
            .to_string()
    };
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !configs.is_empty() {
        let chosen = match config {
            Some(name) => configs
                .iter()
                .find(|c| config_name(c) == name)
                .ok_or_else(|| {
                    DiscoveryError::Labels(format!(
                        "the dataset has no config {name:?} (configs: {})",
                        configs
                            .iter()
                            .map(config_name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
            None => configs
                .iter()
                .find(|c| config_name(c) == "default")
                .unwrap_or(&configs[0]),
        };
        let patterns = |v: &serde_yaml_ng::Value| -> Vec<String> {
            match v {
                serde_yaml_ng::Value::String(s) => vec![s.clone()],
                serde_yaml_ng::Value::Sequence(s) => s
                    .iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let mut wanted: Vec<(String, Vec<String>)> = Vec::new();
        match chosen.get("data_files") {
            Some(serde_yaml_ng::Value::Sequence(list))
                if list.iter().all(|e| e.get("split").is_some()) =>
            {
                for e in list {
                    let split = e.get("split").and_then(|s| s.as_str()).unwrap_or("train");
                    wanted.push((
                        split.to_string(),
                        e.get("path").map(patterns).unwrap_or_default(),
                    ));
                }
            }
            Some(serde_yaml_ng::Value::Mapping(m)) => {
                for (k, v) in m {
                    if let Some(split) = k.as_str() {
                        wanted.push((split.to_string(), patterns(v)));
                    }
                }
            }
            Some(other) => wanted.push(("train".into(), patterns(other))),
            None => {}
        }
        for (split, pats) in wanted {
            let matched: Vec<String> = parquet
                .iter()
                .filter(|f| pats.iter().any(|p| glob_match(p, f)))
                .map(|f| f.to_string())
                .collect();
            if !matched.is_empty() {
                out.entry(split).or_default().extend(matched);
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
    }
    for f in parquet {
        let parts: Vec<&str> = f.split('/').collect();
        if let Some(c) = config {
            if parts.len() < 2 || parts[0] != c {
                continue;
            }
        }
        let stem = parts.last().unwrap_or(&"").trim_end_matches(".parquet");
        let from_name = stem.split(['-', '.', '_']).next().unwrap_or(stem);
        let split = std::iter::once(from_name)
            .chain(parts.iter().rev().skip(1).copied())
            .find(|p| super::names::is_split_name(p) || VAL_SPLITS.contains(p))
            .unwrap_or("train");
        out.entry(split.to_string()).or_default().push(f.clone());
    }
    Ok(out)
}

/// A `datasets`-style glob: `*` matches within a path part, `**` across parts, `?` one
/// character.
fn glob_match(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', b'*', rest @ ..] => {
                let rest = rest.strip_prefix(b"/").unwrap_or(rest);
                (0..=s.len()).any(|i| go(rest, &s[i..]))
            }
            [b'*', rest @ ..] => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..])),
            [b'?', rest @ ..] => !s.is_empty() && s[0] != b'/' && go(rest, &s[1..]),
            [c, rest @ ..] => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(
            "data/train-*",
            "data/train-00000-of-00003.parquet"
        ));
        assert!(!glob_match("data/train-*", "data/test-00000.parquet"));
        assert!(!glob_match("*.parquet", "data/x.parquet"));
        assert!(glob_match("**/*.parquet", "data/x.parquet"));
        assert!(glob_match(
            "data/validation-0000?-*",
            "data/validation-00000-of-00001.parquet"
        ));
    }

    #[test]
    fn splits_from_configs_and_from_names() {
        let files: Vec<String> = [
            "README.md",
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet",
            "data/test-00000-of-00001.parquet",
            "other/validation/0000.parquet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let by_name = split_files(&files, None, None).unwrap();
        assert_eq!(by_name["train"].len(), 2);
        assert_eq!(by_name["test"].len(), 1);
        assert_eq!(by_name["validation"], vec!["other/validation/0000.parquet"]);
        let card = front_matter(
            "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n  - split: holdout\n    path:\n    - data/test-*\n---\n# card\n",
        );
        let by_card = split_files(&files, card.as_ref(), None).unwrap();
        assert_eq!(by_card.keys().collect::<Vec<_>>(), vec!["holdout", "train"]);
        assert!(split_files(&files, card.as_ref(), Some("nope")).is_err());
    }

    #[test]
    fn class_names_from_the_card() {
        let card = front_matter(
            "---\ndataset_info:\n  features:\n  - name: labels\n    dtype:\n      class_label:\n        names:\n          '0': cat\n          '1': dog\n  splits:\n  - name: test\n    num_examples: 40\n---\n",
        );
        assert_eq!(
            card_class_names(card.as_ref(), "labels"),
            Some(vec!["cat".to_string(), "dog".to_string()])
        );
        assert_eq!(split_rows(card.as_ref(), "test"), Some(40));
        assert_eq!(
            parse_spec(Path::new("hf://datasets/a/b@v1"))
                .unwrap()
                .unwrap()
                .revision,
            "v1"
        );
        assert!(parse_spec(Path::new("a/b")).is_none());
    }
}
