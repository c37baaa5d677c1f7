//! The label-issue finder on a copy of Dog-Cat with a tenth of each class's labels flipped (the
//! truth kept outside the copy): `inspect --label-issues`, the corrected label file it writes and
//! that file read back; the headless run's finder and its run-directory file; the corrections a
//! review saves, applied by the next run (and ignored on request).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Images taken from each class, and how many of them are filed under the other class.
const PER_CLASS: usize = 120;
const FLIPPED: usize = 12;

fn tltui(args: &[&OsStr], cache: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tltui"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A copy of `PER_CLASS` images of each class under `dest` (names that do not give the class
/// away), `FLIPPED` of each under the other class. Returns the flipped copies.
fn flipped_copy(train: &Path, dest: &Path) -> BTreeSet<PathBuf> {
    let mut flipped = BTreeSet::new();
    for (class, other) in [("cat", "dog"), ("dog", "cat")] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(train.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        files.sort();
        // Every tenth image is flipped: spread over the class, not its head.
        for (i, src) in files.iter().take(PER_CLASS).enumerate() {
            let flip = i % (PER_CLASS / FLIPPED) == 0;
            let folder = dest.join(if flip { other } else { class });
            std::fs::create_dir_all(&folder).unwrap();
            let origin = if class == "cat" { "a" } else { "b" };
            let to = folder.join(format!("{origin}{i:03}.jpg"));
            std::fs::copy(src, &to).unwrap();
            if flip {
                flipped.insert(to);
            }
        }
    }
    flipped
}

#[test]
fn flipped_labels_are_found_fixed_and_read_back() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let train = shared.join("datasets/Dog-Cat-Classifier/Data/Train_Data");
    let copy = dir.path().join("noisy");
    let flipped = flipped_copy(&train, &copy);
    let weights = common::lite0_dir(&shared).join("model.safetensors");
    let cache = dir.path().join("cache");
    let fixed = dir.path().join("fixed.csv");
    let (ok, out, err) = tltui(
        &[
            OsStr::new("inspect"),
            copy.as_os_str(),
            OsStr::new("--label-issues"),
            OsStr::new("--json"),
            OsStr::new("--weights"),
            weights.as_os_str(),
            OsStr::new("--write-labels"),
            fixed.as_os_str(),
        ],
        &cache,
    );
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let issues = &report["label_issues"];
    assert_eq!(issues["images"], 2 * PER_CLASS);
    assert_eq!(issues["folds"], 5);
    assert_eq!(issues["features"]["state"], "computed");
    assert_eq!(issues["features"]["images"], 2 * PER_CLASS);
    let flagged: Vec<&serde_json::Value> = issues["flagged"].as_array().unwrap().iter().collect();
    let found: BTreeSet<PathBuf> = flagged
        .iter()
        .map(|f| PathBuf::from(f["path"].as_str().unwrap()))
        .collect();
    let hits = found.intersection(&flipped).count();
    let (recall, precision) = (
        hits as f64 / flipped.len() as f64,
        hits as f64 / found.len().max(1) as f64,
    );
    assert!(
        recall >= 0.8 && precision >= 0.8,
        "recall {recall}, precision {precision}: {flagged:?}"
    );
    for f in &flagged {
        assert_ne!(f["given"], f["suggested"]);
        assert!(f["suggested_probability"].as_f64() > f["given_probability"].as_f64());
    }
    let ranked: Vec<f64> = flagged
        .iter()
        .map(|f| f["given_probability"].as_f64().unwrap())
        .collect();
    assert!(ranked.windows(2).all(|w| w[0] <= w[1]), "{ranked:?}");

    // The corrected file: every image once, the flagged ones under the suggested class.
    let text = std::fs::read_to_string(&fixed).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("file_name,label"));
    let rows: BTreeMap<&str, &str> = lines.map(|l| l.split_once(',').unwrap()).collect();
    assert_eq!(rows.len(), 2 * PER_CLASS);
    for f in &flagged {
        let path = PathBuf::from(f["path"].as_str().unwrap());
        let name = path.strip_prefix(&copy).unwrap().to_str().unwrap();
        assert_eq!(rows[name], f["suggested"].as_str().unwrap());
    }

    // Read back with --labels: the classes the file gives, and again from the feature cache.
    let (ok, out, err) = tltui(
        &[
            OsStr::new("inspect"),
            copy.as_os_str(),
            OsStr::new("--labels"),
            fixed.as_os_str(),
            OsStr::new("--label-issues"),
            OsStr::new("--json"),
            OsStr::new("--weights"),
            weights.as_os_str(),
        ],
        &cache,
    );
    assert!(ok, "{err}");
    let again: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        again["source"].as_str().unwrap().contains("fixed.csv"),
        "{}",
        again["source"]
    );
    let counts: BTreeMap<String, u64> = common::class_totals(&again).into_iter().collect();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for label in rows.values() {
        *want.entry(label.to_string()).or_default() += 1;
    }
    assert_eq!(counts, want);
    assert_eq!(again["label_issues"]["features"]["state"], "loaded");
    let left = again["label_issues"]["flagged"].as_array().unwrap().len();
    assert!(left < flagged.len(), "{left} still flagged after the fix");

    // --fix exclude leaves the flagged images out.
    let excluded = dir.path().join("excluded.csv");
    let (ok, _, err) = tltui(
        &[
            OsStr::new("inspect"),
            copy.as_os_str(),
            OsStr::new("--label-issues"),
            OsStr::new("--weights"),
            weights.as_os_str(),
            OsStr::new("--write-labels"),
            excluded.as_os_str(),
            OsStr::new("--fix"),
            OsStr::new("exclude"),
        ],
        &cache,
    );
    assert!(ok, "{err}");
    let rows = std::fs::read_to_string(&excluded).unwrap().lines().count() - 1;
    assert_eq!(rows, 2 * PER_CLASS - flagged.len());
}

