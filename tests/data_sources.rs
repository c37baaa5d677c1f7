//! Every source of labelled images through the one entry point: Hub parquet datasets served by
//! the in-test Hub stand-in (listing, download, offline, a corrupt shard), the same images as a
//! folder, flat files labelled by name, and a label file found in the dataset folder.

mod common;

use common::hub_stub::{self, Fault, HubStub};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tltui::config::DuplicateMode;
use tltui::data::{Dataset, SourceOptions, SplitOptions};

fn split(val_fraction: f64) -> SplitOptions {
    SplitOptions {
        val_fraction,
        seed: 0,
        duplicates: DuplicateMode::Group,
    }
}

fn through(stub: &HubStub, cache: &Path) -> SourceOptions {
    SourceOptions {
        hub: hub_stub::options(stub, cache),
        ..SourceOptions::folders()
    }
}

/// (class, side) → sorted file names.
fn sides(ds: &Dataset) -> BTreeMap<(String, &'static str), Vec<String>> {
    let mut out: BTreeMap<(String, &'static str), Vec<String>> = BTreeMap::new();
    for (samples, side) in [(&ds.train, "train"), (&ds.val, "val")] {
        for s in samples {
            let name = s.path.file_name().unwrap().to_string_lossy().into_owned();
            out.entry((ds.class_names[s.class()].clone(), side))
                .or_default()
                .push(name);
        }
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

fn counts(ds: &Dataset) -> Vec<(String, usize, usize)> {
    ds.class_counts()
        .into_iter()
        .map(|c| (c.name, c.train, c.val))
        .collect()
}

fn hf(repo: &str) -> PathBuf {
    PathBuf::from(format!("hf://datasets/{repo}"))
}

#[test]
fn hub_dataset_uses_its_own_splits_reports_the_test_split_and_works_offline() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let stub = HubStub::start("none/none", vec![]);
    stub.serve_dataset_dir(
        "tltui-test/dog-cat-splits",
        &shared.join("hub/datasets/tltui-test/dog-cat-splits"),
    );
    let cache = tempfile::tempdir().unwrap();
    let source = through(&stub, cache.path());
    let ds = Dataset::open(
        &hf("tltui-test/dog-cat-splits"),
        &source,
        &split(0.25),
        u64::MAX,
    )
    .unwrap();
    assert_eq!(
        counts(&ds),
        vec![("cat".into(), 60, 20), ("dog".into(), 60, 20)]
    );
    assert!(ds.given_split);
    assert!(ds.rule.contains("train 120 / validation 40"), "{}", ds.rule);
    assert!(ds.rule.contains("test not used"), "{}", ds.rule);
    let test = ds
        .report
        .candidates
        .iter()
        .find(|c| c.path == Path::new("test"))
        .unwrap();
    assert!(test.reason.contains("2 files, 40 rows"), "{}", test.reason);
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    // The files landed in the Hugging Face cache's dataset layout.
    let snapshot = cache
        .path()
        .join("datasets--tltui-test--dog-cat-splits/snapshots");
    assert!(snapshot.is_dir());
    let gets = stub.gets.load(std::sync::atomic::Ordering::Relaxed);
    assert!(gets >= 5, "README and four shards downloaded, {gets} GETs");

    // A second open reads the cache; with the Hub gone it says so and still works.
    stub.stop();
    let ds = Dataset::open(
        &hf("tltui-test/dog-cat-splits"),
        &source,
        &split(0.25),
        u64::MAX,
    )
    .unwrap();
    assert_eq!(ds.train.len() + ds.val.len(), 160);
    assert!(
        ds.warnings.iter().any(|w| w.contains("unreachable")),
        "{:?}",
        ds.warnings
    );
    // Without a cache an unreachable Hub is one clear error.
    let empty = tempfile::tempdir().unwrap();
    let err = Dataset::open(
        &hf("tltui-test/dog-cat-splits"),
        &through(&stub, empty.path()),
        &split(0.25),
        u64::MAX,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("datasets/tltui-test/dog-cat-splits"), "{err}");
    assert!(err.contains("not in the Hugging Face cache"), "{err}");
}

#[test]
fn hub_dataset_retries_and_reports_a_corrupt_shard() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let dir = shared.join("hub/datasets/tltui-test/dog-cat-splits");
    let stub = HubStub::start("none/none", vec![]);
    let mut files = std::collections::HashMap::new();
    for f in ["README.md", "data/validation-00000-of-00001.parquet"] {
        files.insert(f.to_string(), std::fs::read(dir.join(f)).unwrap());
    }
    for i in 0..3 {
        let f = format!("data/train-0000{i}-of-00003.parquet");
        let mut body = std::fs::read(dir.join(&f)).unwrap();
        if i == 1 {
            body.truncate(body.len() / 2);
        }
        files.insert(f, body);
    }
    stub.set_dataset("tltui-test/broken", files);
    stub.set_fault(Fault::ServerErrors(1));
    let cache = tempfile::tempdir().unwrap();
    let ds = Dataset::open(
        &hf("tltui-test/broken"),
        &through(&stub, cache.path()),
        &split(0.25),
        u64::MAX,
    )
    .unwrap();
    let bad: Vec<_> = ds
        .skipped
        .iter()
        .filter(|s| {
            s.path
                .to_string_lossy()
                .ends_with("train-00001-of-00003.parquet")
        })
        .collect();
    assert_eq!(bad.len(), 1, "{:?}", ds.skipped);
    assert!(
        bad[0].reason.contains("unreadable parquet shard"),
        "{}",
        bad[0].reason
    );
    let train: usize = ds.class_counts().iter().map(|c| c.train).sum();
    assert_eq!(train, 80, "two of three training shards");
    assert_eq!(ds.val.len(), 40);
}

#[test]
fn parquet_dog_cat_splits_as_the_folder_and_flat_names_do() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let folder = shared.join("datasets/Dog-Cat-Classifier");
    let from_folder =
        Dataset::open(&folder, &SourceOptions::folders(), &split(0.25), u64::MAX).unwrap();
    assert_eq!(
        counts(&from_folder),
        vec![("cat".into(), 525, 175), ("dog".into(), 524, 175)]
    );

    let stub = HubStub::start("none/none", vec![]);
    stub.serve_dataset_dir(
        "tltui-test/dog-cat",
        &shared.join("hub/datasets/tltui-test/dog-cat"),
    );
    let cache = tempfile::tempdir().unwrap();
    let mut source = through(&stub, cache.path());
    // A budget far below the 31 MB of images: row groups come and go.
    source.cache_budget_bytes = 4 << 20;
    let from_hub =
        Dataset::open(&hf("tltui-test/dog-cat"), &source, &split(0.25), u64::MAX).unwrap();
    assert_eq!(from_hub.class_names, from_folder.class_names);
    assert!(!from_hub.given_split);
    assert_eq!(sides(&from_hub), sides(&from_folder));
    assert_eq!(
        from_hub.report.duplicates.len(),
        from_folder.report.duplicates.len()
    );

    let flat = tempfile::tempdir().unwrap();
    for class in ["cat", "dog"] {
        for f in std::fs::read_dir(folder.join("Data/Train_Data").join(class)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, flat.path().join(f.file_name().unwrap())).unwrap();
        }
    }
    let from_names = Dataset::open(
        flat.path(),
        &SourceOptions::folders(),
        &split(0.25),
        u64::MAX,
    )
    .unwrap();
    assert_eq!(from_names.rule, "labels from file names: <class>.<n>.jpg");
    assert_eq!(sides(&from_names), sides(&from_folder));
}

