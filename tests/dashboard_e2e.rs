//! The real binary's dashboard in tmux against the local Hub stand-in: warm up, fine-tune, save,
//! quit, and the terminal comes back.

mod common;

use common::hub_stub::HubStub;
use common::tmux::Tmux;
use std::path::Path;
use std::time::{Duration, Instant};

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
    if !common::tmux::available() {
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
    let tmux = Tmux::start("e2e", &command);
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
    // Auto warm-up runs its epochs in milliseconds each: any warm-up validation shown will do.
    tmux.wait("a warm-up validation result", 5 * minute, |s| {
        s.contains("val: w") && s.contains("accuracy 0.")
    });
    tmux.keys("l");
    tmux.wait("the top-losses list", minute, |s| {
        s.contains("Top losses") && s.contains(".jpg") && s.contains(" -> ")
    });
    tmux.keys("a");
    tmux.wait("the augmentation preview", minute, |s| {
        s.contains("Augmentations of") && s.contains("input") && s.contains("epoch 8")
    });
    tmux.keys("a");
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
