//! The run directory of a real headless run on generated data: `metrics.csv` equal to the
//! `validation` events, `batches.csv`, the pictures, TensorBoard's event file (read back by
//! `scripts/check_runlog.py` with TensorBoard's own `EventAccumulator` when Python has
//! `tensorboard`), and what SIGTERM mid-epoch leaves.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tltui::rundir::{tensorboard, BATCHES_CSV, METRICS_CSV, PICTURES, RUNS_DIR};

/// A dataset, a random small model, a checkpoint directory and a feature cache.
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let data = dir.join("data");
    common::shapes_dataset(&data, &["red", "blue"], 24);
    let weights = common::write_random_model(&dir.join("model"), "tf_efficientnet_lite0", 64);
    (data, weights, dir.join("ck"))
}

fn headless(data: &Path, weights: &Path, ck: &Path, cache: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tltui"));
    cmd.arg(data)
        .args(["--headless", "--json", "--batch-size", "8", "--weights"])
        .arg(weights)
        .arg("--checkpoint-dir")
        .arg(ck)
        .args(extra)
        .env("XDG_CACHE_HOME", cache)
        .env("HF_HUB_OFFLINE", "1");
    cmd
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_kind<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

/// `metrics.csv`'s rows against the validation events: phase, epoch, loss, accuracy, clean.
fn assert_metrics_match(ck: &Path, validations: &[&serde_json::Value]) {
    let rows = csv_rows(&ck.join(METRICS_CSV));
    assert_eq!(rows.len(), validations.len(), "{rows:?}");
    for (row, v) in rows.iter().zip(validations) {
        assert_eq!(row[0], v["phase"].as_str().unwrap_or(""));
        assert_eq!(row[1], v["epoch"].to_string());
        for (col, key) in [(6, "loss"), (7, "accuracy")] {
            let csv: f32 = row[col].parse().unwrap();
            assert_eq!(csv, v[key].as_f64().unwrap() as f32, "{key} of {row:?}");
        }
    }
}

/// The scalars of the run's event file: (tag, step, value).
fn scalars(ck: &Path) -> Vec<(String, i64, f32)> {
    let files: Vec<PathBuf> = std::fs::read_dir(ck.join(RUNS_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    tensorboard::read_events(&files[0])
        .unwrap()
        .into_iter()
        .flat_map(|e| match e.what {
            Some(tensorboard::What::Summary(s)) => s
                .value
                .into_iter()
                .map(|v| (v.tag, e.step, v.simple_value.unwrap()))
                .collect(),
            _ => vec![],
        })
        .collect()
}

/// The Python that has `tensorboard`: `TLTUI_PYTHON`, else `python3`; `None` (with the
/// reason printed) when there is none, which fails under CI.
fn tensorboard_python() -> Option<String> {
    let python = std::env::var("TLTUI_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let why = format!("{python} cannot import tensorboard (pip install tensorboard)");
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipping TensorBoard's reader: {why}");
    None
}

#[test]
fn a_headless_run_leaves_csv_pictures_and_events_that_tensorboard_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (data, weights, ck) = setup(dir.path());
    let out = headless(
        &data,
        &weights,
        &ck,
        &dir.path().join("cache"),
        &["--warmup-epochs", "3", "--finetune-epochs", "1"],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = json_lines(&stdout);
    let validations = of_kind(&events, "validation");
    assert_eq!(validations.len(), 4);
    assert_metrics_match(&ck, &validations);
    let batches = of_kind(&events, "batch");
    assert_eq!(csv_rows(&ck.join(BATCHES_CSV)).len(), batches.len());
    let run_log_warnings = of_kind(&events, "warning")
        .into_iter()
        .filter(|w| w["message"].as_str().unwrap_or("").starts_with("run log"))
        .count();
    assert_eq!(run_log_warnings, 0, "{stdout}");
    for name in PICTURES {
        let img = image::open(ck.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(img.width() >= 400, "{name}");
    }
    let scalars = scalars(&ck);
    let val: Vec<f32> = scalars
        .iter()
        .filter(|s| s.0 == "val/accuracy")
        .map(|s| s.2)
        .collect();
    let want: Vec<f32> = validations
        .iter()
        .map(|v| v["accuracy"].as_f64().unwrap() as f32)
        .collect();
    assert_eq!(val, want);

    if let Some(python) = tensorboard_python() {
        let events_file = dir.path().join("events.jsonl");
        std::fs::write(&events_file, stdout.as_bytes()).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_runlog.py");
        let check = Command::new(python)
            .arg(script)
            .arg(&ck)
            .arg(&events_file)
            .arg("--pictures")
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(check.status.success(), "{said}");
        assert!(said.contains("EventAccumulator reads back"), "{said}");
        eprintln!("{said}");
    }
}

#[test]
fn sigterm_mid_epoch_keeps_the_log_up_to_the_last_finished_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (data, weights, ck) = setup(dir.path());
    let mut child = headless(
        &data,
        &weights,
        &ck,
        &dir.path().join("cache"),
        &["--warmup-epochs", "1", "--finetune-epochs", "50"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut seen = Vec::new();
    let mut signalled = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        // Two fine-tune epochs done and the third under way: stop it mid-epoch.
        let finetune_validations = seen
            .iter()
            .filter(|e: &&serde_json::Value| e["event"] == "validation" && e["phase"] == "finetune")
            .count();
        if !signalled && finetune_validations == 2 && event["event"] == "batch" {
            // SAFETY: signalling the child this test started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            signalled = true;
        }
        seen.push(event);
    }
    let status = child.wait().unwrap();
    assert!(signalled, "the run ended before the third epoch");
    assert_eq!(status.code(), Some(130));
    let validations = of_kind(&seen, "validation");
    assert!(validations.len() >= 3, "{}", validations.len());
    assert_metrics_match(&ck, &validations);
    let batches = of_kind(&seen, "batch");
    assert_eq!(csv_rows(&ck.join(BATCHES_CSV)).len(), batches.len());
    let val_steps: Vec<i64> = scalars(&ck)
        .into_iter()
        .filter(|s| s.0 == "val/loss")
        .map(|s| s.1)
        .collect();
    assert_eq!(val_steps.len(), validations.len());
    let last_row = csv_rows(&ck.join(METRICS_CSV)).pop().unwrap();
    assert_eq!(last_row[2], val_steps.last().unwrap().to_string());
}