#[test]
fn a_label_file_in_the_dataset_folder_is_used_and_named() {
    let t = tempfile::tempdir().unwrap();
    common::shapes_dataset(&t.path().join("pictures"), &["a", "b"], 6);
    // The class folders are named a and b; the label file says otherwise.
    let mut csv = String::from("image;kind\n");
    for (class, label) in [("a", "round"), ("b", "square")] {
        for i in 0..6 {
            csv += &format!("pictures\\{class}\\{i}.png;{label}\n");
        }
    }
    csv += "pictures\\a\\missing.png;round\n";
    std::fs::write(t.path().join("labels.csv"), csv).unwrap();
    let ds = Dataset::open(t.path(), &SourceOptions::folders(), &split(0.25), u64::MAX).unwrap();
    assert_eq!(ds.class_names, vec!["round", "square"]);
    assert_eq!(ds.rule, "labels from labels.csv (columns image, kind)");
    assert_eq!(ds.skipped.len(), 1);
    assert!(ds.skipped[0].reason.contains("row 14"), "{:?}", ds.skipped);
    assert!(ds.report.candidates[0]
        .reason
        .contains("the one label file"));
}

/// A Hub dataset whose label feature is `Sequence(ClassLabel)` (written by the `datasets`
/// library itself, `scripts/make_hub_multilabel.py`) is read as multi-label without being told:
/// each image under each of its labels, its own validation split kept, images with an empty
/// list counted as having no label.
#[test]
fn a_hub_dataset_of_label_lists_is_multi_label() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let Some(python) = common::python_with("TLTUI_PYTHON", &["datasets", "PIL"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("hub-multilabel");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make_hub_multilabel.py");
    common::succeeded(
        std::process::Command::new(&python)
            .arg(&script)
            .arg(&repo)
            .arg("--src")
            .arg(shared.join("datasets/Dog-Cat-Classifier/Data/Train_Data")),
    );
    let stub = HubStub::start("none/none", vec![]);
    stub.serve_dataset_dir("tltui-test/multi", &repo);
    let cache = tempfile::tempdir().unwrap();
    let ds = Dataset::open(
        &hf("tltui-test/multi"),
        &through(&stub, cache.path()),
        &split(0.25),
        u64::MAX,
    )
    .unwrap();
    assert_eq!(ds.task, tltui::data::Task::MultiLabel);
    assert_eq!(ds.class_names, vec!["cat", "dog"]);
    assert!(ds.given_split);
    let report = ds.report.multi_label.as_ref().unwrap();
    assert_eq!((report.untagged_train, report.untagged_val), (1, 1));
    assert_eq!(report.frequent_pairs[0].images, 10, "{report:?}");
    assert_eq!((ds.train.len(), ds.val.len()), (24, 12));
    let counts = counts(&ds);
    assert_eq!(counts, vec![("cat".into(), 15, 7), ("dog".into(), 15, 7)]);
}
