//! Pooled backbone features of every image, computed once for warm-up and kept on disk, keyed by
//! the dataset's files (paths, sizes, mtimes), the backbone weights and the preprocessing.

use crate::data::store::BatchMode;
use crate::data::{ImageStore, Preprocess, Sample};
use crate::model::Backbone;
use candle_core::{Device, Tensor};
use sha2::Digest;
use std::path::{Path, PathBuf};

/// The cache key: a sha256 over everything the features depend on, in sample order.
pub fn cache_key(
    samples: &[&Sample],
    weights: &Path,
    architecture: &str,
    prep: &Preprocess,
) -> String {
    let mut h = sha2::Sha256::new();
    let mut stamp = |p: &Path| {
        h.update(p.as_os_str().as_encoded_bytes());
        if let Some(row) = crate::data::parquet::identity(p) {
            h.update(row.as_bytes());
        } else if let Ok(m) = std::fs::metadata(p) {
            h.update(m.len().to_le_bytes());
            if let Ok(t) = m.modified().and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_err(std::io::Error::other)
            }) {
                h.update(t.as_nanos().to_le_bytes());
            }
        }
        h.update([0]);
    };
    stamp(&std::fs::canonicalize(weights).unwrap_or_else(|_| weights.to_path_buf()));
    for s in samples {
        stamp(&s.path);
    }
    h.update(architecture.as_bytes());
    h.update(serde_json::to_vec(prep).unwrap_or_default());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache file for `key` under `dir`.
pub fn cache_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.safetensors"))
}

/// Features read from `path` when it holds `rows` rows.
pub fn load(path: &Path, rows: usize, device: &Device) -> Option<Tensor> {
    let t = candle_core::safetensors::load(path, device)
        .ok()?
        .remove("features")?;
    (t.dims().first() == Some(&rows)).then_some(t)
}

/// Writes features atomically to `path`.
pub fn save(path: &Path, features: &Tensor) -> anyhow::Result<()> {
    let bytes = safetensors::serialize([("features", features)], None)?;
    crate::atomic::atomic_write(path, &bytes)?;
    Ok(())
}

/// Runs the frozen backbone over `samples` (eval transform) in batches; `between(done)` after
/// each, whose error ends the pass.
pub fn compute(
    backbone: &dyn Backbone,
    store: &ImageStore,
    samples: &[&Sample],
    batch_size: usize,
    device: &Device,
    between: &mut dyn FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Tensor> {
    let mut parts = Vec::new();
    let mut done = 0;
    for chunk in samples.chunks(batch_size) {
        let x = store.batch(chunk, BatchMode::Eval, device)?;
        parts.push(backbone.forward(&x, false)?);
        done += chunk.len();
        between(done)?;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// The feature cache of the user's cache directory, `None` where the system has none.
pub fn default_cache_dir() -> Option<PathBuf> {
    crate::cache_dir().map(|d| d.join("features"))
}

/// The samples of a split in cache order: sorted by path, so that any split of the same files
/// shares one cache entry.
pub fn cache_order<'a>(train: &'a [Sample], val: &'a [Sample]) -> Vec<&'a Sample> {
    let mut samples: Vec<&Sample> = train.iter().chain(val).collect();
    samples.sort_by(|a, b| a.path.cmp(&b.path));
    samples
}

/// Features of `rows` images read from `path`, else made by `compute` and saved there. The
/// status says which; a cache that cannot be written comes back as a warning, not an error.
pub fn load_or_compute(
    path: Option<&Path>,
    rows: usize,
    device: &Device,
    compute: impl FnOnce() -> anyhow::Result<Tensor>,
) -> anyhow::Result<(Tensor, super::FeatureStatus, Option<String>)> {
    if let Some(found) = path.and_then(|p| load(p, rows, device).map(|t| (p, t))) {
        let status = super::FeatureStatus::Loaded {
            path: found.0.to_path_buf(),
            images: rows,
        };
        return Ok((found.1, status, None));
    }
    let started = std::time::Instant::now();
    let all = compute()?;
    let seconds = started.elapsed().as_secs_f64();
    let (saved, warning) = match path {
        Some(p) => match save(p, &all) {
            Ok(()) => (Some(p.to_path_buf()), None),
            Err(e) => (
                None,
                Some(format!("feature cache not saved to {}: {e:#}", p.display())),
            ),
        },
        None => (None, None),
    };
    let status = super::FeatureStatus::Computed {
        images: rows,
        seconds,
        path: saved,
    };
    Ok((all, status, warning))
}
