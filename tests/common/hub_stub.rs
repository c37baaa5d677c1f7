//! A local stand-in of the Hugging Face Hub on 127.0.0.1, speaking the part of the protocol that
//! hf-hub 1.0 uses, with switchable faults.
//!
//! `HEAD|GET /{org}/{name}/resolve/{rev}/{file}`: a small file answers 200 with `ETag` (git blob
//! sha1), `X-Repo-Commit` and `Content-Length`; a `.safetensors` file answers 302 to a second
//! port with `X-Linked-Etag` (sha256) and `X-Linked-Size`; a missing file answers 404.

use sha2::Digest;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tltui::hub::{fetch_backbone, BackboneFiles, DownloadProgress, HubError, HubOptions, RepoId};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A misbehaviour of the file-serving side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Send half of the body, then go quiet for a minute.
    StallBody,
    /// Announce the full length, send half, close.
    ShortBody,
    /// Send different bytes of the right length.
    WrongBytes,
    /// Answer this many requests with 500 first.
    ServerErrors(usize),
}

struct State {
    files: HashMap<String, Vec<u8>>,
    fault: Fault,
}

/// The running stand-in; stops when dropped.
pub struct HubStub {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    /// Body requests served (GETs of files).
    pub gets: Arc<AtomicUsize>,
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn git_sha1(body: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", body.len()).as_bytes());
    h.update(body);
    hex(&h.finalize())
}

impl HubStub {
    /// Serves `files` (name to bytes) for the repository `repo` (`org/name`).
    pub fn start(repo: &str, files: Vec<(String, Vec<u8>)>) -> Self {
        let state = Arc::new(Mutex::new(State {
            files: files.into_iter().collect(),
            fault: Fault::None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let gets = Arc::new(AtomicUsize::new(0));
        let api = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", api.local_addr().unwrap());
        let cdn_base = format!("http://{}", cdn.local_addr().unwrap());
        let prefix = format!("/{repo}/resolve/");
        for (listener, is_cdn) in [(api, false), (cdn, true)] {
            let (state, stop, gets, prefix, cdn_base) = (
                state.clone(),
                stop.clone(),
                gets.clone(),
                prefix.clone(),
                cdn_base.clone(),
            );
            listener.set_nonblocking(true).unwrap();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (state, gets, prefix, cdn_base) = (
                                state.clone(),
                                gets.clone(),
                                prefix.clone(),
                                cdn_base.clone(),
                            );
                            std::thread::spawn(move || {
                                serve(stream, &state, &gets, &prefix, &cdn_base, is_cdn)
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Self {
            endpoint,
            state,
            stop,
            gets,
        }
    }

    /// The files of a directory on disk (e.g. `../shared/hub/timm/...`).
    pub fn serve_dir(repo: &str, dir: &std::path::Path) -> Self {
        let files = ["config.json", "model.safetensors"]
            .iter()
            .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
            .collect();
        Self::start(repo, files)
    }

    pub fn set_fault(&self, fault: Fault) {
        self.state.lock().unwrap().fault = fault;
    }

    /// Stops answering: new connections are refused.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for HubStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut stream: TcpStream,
    state: &Mutex<State>,
    gets: &AtomicUsize,
    prefix: &str,
    cdn_base: &str,
    is_cdn: bool,
) {
    stream.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let head = method == "HEAD";
    let mut st = state.lock().unwrap();
    if let Fault::ServerErrors(n) = st.fault {
        if n > 0 {
            st.fault = Fault::ServerErrors(n - 1);
            let _ = write!(stream, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
    }
    let fault = st.fault;
    let file = if is_cdn {
        path.strip_prefix("/blobs/").map(str::to_string)
    } else {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, f)| f.to_string())
    };
    let Some(body) = file.as_ref().and_then(|f| st.files.get(f)).cloned() else {
        let _ = write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nX-Repo-Commit: {COMMIT}\r\nX-Error-Code: EntryNotFound\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    };
    drop(st);
    let file = file.unwrap();
    let large = file.ends_with(".safetensors");
    if large && !is_cdn {
        let _ = write!(
            stream,
            "HTTP/1.1 302 Found\r\nLocation: {cdn_base}/blobs/{file}\r\nX-Linked-Etag: \"{}\"\r\nX-Linked-Size: {}\r\nX-Repo-Commit: {COMMIT}\r\nETag: \"{}\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            hex(&sha2::Sha256::digest(&body)),
            body.len(),
            git_sha1(&body)
        );
        return;
    }
    let etag = if large {
        hex(&sha2::Sha256::digest(&body))
    } else {
        git_sha1(&body)
    };
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nETag: \"{etag}\"\r\nX-Repo-Commit: {COMMIT}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if head {
        return;
    }
    gets.fetch_add(1, Ordering::Relaxed);
    let half = &body[..body.len() / 2];
    match fault {
        Fault::StallBody => {
            let _ = stream.write_all(half);
            let _ = stream.flush();
            std::thread::sleep(Duration::from_secs(60));
        }
        Fault::ShortBody => {
            let _ = stream.write_all(half);
        }
        Fault::WrongBytes => {
            let mut wrong = body.clone();
            wrong.iter_mut().take(64).for_each(|b| *b ^= 0x5a);
            let _ = stream.write_all(&wrong);
        }
        Fault::None | Fault::ServerErrors(_) => {
            let _ = stream.write_all(&body);
        }
    }
}

/// Client options pointing at `stub`, with a private cache and a 2 s stall limit.
pub fn options(stub: &HubStub, cache: &std::path::Path) -> HubOptions {
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

/// Progress events collected by [`fetch`].
type Log = Arc<Mutex<Vec<DownloadProgress>>>;

/// Fetches `repo` through the real download code, returning the result and its progress events.
pub async fn fetch(
    repo: &str,
    opts: &HubOptions,
) -> (Result<BackboneFiles, HubError>, Vec<DownloadProgress>) {
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

/// A tiny repository: a config and a 200 kB weights file.
pub fn small_files() -> Vec<(String, Vec<u8>)> {
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
