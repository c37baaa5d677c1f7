//! A local stand-in of the Hugging Face Hub on 127.0.0.1, speaking the part of the protocol that
//! hf-hub 1.0 uses, with switchable faults.
//!
//! `HEAD|GET /{org}/{name}/resolve/{rev}/{file}`: a small file answers 200 with `ETag` (git blob
//! sha1), `X-Repo-Commit` and `Content-Length`; a `.safetensors` file answers 302 to a second
//! port with `X-Linked-Etag` (sha256) and `X-Linked-Size`; a missing file answers 404.
//!
//! Dataset repositories (keyed `datasets/{org}/{name}`, see [`HubStub::serve_dataset_dir`])
//! answer `/datasets/{org}/{name}/resolve/{rev}/{file}` the same way (a `.parquet` file as an LFS
//! file) and `GET /api/datasets/{org}/{name}/tree/{rev}` with their file list.
//!
//! The write API `tltui push` uses, for the users given to [`HubStub::add_user`] (a bearer token
//! each; a user may write to their own namespace and their organisations'):
//! `GET /api/whoami-v2`; `POST /api/repos/create` (409 when the repository exists, 403 outside
//! the user's namespaces); `POST /api/models/{org}/{name}/preupload/{rev}` answering every file
//! "regular"; `POST /api/models/{org}/{name}/branch/{branch}`; and
//! `POST /api/models/{org}/{name}/commit/{rev}` taking the NDJSON commit with base64 files, which
//! the read side then serves. A missing or unknown token is 401. Every request is recorded.

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

/// A request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

/// A commit received.
#[derive(Debug, Clone)]
pub struct Commit {
    pub repo: String,
    pub revision: String,
    /// The NDJSON header's `value` (`summary`, `description`).
    pub header: serde_json::Value,
    /// Files added, as sent (base64 inline) and decoded.
    pub files: Vec<(String, Vec<u8>)>,
}

struct User {
    name: String,
    orgs: Vec<String>,
}

#[derive(Default)]
struct Repo {
    files: HashMap<String, Vec<u8>>,
    private: bool,
}

