//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the crate, or `None` (with the reason printed) when it is absent, as in a
/// user's own clone. CI makes sure it is present.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if dir.join("README.md").exists() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: {} not found (the test data beside the repository; see README)",
            dir.display()
        );
        None
    }
}

/// The pretrained lite0 files in `../shared/hub`.
#[path = "hub_stub.rs"]
pub mod hub_stub;

pub fn lite0_dir(shared: &std::path::Path) -> PathBuf {
    shared.join("hub/timm/tf_efficientnet_lite0.in1k")
}
