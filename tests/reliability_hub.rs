//! Hub faults through the local stand-in: refused connections, stalls, short and corrupt
//! bodies, server errors. Nothing corrupt is ever left in the cache as if it were valid.

mod common;

use common::hub_stub::{fetch, options, small_files, Fault, HubStub};
use std::time::{Duration, Instant};
use tltui::hub::{verify, DownloadProgress};

/// A corrupt body never stays in the cache as if it were valid.
fn assert_no_corrupt_blob(cache: &std::path::Path) {
    for entry in walk(cache) {
        if entry.to_string_lossy().contains("/blobs/")
            && !entry.to_string_lossy().ends_with(".lock")
        {
            let name = entry.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".incomplete") {
                continue;
            }
            let link = entry.clone();
            assert!(
                verify(&link).is_ok(),
                "corrupt blob left in cache: {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn unreachable_hub_without_cache_says_how_to_fix_it() {
    let stub = HubStub::start("org/model", small_files());
    let cache = tempfile::tempdir().unwrap();
    let opts = options(&stub, cache.path());
    stub.stop();
    let err = fetch("org/model", &opts).await.0.unwrap_err().to_string();
    assert!(
        err.contains("HF_ENDPOINT") && err.contains("--weights") && err.contains(&stub.endpoint),
        "{err}"
    );
}

#[tokio::test]
async fn corrupt_and_short_bodies_are_detected_and_not_cached() {
    for fault in [Fault::WrongBytes, Fault::ShortBody] {
        let stub = HubStub::start("org/model", small_files());
        stub.set_fault(fault);
        let cache = tempfile::tempdir().unwrap();
        let (r, events) = fetch("org/model", &options(&stub, cache.path())).await;
        let err = r.unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors") || err.contains("config.json"),
            "{fault:?}: {err}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, DownloadProgress::Retry { .. })),
            "{fault:?} retried"
        );
        assert_no_corrupt_blob(cache.path());
    }
}

#[tokio::test]
async fn stalled_server_times_out_within_the_configured_time() {
    let stub = HubStub::start("org/model", small_files());
    stub.set_fault(Fault::StallBody);
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(&stub, cache.path());
    opts.attempts = 1;
    let start = Instant::now();
    let err = fetch("org/model", &opts).await.0.unwrap_err().to_string();
    let took = start.elapsed();
    assert!(
        err.contains("stalled") || err.contains("timed out") || err.contains("timeout"),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(8),
        "gave up after {took:?} with a 2 s limit"
    );
    assert_no_corrupt_blob(cache.path());
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    let stub = HubStub::start("org/model", small_files());
    stub.set_fault(Fault::ServerErrors(1));
    let cache = tempfile::tempdir().unwrap();
    let (r, _) = fetch("org/model", &options(&stub, cache.path())).await;
    let files = r.unwrap();
    assert_eq!(std::fs::read(files.weights).unwrap(), small_files()[1].1);
}
