//! Resolving a backbone id or a dataset repository to local files: the Hugging Face cache,
//! downloads with progress, an integrity check of every file, retries, stall detection and the
//! offline fallback.
//!
//! hf-hub 1.0 writes whatever the GET returned into the cache (an error page, a short body), has
//! no timeouts, races two downloads of one file on a lock, and ignores `HF_HUB_OFFLINE`; each is
//! handled here.

use hf_hub::progress::{DownloadEvent, ProgressEvent, ProgressHandler};
use hf_hub::{HFClient, HFError};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The files a backbone needs.
pub const BACKBONE_FILES: [&str; 2] = ["config.json", "model.safetensors"];

/// `ORG/NAME[@REVISION]` on the Hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    pub owner: String,
    pub name: String,
    pub revision: String,
}

impl std::str::FromStr for RepoId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (repo, revision) = s.split_once('@').unwrap_or((s, "main"));
        let (owner, name) = repo
            .split_once('/')
            .filter(|(o, n)| {
                !o.is_empty() && !n.is_empty() && !n.contains('/') && !revision.is_empty()
            })
            .ok_or_else(|| format!("backbone {s:?} is not of the form ORG/NAME[@REVISION]"))?;
        Ok(Self {
            owner: owner.into(),
            name: name.into(),
            revision: revision.into(),
        })
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)?;
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        Ok(())
    }
}

/// How to reach the Hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Hub address; `None` takes `HF_ENDPOINT`, else the public Hub.
    pub endpoint: Option<String>,
    /// Cache directory; `None` takes `HF_HUB_CACHE`, else `HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Longest wait for data before a download counts as stalled.
    pub stall_timeout: Duration,
    /// Attempts per file.
    pub attempts: u32,
    /// Never touch the network (also set by `HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl HubOptions {
    /// Options from the `[hub]` config section and the environment.
    pub fn from_config(hub: &crate::config::HubConfig) -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"));
        Self {
            endpoint: (!hub.endpoint.is_empty()).then(|| hub.endpoint.clone()),
            cache_dir: None,
            stall_timeout: Duration::from_secs(hub.timeout_secs),
            attempts: hub.attempts,
            offline,
        }
    }
}

/// Progress of one file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DownloadProgress {
    /// Bytes received so far of `total` (0 when unknown).
    Bytes { file: String, done: u64, total: u64 },
    /// The file was already in the cache and verified.
    Cached { file: String, bytes: u64 },
    /// The file is complete and verified.
    Done { file: String, bytes: u64 },
    /// An attempt failed and another follows.
    Retry {
        file: String,
        attempt: u32,
        reason: String,
    },
}

/// The local copies of a backbone's files.
#[derive(Debug, Clone)]
pub struct BackboneFiles {
    pub config: PathBuf,
    pub weights: PathBuf,
    /// Whether the network was unreachable and the cache served the files.
    pub offline_fallback: bool,
}

/// Why a backbone could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    BadId(String),
    #[error("{repo} has no file {file} at revision {revision} on {endpoint}")]
    NotFound {
        repo: String,
        file: String,
        revision: String,
        endpoint: String,
    },
    #[error(
        "could not get {file} of {repo}: {reason}; it is not in the Hugging Face cache at {cache} either. \
         Check the network, point HF_ENDPOINT at a reachable Hub (or mirror), or pass --weights PATH to a local model.safetensors with its config.json beside it"
    )]
    Unavailable {
        repo: String,
        file: String,
        reason: String,
        cache: String,
    },
    #[error(
        "could not get {file} of {repo}: {reason}; it is not in the Hugging Face cache at {cache} either. \
         Check the network, or point HF_ENDPOINT at a reachable Hub (or mirror)"
    )]
    DatasetUnavailable {
        repo: String,
        file: String,
        reason: String,
        cache: String,
    },
    #[error("cannot set up the Hub client: {0}")]
    Client(String),
}

