//! The real download path (hf-hub) against a local stand-in of the Hub.

mod common;

use common::hub_stub::{fetch, options, small_files, HubStub};
use tltui::hub::{verify, DownloadProgress, HubError};

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
