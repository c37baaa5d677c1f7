//! The real download path (hf-hub) against a local stand-in of the Hub.

mod common;

use common::hub_stub::HubStub;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tltui::hub::{fetch_backbone, verify, DownloadProgress, HubError, HubOptions, RepoId};

fn options(stub: &HubStub, cache: &std::path::Path) -> HubOptions {
    std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
    std::env::set_var("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1");
    HubOptions {
        endpoint: Some(stub.endpoint.clone()),
        cache_dir: Some(cache.to_path_buf()),
        stall_timeout: Duration::from_secs(2),
        attempts: 2,
        offline: false,
    }
}

type Log = Arc<Mutex<Vec<DownloadProgress>>>;

async fn fetch(
    repo: &str,
    opts: &HubOptions,
) -> (
    Result<tltui::hub::BackboneFiles, HubError>,
    Vec<DownloadProgress>,
) {
    let log: Log = Arc::default();
    let sink = log.clone();
    let r = fetch_backbone(
        &repo.parse::<RepoId>().unwrap(),
        opts,
        Arc::new(move |p| sink.lock().unwrap().push(p)),
    )
    .await;
    let events = log.lock().unwrap().clone();
    (r, events)
}

fn small_files() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "config.json".into(),
            br#"{"architecture": "resnet18"}"#.to_vec(),
        ),
        (
            "model.safetensors".into(),
            (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect(),
        ),
    ]
}

#[tokio::test]
async fn cold_download_of_lite0_then_cache_then_offline() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let stub = HubStub::serve_dir(
        "timm/tf_efficientnet_lite0.in1k",
        &common::lite0_dir(&shared),
    );
    let cache = tempfile::tempdir().unwrap();
    let opts = options(&stub, cache.path());
    let (files, events) = fetch("timm/tf_efficientnet_lite0.in1k", &opts).await;
    let files = files.unwrap();
    assert_eq!(
        std::fs::read(&files.weights).unwrap(),
        std::fs::read(common::lite0_dir(&shared).join("model.safetensors")).unwrap()
    );
    assert!(files.config.starts_with(
        cache
            .path()
            .join("models--timm--tf_efficientnet_lite0.in1k/snapshots")
    ));
    let bytes = events
        .iter()
        .filter(
            |e| matches!(e, DownloadProgress::Bytes { file, .. } if file == "model.safetensors"),
        )
        .count();
    assert!(bytes > 1, "progress events while downloading: {events:?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, DownloadProgress::Done { file, .. } if file == "model.safetensors")));
    let gets = stub.gets.load(std::sync::atomic::Ordering::Relaxed);

    let (again, events) = fetch("timm/tf_efficientnet_lite0.in1k", &opts).await;
    assert!(!again.unwrap().offline_fallback);
    assert_eq!(
        stub.gets.load(std::sync::atomic::Ordering::Relaxed),
        gets,
        "second run downloads nothing"
    );
    assert!(
        events
            .iter()
            .all(|e| matches!(e, DownloadProgress::Cached { .. })),
        "{events:?}"
    );

    stub.stop();
    let (offline, _) = fetch("timm/tf_efficientnet_lite0.in1k", &opts).await;
    let offline = offline.unwrap();
    assert!(offline.offline_fallback);
    assert!(verify(&offline.weights).is_ok());
}

#[tokio::test]
async fn missing_file_is_a_clear_error() {
    let stub = HubStub::start("org/model", vec![("config.json".into(), b"{}".to_vec())]);
    let cache = tempfile::tempdir().unwrap();
    let err = fetch("org/model", &options(&stub, cache.path()))
        .await
        .0
        .unwrap_err();
    assert!(
        matches!(err, HubError::NotFound { ref file, .. } if file == "model.safetensors"),
        "{err}"
    );
}

#[tokio::test]
async fn offline_mode_uses_only_the_cache() {
    let stub = HubStub::start("org/model", small_files());
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(&stub, cache.path());
    opts.offline = true;
    assert!(
        fetch("org/model", &opts).await.0.is_err(),
        "nothing cached yet"
    );
    opts.offline = false;
    fetch("org/model", &opts).await.0.unwrap();
    opts.offline = true;
    let gets = stub.gets.load(std::sync::atomic::Ordering::Relaxed);
    fetch("org/model", &opts).await.0.unwrap();
    assert_eq!(stub.gets.load(std::sync::atomic::Ordering::Relaxed), gets);
}