/// One download at a time per process: hf-hub's cache lock lets a second download of the same
/// file wait 10 s and then fail.
static DOWNLOADS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Downloads (or finds in the cache) `config.json` and `model.safetensors` of `repo`.
pub async fn fetch_backbone(
    repo: &RepoId,
    options: &HubOptions,
    progress: Arc<dyn Fn(DownloadProgress) + Send + Sync>,
) -> Result<BackboneFiles, HubError> {
    let client = build_client(options, None)?;
    let handle = client.model(repo.owner.clone(), repo.name.clone());
    let mut paths = Vec::new();
    let mut offline_fallback = false;
    for file in BACKBONE_FILES {
        let _guard = DOWNLOADS.lock().await;
        let (path, fallback) =
            fetch_file(&client, &handle, repo, "", file, options, &progress).await?;
        offline_fallback |= fallback;
        paths.push(path);
    }
    Ok(BackboneFiles {
        config: paths[0].clone(),
        weights: paths[1].clone(),
        offline_fallback,
    })
}

/// Reports a download's progress for a one-shot command: a line on stderr per file.
pub fn report_on_stderr(p: DownloadProgress) {
    match p {
        DownloadProgress::Bytes { .. } => {}
        DownloadProgress::Cached { file, bytes } => eprintln!("{file}: cached ({bytes} bytes)"),
        DownloadProgress::Done { file, bytes } => eprintln!("{file}: downloaded ({bytes} bytes)"),
        DownloadProgress::Retry {
            file,
            attempt,
            reason,
        } => eprintln!("{file}: attempt {attempt} failed ({reason}); retrying"),
    }
}

/// [`fetch_backbone`] for a one-shot command: the Hub settings of the default configuration and
/// the environment, a line on stderr per file ([`report_on_stderr`]); returns the local weights
/// path (`config.json` beside it).
pub fn fetch_backbone_blocking(id: &str) -> anyhow::Result<PathBuf> {
    let repo: RepoId = id.parse().map_err(anyhow::Error::msg)?;
    let options = HubOptions::from_config(&crate::config::Config::default().hub);
    let progress = Arc::new(report_on_stderr);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let files = runtime.block_on(fetch_backbone(&repo, &options, progress))?;
    if files.offline_fallback {
        eprintln!("the Hub is unreachable; using the cached snapshot of {repo}");
    }
    Ok(files.weights)
}

/// A client for `options`; `token` replaces the one hf-hub finds itself (`HF_TOKEN`, the token
/// file).
pub(crate) fn build_client(
    options: &HubOptions,
    token: Option<&str>,
) -> Result<HFClient, HubError> {
    let http = reqwest::Client::builder()
        .connect_timeout(options.stall_timeout)
        .read_timeout(options.stall_timeout)
        .build()
        .map_err(|e| HubError::Client(e.to_string()))?;
    let mut builder = HFClient::builder().client(http).retry_max_attempts(1);
    if let Some(endpoint) = &options.endpoint {
        builder = builder.endpoint(endpoint.clone());
    }
    if let Some(dir) = &options.cache_dir {
        builder = builder.cache_dir(dir.clone());
    }
    if let Some(token) = token {
        builder = builder.token(token);
    }
    builder.build().map_err(|e| HubError::Client(e.to_string()))
}

/// Forwards hf-hub's events and stamps the time of the last byte for stall detection.
struct Watch {
    file: String,
    started: Instant,
    last_activity_ms: AtomicU64,
    transferred: AtomicBool,
    progress: Arc<dyn Fn(DownloadProgress) + Send + Sync>,
}

impl ProgressHandler for Watch {
    fn on_progress(&self, event: &ProgressEvent) {
        let ProgressEvent::Download(DownloadEvent::Progress { files }) = event else {
            return;
        };
        self.last_activity_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        for f in files {
            if f.status == hf_hub::progress::FileStatus::InProgress {
                self.transferred.store(true, Ordering::Relaxed);
                (self.progress)(DownloadProgress::Bytes {
                    file: self.file.clone(),
                    done: f.bytes_completed,
                    total: f.total_bytes,
                });
            }
        }
    }
}

