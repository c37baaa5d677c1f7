//! `pip install tltui`: the wheel maturin builds from pyproject.toml (`bindings = "bin"`), installed
//! into a fresh virtual environment without an index, puts a `tltui` there that prints the crate's
//! version and trains a headless warm-up on generated data.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the release wheel with `python`'s maturin into `out` and returns its path. The build
/// runs in the crate's own `target/` (maturin's `cargo rustc --profile release` for the host),
/// so it reuses `target/release` from `cargo build --release` and leaves it for the next one.
fn build_wheel(python: &Path, out: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    common::succeeded(
        Command::new(python)
            .args(["-m", "maturin", "build", "--release", "--locked", "--out"])
            .arg(out)
            .current_dir(root)
            .env("CARGO_TARGET_DIR", root.join("target")),
    );
    let wheels: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    assert_eq!(wheels.len(), 1, "{wheels:?}");
    let name = wheels[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let prefix = format!("tltui-{}-py3-none-", env!("CARGO_PKG_VERSION"));
    assert!(name.starts_with(&prefix), "{name}");
    wheels[0].clone()
}

/// The JSON objects among `stdout`'s lines.
fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The release wheel, pip-installed into a fresh venv, prints `tltui VERSION` and runs a headless
/// warm-up (Lite0 of random weights) to its summary and checkpoint.
#[test]
fn pip_installed_wheel_runs_a_warmup() {
    let Some(python) = common::python_with("TLTUI_PYTHON", &["maturin"]) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let wheel = build_wheel(&python, &t.path().join("wheels"));

    let venv = t.path().join("venv");
    common::succeeded(Command::new(&python).args(["-m", "venv"]).arg(&venv));
    common::succeeded(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "--no-index", "--quiet"])
            .arg(&wheel),
    );
    let tltui = venv.join("bin/tltui");

    let out = common::succeeded(Command::new(&tltui).arg("--version"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().next(),
        Some(format!("tltui {}", env!("CARGO_PKG_VERSION")).as_str()),
        "{stdout}"
    );

    let run = common::shapes_checkpoint_with(&tltui, t.path(), &["red", "blue"], 16, &["--json"]);
    let events = json_lines(&run.stdout);
    let summary = events.last().unwrap_or_else(|| panic!("no JSON lines"));
    assert_eq!(summary["event"], "summary", "{summary}");
    assert!(summary["error"].is_null(), "{summary}");
    let checkpoint = summary["checkpoint"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no checkpoint: {summary}"));
    assert!(
        checkpoint.starts_with(run.checkpoint.parent().unwrap()),
        "{summary}"
    );
    assert!(checkpoint.is_file(), "{summary}");
}
