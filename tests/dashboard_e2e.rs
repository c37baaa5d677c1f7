//! The real binary's dashboard in tmux against the local Hub stand-in: warm up, fine-tune, save,
//! quit, and the terminal comes back.

mod common;

use common::hub_stub::HubStub;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux session that is killed when dropped.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(command: &str) -> Self {
        let name = format!("tltui-e2e-{}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "100",
                "-y",
                "30",
                command,
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        Self { name }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        Command::new("tmux")
            .args(["send-keys", "-t", &self.name, keys])
            .status()
            .unwrap();
    }

    fn alternate_screen(&self) -> bool {
        let out = Command::new("tmux")
            .args(["display", "-p", "-t", &self.name, "#{alternate_on}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Waits until `pred` holds for the screen, failing with the screen after `limit`.
    fn wait(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

fn wait_for_file(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < limit, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn dashboard_warmup_finetune_save_quit() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed (.ci/run installs it)");
        return;
    }
    let stub = HubStub::serve_dir(
        "timm/tf_efficientnet_lite0.in1k",
        &common::lite0_dir(&shared),
    );
    let tmp = tempfile::tempdir().unwrap();
    let checkpoints = tmp.path().join("checkpoints");
    let command = format!(
        "env HF_ENDPOINT={endpoint} HF_HUB_CACHE={hf} XDG_CACHE_HOME={cache} NO_PROXY=127.0.0.1,localhost \
         HF_HUB_DISABLE_IMPLICIT_TOKEN=1 {bin} {dataset} --val-fraction 0.25 --seed 0 --checkpoint-dir {ck}; \
         echo TLTUI_EXIT=$?; sleep 60",
        endpoint = stub.endpoint,
        hf = tmp.path().join("hf").display(),
        cache = tmp.path().join("cache").display(),
        bin = env!("CARGO_BIN_EXE_tltui"),
        dataset = shared.join("datasets/Dog-Cat-Classifier").display(),
        ck = checkpoints.display(),
    );
    let tmux = Tmux::start(&command);
    let minute = Duration::from_secs(60);
    tmux.wait("the model to be ready", 3 * minute, |s| {
        s.contains("press w")
    });
    assert!(
        tmux.screen().contains("model.safetensors"),
        "download shown:\n{}",
        tmux.screen()
    );
    tmux.keys("w");
    tmux.wait("a warm-up validation result", 5 * minute, |s| {
        s.contains("val: w1 0.")
    });
    tmux.keys("f");
    tmux.wait("a fine-tune batch", 3 * minute, |s| {
        s.contains("phase fine-tune") && s.contains("step 1/")
    });
    tmux.keys("s");
    wait_for_file(&checkpoints.join("manual.safetensors"), 3 * minute);
    tmux.keys("q");
    let s = tmux.wait("the quit prompt or the exit", minute, |s| {
        s.contains("Quit?") || s.contains("TLTUI_EXIT")
    });
    if s.contains("Quit?") {
        tmux.keys("y");
    }
    let after = tmux.wait("the process to exit", minute, |s| s.contains("TLTUI_EXIT"));
    assert!(after.contains("TLTUI_EXIT=0"), "{after}");
    assert!(!tmux.alternate_screen(), "alternate screen left on");
    assert!(
        !after.contains("Layers"),
        "dashboard left on screen:\n{after}"
    );
}