/// Downloads one file of `repo` (a model, or with `kind = "datasets/"` a dataset) into the
/// cache, verified; returns its path and whether the cache served it because the Hub was
/// unreachable.
async fn fetch_file<T: hf_hub::RepoType>(
    client: &HFClient,
    handle: &hf_hub::HFRepository<T>,
    repo: &RepoId,
    kind: &str,
    file: &str,
    options: &HubOptions,
    progress: &Arc<dyn Fn(DownloadProgress) + Send + Sync>,
) -> Result<(PathBuf, bool), HubError> {
    let cached = || async {
        handle
            .download_file()
            .filename(file)
            .revision(repo.revision.clone())
            .local_files_only(true)
            .send()
            .await
            .ok()
            .filter(|p| verify(p).is_ok())
    };
    let unavailable = |reason: String| {
        let (repo, file) = (format!("{kind}{repo}"), file.to_string());
        let cache = client.cache_dir().display().to_string();
        if kind.is_empty() {
            HubError::Unavailable {
                repo,
                file,
                reason,
                cache,
            }
        } else {
            HubError::DatasetUnavailable {
                repo,
                file,
                reason,
                cache,
            }
        }
    };
    if options.offline {
        return match cached().await {
            Some(p) => {
                report_cached(progress, file, &p);
                Ok((p, false))
            }
            None => Err(unavailable("HF_HUB_OFFLINE is set".into())),
        };
    }
    let mut last_error = String::new();
    for attempt in 1..=options.attempts {
        if attempt > 1 {
            progress(DownloadProgress::Retry {
                file: file.to_string(),
                attempt,
                reason: last_error.clone(),
            });
            tokio::time::sleep(Duration::from_millis(250 << (attempt - 2).min(4))).await;
        }
        let watch = Arc::new(Watch {
            file: file.to_string(),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            transferred: AtomicBool::new(false),
            progress: progress.clone(),
        });
        let download = handle
            .download_file()
            .filename(file)
            .revision(repo.revision.clone())
            .progress(hf_hub::progress::Progress::from(watch.clone()))
            .send();
        match with_stall_watch(download, &watch, options.stall_timeout).await {
            Ok(Ok(path)) => match verify(&path) {
                Ok(bytes) => {
                    let file = file.to_string();
                    if watch.transferred.load(Ordering::Relaxed) {
                        progress(DownloadProgress::Done { file, bytes });
                        return Ok((path, false));
                    }
                    progress(DownloadProgress::Cached { file, bytes });
                    // hf-hub answers from its cache, silently, when the Hub is unreachable.
                    let silent = watch.last_activity_ms.load(Ordering::Relaxed) == 0;
                    let offline =
                        silent && !reachable(client.endpoint(), options.stall_timeout).await;
                    return Ok((path, offline));
                }
                Err(reason) => {
                    discard(&path);
                    last_error = reason;
                }
            },
            Ok(Err(HFError::EntryNotFound { .. })) | Ok(Err(HFError::RepoNotFound { .. })) => {
                return Err(HubError::NotFound {
                    repo: format!("{kind}{}/{}", repo.owner, repo.name),
                    file: file.to_string(),
                    revision: repo.revision.clone(),
                    endpoint: client.endpoint().to_string(),
                });
            }
            Ok(Err(e)) => last_error = describe(&e),
            Err(stalled) => last_error = stalled,
        }
    }
    match cached().await {
        Some(p) => {
            report_cached(progress, file, &p);
            Ok((p, true))
        }
        None => Err(unavailable(format!(
            "{} attempts at {} failed, the last with: {last_error}",
            options.attempts,
            client.endpoint()
        ))),
    }
}

