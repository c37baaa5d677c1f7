//! The terminal is always restored: after a panic in the engine (the dashboard survives and shows
//! it), a panic in the dashboard itself, and SIGTERM.

mod common;

use common::tmux::{tltui_pid, Tmux};
use std::path::Path;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

fn dashboard(tag: &str, dir: &Path, fault: &str) -> Tmux {
    let dataset = dir.join("shapes");
    common::shapes_dataset(&dataset, &["red", "blue"], 8);
    let weights = common::write_random_model(&dir.join("model"), "tf_efficientnet_lite0", 64);
    let command = format!(
        "env RUST_BACKTRACE=0 TLTUI_FAULT={fault} XDG_CACHE_HOME={cache} {bin} {dataset} --weights {weights} --checkpoint-dir {ck} --start warmup; \
         echo TLTUI_EXIT=$?; sleep 60",
        cache = dir.join("cache").display(),
        bin = env!("CARGO_BIN_EXE_tltui"),
        dataset = dataset.display(),
        weights = weights.display(),
        ck = dir.join(format!("ck-{tag}")).display(),
    );
    Tmux::start(tag, &command)
}

fn assert_restored(tmux: &Tmux, screen: &str) {
    assert!(
        !tmux.alternate_screen(),
        "alternate screen still on:\n{screen}"
    );
    assert!(
        !screen.contains("Layers"),
        "dashboard left on screen:\n{screen}"
    );
}

#[test]
fn engine_panic_is_shown_and_the_dashboard_survives() {
    if !common::tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tmux = dashboard("engine-panic", dir.path(), "panic-engine");
    tmux.wait("the engine error in the log", MINUTE, |s| {
        s.contains("internal error in the training engine")
    });
    tmux.keys("q");
    let s = tmux.wait("exit", MINUTE, |s| s.contains("TLTUI_EXIT"));
    assert!(s.contains("TLTUI_EXIT=0"), "{s}");
    assert_restored(&tmux, &s);
}

#[test]
fn dashboard_panic_restores_the_terminal_and_prints_the_error() {
    if !common::tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tmux = dashboard("ui-panic", dir.path(), "panic-ui");
    let s = tmux.wait("exit", MINUTE, |s| s.contains("TLTUI_EXIT"));
    assert!(s.contains("injected fault: panic in the dashboard"), "{s}");
    assert!(!s.contains("TLTUI_EXIT=0"), "{s}");
    assert_restored(&tmux, &s);
}

#[test]
fn sigterm_restores_the_terminal() {
    if !common::tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tmux = dashboard("sigterm", dir.path(), "none");
    // Warm-up epochs on cached features take milliseconds: any validation shown will do.
    tmux.wait("training", MINUTE, |s| {
        s.contains("Layers") && s.contains("val: w")
    });
    let pid = tltui_pid("ck-sigterm").expect("tltui is running");
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let s = tmux.wait("exit", MINUTE, |s| s.contains("TLTUI_EXIT"));
    assert!(s.contains("TLTUI_EXIT=130"), "{s}");
    assert!(
        dir.path()
            .join("ck-sigterm/interrupted.safetensors")
            .exists(),
        "{s}"
    );
    assert_restored(&tmux, &s);
}