#[test]
fn a_headless_run_finds_the_flipped_labels_and_leaves_label_issues_csv() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let train = shared.join("datasets/Dog-Cat-Classifier/Data/Train_Data");
    let copy = dir.path().join("noisy");
    let flipped = flipped_copy(&train, &copy);
    let weights = common::lite0_dir(&shared).join("model.safetensors");
    let run = dir.path().join("run");
    let (ok, out, err) = tltui(
        &[
            copy.as_os_str(),
            OsStr::new("--headless"),
            OsStr::new("--json"),
            OsStr::new("--label-issues"),
            OsStr::new("--warmup-epochs"),
            OsStr::new("1"),
            OsStr::new("--finetune-epochs"),
            OsStr::new("0"),
            OsStr::new("--weights"),
            weights.as_os_str(),
            OsStr::new("--checkpoint-dir"),
            run.as_os_str(),
        ],
        &dir.path().join("cache"),
    );
    assert!(ok, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |name: &str| events.iter().position(|e| e["event"] == name);
    let issues = &events[at("label_issues").expect("a label_issues event")];
    // After the feature pass, before the warm-up trains.
    assert!(at("features").unwrap() < at("label_issues").unwrap());
    assert!(at("label_issues").unwrap() < at("batch").unwrap());
    assert_eq!(issues["images"], 2 * PER_CLASS);
    let found: BTreeSet<PathBuf> = issues["flagged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| PathBuf::from(f["path"].as_str().unwrap()))
        .collect();
    let hits = found.intersection(&flipped).count();
    assert!(
        hits * 10 >= flipped.len() * 8,
        "{hits} of {}",
        flipped.len()
    );

    let csv = std::fs::read_to_string(run.join("label_issues.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("path,issue,given,suggested,given_probability,suggested_probability,reason")
    );
    let mislabelled = lines.filter(|l| l.contains(",mislabelled,")).count();
    assert_eq!(mislabelled, found.len());
}

#[test]
fn saved_corrections_are_applied_by_the_next_run_and_ignored_on_request() {
    use tltui::data::corrections::{Correction, CorrectionsFile, Decision};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pets");
    common::shapes_dataset(&data, &["circle", "square"], 6);
    let cache = dir.path().join("cache");
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("circle"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let key = |p: &Path| {
        p.strip_prefix(&data)
            .unwrap()
            .to_str()
            .unwrap()
            .replace('\\', "/")
    };
    let mut saved =
        CorrectionsFile::open(CorrectionsFile::path_for(&cache.join("tltui"), &data)).unwrap();
    for (file, decision, label) in [
        (&files[0], Decision::Relabel, Some("square")),
        (&files[1], Decision::Exclude, None),
        (&files[2], Decision::Keep, None),
    ] {
        saved
            .decide(Correction {
                file: key(file),
                decision,
                label: label.map(String::from),
            })
            .unwrap();
    }
    let inspect = |extra: &[&str]| {
        let mut args = vec![
            OsStr::new("inspect"),
            data.as_os_str(),
            OsStr::new("--json"),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let (ok, out, err) = tltui(&args, &cache);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    let total = |r: &serde_json::Value, class: usize| {
        let c = &r["classes"][class];
        c["train"].as_u64().unwrap() + c["val"].as_u64().unwrap()
    };
    let applied = inspect(&[]);
    assert_eq!(
        (total(&applied, 0), total(&applied, 1)),
        (4, 7),
        "{applied}"
    );
    assert_eq!(applied["corrections"].as_array().unwrap().len(), 3);
    let said: Vec<&str> = applied["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .filter(|w| w.starts_with("applied 3 label correction(s)"))
        .collect();
    assert_eq!(said.len(), 1, "{applied}");
    assert!(
        said[0].contains("1 relabelled, 1 left out") && said[0].contains("--ignore-corrections")
    );

    let ignored = inspect(&["--ignore-corrections"]);
    assert_eq!((total(&ignored, 0), total(&ignored, 1)), (6, 6));
    assert!(ignored.get("corrections").is_none());
}