fn report_cached(progress: &Arc<dyn Fn(DownloadProgress) + Send + Sync>, file: &str, path: &Path) {
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    progress(DownloadProgress::Cached {
        file: file.to_string(),
        bytes,
    });
}

/// Whether a TCP connection to the endpoint's host opens within `limit`.
async fn reachable(endpoint: &str, limit: Duration) -> bool {
    let Ok(url) = reqwest::Url::parse(endpoint) else {
        return false;
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let connect = tokio::net::TcpStream::connect((host.to_string(), port));
    matches!(tokio::time::timeout(limit, connect).await, Ok(Ok(_)))
}

/// Runs `download`, abandoning it when no data arrived for `limit`.
async fn with_stall_watch<F: std::future::Future>(
    download: F,
    watch: &Watch,
    limit: Duration,
) -> Result<F::Output, String> {
    tokio::pin!(download);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            out = &mut download => return Ok(out),
            _ = tick.tick() => {
                let idle = watch.started.elapsed().as_millis() as u64 - watch.last_activity_ms.load(Ordering::Relaxed);
                if idle > limit.as_millis() as u64 {
                    return Err(format!("no data for {} s (stalled); hub.timeout_secs sets the limit", limit.as_secs()));
                }
            }
        }
    }
}

/// The files of a dataset repository at `repo.revision`, listed through the Hub API; when the
/// Hub cannot be reached, those of the cached snapshot (`true` in the second place).
pub async fn list_dataset_files(
    repo: &RepoId,
    options: &HubOptions,
) -> Result<(Vec<String>, bool), HubError> {
    use futures::StreamExt;
    let client = build_client(options, None)?;
    let cached = || cached_dataset_files(client.cache_dir(), repo);
    let unavailable = |reason: String| HubError::DatasetUnavailable {
        repo: format!("datasets/{repo}"),
        file: "the file list".into(),
        reason,
        cache: client.cache_dir().display().to_string(),
    };
    if options.offline {
        return cached()
            .map(|f| (f, true))
            .ok_or_else(|| unavailable("HF_HUB_OFFLINE is set".into()));
    }
    let handle = client.dataset(repo.owner.clone(), repo.name.clone());
    let listing = || async {
        let stream = handle
            .list_tree()
            .revision(repo.revision.clone())
            .recursive(true)
            .send()?;
        futures::pin_mut!(stream);
        let mut files = Vec::new();
        while let Some(entry) = stream.next().await {
            if let hf_hub::repository::RepoTreeEntry::File { path, .. } = entry? {
                files.push(path);
            }
        }
        Ok::<_, HFError>(files)
    };
    let mut last_error = String::new();
    for attempt in 1..=options.attempts {
        if attempt > 1 {
            tokio::time::sleep(Duration::from_millis(250 << (attempt - 2).min(4))).await;
        }
        match tokio::time::timeout(options.stall_timeout, listing()).await {
            Ok(Ok(mut files)) => {
                files.sort();
                return Ok((files, false));
            }
            Ok(Err(HFError::RepoNotFound { .. })) | Ok(Err(HFError::RevisionNotFound { .. })) => {
                return Err(HubError::NotFound {
                    repo: format!("datasets/{}/{}", repo.owner, repo.name),
                    file: "any file".into(),
                    revision: repo.revision.clone(),
                    endpoint: client.endpoint().to_string(),
                });
            }
            Ok(Err(e)) => last_error = describe(&e),
            Err(_) => {
                last_error = format!("no answer within {} s", options.stall_timeout.as_secs())
            }
        }
    }
    cached().map(|f| (f, true)).ok_or_else(|| {
        unavailable(format!(
            "{} attempts at {} failed, the last with: {last_error}",
            options.attempts,
            client.endpoint()
        ))
    })
}