struct State {
    repos: HashMap<String, Repo>,
    fault: Fault,
    /// Users by token.
    users: HashMap<String, User>,
    requests: Vec<Recorded>,
    commits: Vec<Commit>,
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
        let repos = HashMap::from([(
            repo.to_string(),
            Repo {
                files: files.into_iter().collect(),
                private: false,
            },
        )]);
        let state = Arc::new(Mutex::new(State {
            repos,
            fault: Fault::None,
            users: HashMap::new(),
            requests: Vec::new(),
            commits: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let gets = Arc::new(AtomicUsize::new(0));
        let api = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", api.local_addr().unwrap());
        let cdn_base = format!("http://{}", cdn.local_addr().unwrap());
        for (listener, is_cdn) in [(api, false), (cdn, true)] {
            let (state, stop, gets, endpoint, cdn_base) = (
                state.clone(),
                stop.clone(),
                gets.clone(),
                endpoint.clone(),
                cdn_base.clone(),
            );
            listener.set_nonblocking(true).unwrap();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (state, gets, endpoint, cdn_base) = (
                                state.clone(),
                                gets.clone(),
                                endpoint.clone(),
                                cdn_base.clone(),
                            );
                            std::thread::spawn(move || {
                                let bases = [endpoint.as_str(), cdn_base.as_str()];
                                serve(stream, &state, &gets, bases, is_cdn)
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

    /// Also serves every file under `dir` as the dataset repository `repo` (`org/name`).
    pub fn serve_dataset_dir(&self, repo: &str, dir: &std::path::Path) {
        fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut HashMap<String, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.insert(rel, std::fs::read(&path).unwrap());
                }
            }
        }
        let mut files = HashMap::new();
        walk(dir, dir, &mut files);
        self.set_dataset(repo, files);
    }

    /// Serves `files` (path to bytes) as the dataset repository `repo` (`org/name`).
    pub fn set_dataset(&self, repo: &str, files: HashMap<String, Vec<u8>>) {
        self.state.lock().unwrap().repos.insert(
            format!("datasets/{repo}"),
            Repo {
                files,
                private: false,
            },
        );
    }

    pub fn set_fault(&self, fault: Fault) {
        self.state.lock().unwrap().fault = fault;
    }

    /// Accepts `token` as `user`'s, who may write to their namespace and to `orgs`.
    pub fn add_user(&self, token: &str, user: &str, orgs: &[&str]) {
        self.state.lock().unwrap().users.insert(
            token.to_string(),
            User {
                name: user.to_string(),
                orgs: orgs.iter().map(|o| o.to_string()).collect(),
            },
        );
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every commit so far.
    pub fn commits(&self) -> Vec<Commit> {
        self.state.lock().unwrap().commits.clone()
    }

    /// The files of `repo` (`org/name`) and whether it is private, if it exists.
    pub fn repo(&self, repo: &str) -> Option<(HashMap<String, Vec<u8>>, bool)> {
        let st = self.state.lock().unwrap();
        st.repos.get(repo).map(|r| (r.files.clone(), r.private))
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

fn respond(stream: &mut TcpStream, status: &str, headers: &str, body: &[u8]) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\n{headers}X-Repo-Commit: {COMMIT}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(body);
}

fn json_reply(stream: &mut TcpStream, status: &str, value: serde_json::Value) {
    let body = value.to_string();
    respond(
        stream,
        status,
        "Content-Type: application/json\r\n",
        body.as_bytes(),
    );
}

fn serve(
    mut stream: TcpStream,
    state: &Mutex<State>,
    gets: &AtomicUsize,
    [endpoint, cdn_base]: [&str; 2],
    is_cdn: bool,
) {
    stream.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let (mut length, mut authorization) = (0, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut st = state.lock().unwrap();
    st.requests.push(Recorded {
        method: method.clone(),
        path: path.clone(),
        authorization: authorization.clone(),
        body: body.clone(),
    });
    if let Fault::ServerErrors(n) = st.fault {
        if n > 0 {
            st.fault = Fault::ServerErrors(n - 1);
            return respond(&mut stream, "500 Internal Server Error", "", b"");
        }
    }
    if let (false, ["api", "datasets", org, name, "tree", ..]) = (
        is_cdn,
        path.trim_start_matches('/')
            .split('?')
            .next()
            .unwrap_or("")
            .split('/')
            .collect::<Vec<_>>()
            .as_slice(),
    ) {
        let Some(repo) = st.repos.get(&format!("datasets/{org}/{name}")) else {
            return respond(
                &mut stream,
                "404 Not Found",
                "X-Error-Code: RepoNotFound\r\n",
                b"",
            );
        };
        let mut list: Vec<serde_json::Value> = repo
            .files
            .iter()
            .map(|(p, body)| serde_json::json!({"type": "file", "oid": git_sha1(body), "size": body.len(), "path": p}))
            .collect();
        list.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        return json_reply(&mut stream, "200 OK", serde_json::Value::Array(list));
    }
    if !is_cdn && path.starts_with("/api/") {
        return api(
            &mut stream,
            &mut st,
            endpoint,
            &method,
            &path,
            authorization,
            &body,
        );
    }
    let head = method == "HEAD";
    let fault = st.fault;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (repo, file) = match (is_cdn, segments.as_slice()) {
        (true, ["blobs", "datasets", org, name, file @ ..]) => {
            (format!("datasets/{org}/{name}"), file.join("/"))
        }
        (true, ["blobs", org, name, file @ ..]) => (format!("{org}/{name}"), file.join("/")),
        (false, ["datasets", org, name, "resolve", _rev, file @ ..]) => {
            (format!("datasets/{org}/{name}"), file.join("/"))
        }
        (false, [org, name, "resolve", _rev, file @ ..]) => {
            (format!("{org}/{name}"), file.join("/"))
        }
        _ => (String::new(), String::new()),
    };
    let Some(body) = st
        .repos
        .get(&repo)
        .and_then(|r| r.files.get(&file))
        .cloned()
    else {
        return respond(
            &mut stream,
            "404 Not Found",
            "X-Error-Code: EntryNotFound\r\n",
            b"",
        );
    };
    drop(st);
    let large = file.ends_with(".safetensors") || file.ends_with(".parquet");
    if large && !is_cdn {
        let headers = format!(
            "Location: {cdn_base}/blobs/{repo}/{file}\r\nX-Linked-Etag: \"{}\"\r\nX-Linked-Size: {}\r\nETag: \"{}\"\r\n",
            hex(&sha2::Sha256::digest(&body)),
            body.len(),
            git_sha1(&body)
        );
        return respond(&mut stream, "302 Found", &headers, b"");
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

/// The write API and `whoami`.
fn api(
    stream: &mut TcpStream,
    st: &mut State,
    endpoint: &str,
    method: &str,
    path: &str,
    authorization: Option<String>,
    body: &[u8],
) {
    let user = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .and_then(|t| st.users.get(t));
    let Some(user) = user else {
        let error = serde_json::json!({"error": "Invalid credentials in Authorization header"});
        return json_reply(stream, "401 Unauthorized", error);
    };
    let writable =
        |namespace: &str| namespace == user.name || user.orgs.iter().any(|o| o == namespace);
    let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", ["whoami-v2"]) => {
            let orgs: Vec<_> = user
                .orgs
                .iter()
                .map(|o| serde_json::json!({"name": o}))
                .collect();
            json_reply(
                stream,
                "200 OK",
                serde_json::json!({"name": user.name, "type": "user", "orgs": orgs}),
            )
        }
        ("POST", ["repos", "create"]) => {
            let req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let name = req["name"].as_str().unwrap_or("");
            let namespace = req["organization"]
                .as_str()
                .unwrap_or(&user.name)
                .to_string();
            let id = format!("{namespace}/{name}");
            if !writable(&namespace) {
                let error = format!("You don't have the rights to create a model under the namespace \"{namespace}\"");
                json_reply(
                    stream,
                    "403 Forbidden",
                    serde_json::json!({ "error": error }),
                )
            } else if st.repos.contains_key(&id) {
                json_reply(
                    stream,
                    "409 Conflict",
                    serde_json::json!({"error": "You already created this model repo", "url": format!("{endpoint}/{id}")}),
                )
            } else {
                let private = req["private"].as_bool().unwrap_or(false);
                st.repos.insert(
                    id.clone(),
                    Repo {
                        files: HashMap::new(),
                        private,
                    },
                );
                json_reply(
                    stream,
                    "200 OK",
                    serde_json::json!({"url": format!("{endpoint}/{id}")}),
                )
            }
        }
        ("POST", ["models", org, name, action, revision]) => {
            let id = format!("{org}/{name}");
            if !st.repos.contains_key(&id) {
                return json_reply(
                    stream,
                    "404 Not Found",
                    serde_json::json!({"error": "Repository not found"}),
                );
            }
            if !writable(org) {
                return json_reply(
                    stream,
                    "403 Forbidden",
                    serde_json::json!({"error": "You don't have write access"}),
                );
            }
            match *action {
                "preupload" => {
                    let req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
                    let files: Vec<_> = req["files"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|f| serde_json::json!({"path": f["path"], "uploadMode": "regular", "shouldIgnore": false}))
                        .collect();
                    json_reply(stream, "200 OK", serde_json::json!({ "files": files }))
                }
                "branch" => json_reply(stream, "200 OK", serde_json::json!({})),
                "commit" => {
                    let mut header = serde_json::Value::Null;
                    let mut files = Vec::new();
                    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                        let entry: serde_json::Value = serde_json::from_slice(line).unwrap();
                        match entry["key"].as_str() {
                            Some("header") => header = entry["value"].clone(),
                            Some("file") => {
                                let v = &entry["value"];
                                assert_eq!(v["encoding"], "base64");
                                let content = base64_decode(v["content"].as_str().unwrap());
                                files.push((v["path"].as_str().unwrap().to_string(), content));
                            }
                            other => panic!("the stand-in takes no {other:?} entries: {entry}"),
                        }
                    }
                    let repo = st.repos.get_mut(&id).unwrap();
                    for (path, content) in &files {
                        repo.files.insert(path.clone(), content.clone());
                    }
                    st.commits.push(Commit {
                        repo: id.clone(),
                        revision: revision.to_string(),
                        header,
                        files,
                    });
                    json_reply(
                        stream,
                        "200 OK",
                        serde_json::json!({"commitUrl": format!("{endpoint}/{id}/commit/{COMMIT}"), "commitOid": COMMIT}),
                    )
                }
                _ => json_reply(
                    stream,
                    "404 Not Found",
                    serde_json::json!({"error": "no such endpoint"}),
                ),
            }
        }
        _ => json_reply(
            stream,
            "404 Not Found",
            serde_json::json!({"error": "no such endpoint"}),
        ),
    }
}

/// Standard base64 with padding.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let digits: Vec<u32> = text
        .bytes()
        .filter(|&b| b != b'=')
        .map(|b| ALPHABET.iter().position(|&a| a == b).expect("base64 digit") as u32)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0, |n, (i, d)| n | d << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
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