/// The files of the cached snapshot of a dataset repository at `repo.revision`.
fn cached_dataset_files(cache: &Path, repo: &RepoId) -> Option<Vec<String>> {
    let dir = cache.join(format!("datasets--{}--{}", repo.owner, repo.name));
    let commit = std::fs::read_to_string(dir.join("refs").join(&repo.revision))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| repo.revision.clone());
    let snapshot = dir.join("snapshots").join(commit);
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut files = Vec::new();
    walk(&snapshot, &snapshot, &mut files);
    files.sort();
    (!files.is_empty()).then_some(files)
}

/// Downloads (or finds in the cache) one file of a dataset repository; returns its path and
/// whether the cache served it because the Hub was unreachable.
pub async fn fetch_dataset_file(
    repo: &RepoId,
    file: &str,
    options: &HubOptions,
    progress: Arc<dyn Fn(DownloadProgress) + Send + Sync>,
) -> Result<(PathBuf, bool), HubError> {
    let client = build_client(options, None)?;
    let handle = client.dataset(repo.owner.clone(), repo.name.clone());
    let _guard = DOWNLOADS.lock().await;
    fetch_file(
        &client,
        &handle,
        repo,
        "datasets/",
        file,
        options,
        &progress,
    )
    .await
}

/// An error's chain as one line; the token never appears in hf-hub's messages.
pub(crate) fn describe(e: &HFError) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Checks a cached file against the hash its blob is named by: sha256 for LFS files (64 hex
/// digits), git's blob sha1 for small files (40). Returns the size.
pub fn verify(snapshot_path: &Path) -> Result<u64, String> {
    let blob =
        std::fs::canonicalize(snapshot_path).map_err(|e| format!("cached file unreadable: {e}"))?;
    let etag = blob
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unreadable = |e: std::io::Error| format!("cached file unreadable: {e}");
    let size = std::fs::metadata(&blob).map_err(unreadable)?.len();
    // Hashed in pieces: a dataset shard can be larger than memory allows.
    fn digest<D: Digest>(mut h: D, prefix: &[u8], blob: &Path) -> std::io::Result<String> {
        h.update(prefix);
        let mut file = std::fs::File::open(blob)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }
    let actual = match etag.len() {
        64 => digest(sha2::Sha256::new(), b"", &blob).map_err(unreadable)?,
        40 => digest(
            sha1::Sha1::new(),
            format!("blob {size}\0").as_bytes(),
            &blob,
        )
        .map_err(unreadable)?,
        _ => return Ok(size),
    };
    if actual == etag {
        Ok(size)
    } else {
        Err(format!(
            "downloaded data is corrupt ({size} bytes whose hash {actual} is not the expected {etag})"
        ))
    }
}

/// Removes a bad cached file (its snapshot link and its blob), so it is never taken as valid.
fn discard(snapshot_path: &Path) {
    if let Ok(blob) = std::fs::canonicalize(snapshot_path) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(snapshot_path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_parse() {
        let id: RepoId = "timm/resnet18.a1_in1k@v2".parse().unwrap();
        assert_eq!(
            (id.owner.as_str(), id.name.as_str(), id.revision.as_str()),
            ("timm", "resnet18.a1_in1k", "v2")
        );
        assert_eq!("a/b".parse::<RepoId>().unwrap().revision, "main");
        for bad in ["ab", "/b", "a/", "a/b/c", "a/b@"] {
            assert!(bad.parse::<RepoId>().is_err(), "{bad}");
        }
    }

    #[test]
    #[cfg(unix)]
    fn verify_checks_the_blob_hash() {
        let t = tempfile::tempdir().unwrap();
        let body = b"{\"a\": 1}";
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", body.len()).as_bytes());
        h.update(body);
        let etag: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let blob = t.path().join(&etag);
        std::fs::write(&blob, body).unwrap();
        let link = t.path().join("config.json");
        std::os::unix::fs::symlink(&blob, &link).unwrap();
        assert_eq!(verify(&link), Ok(body.len() as u64));
        std::fs::write(&blob, b"<html>error</html>").unwrap();
        assert!(verify(&link).unwrap_err().contains("corrupt"));
    }
}
