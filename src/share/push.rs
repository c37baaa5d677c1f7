//! `tltui push`: a checkpoint to a model repository on the Hugging Face Hub, in one commit made
//! through hf-hub's upload API: what `tltui export` writes (`model.safetensors`, `config.json`)
//! and a model card (`README.md`).
//!
//! hf-hub asks the Hub (`preupload`) how each file goes: "regular" files travel base64-encoded
//! inside the commit request; "lfs" files (the Hub says so for weights) go first by the xet
//! protocol, and the commit only names them. Byte progress exists only for the xet path.

use super::card::{license_of, model_card, timm_snippet, CardInput};
use crate::cli::PushArgs;
use crate::hub::{build_client, describe, HubOptions, RepoId};
use crate::infer::timm_files;
use crate::train::checkpoint::Checkpoint;
use hf_hub::progress::{Progress, ProgressEvent, ProgressHandler, UploadEvent};
use hf_hub::repository::CommitOperation;
use hf_hub::{HFClient, HFError, RepoTypeModel};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// A token and where it was found; messages name the place, never the token.
pub struct Token {
    value: String,
    /// `HF_TOKEN` or the token file's path.
    pub origin: String,
}

/// The token file of `huggingface_hub`: `HF_TOKEN_PATH`, else `HF_HOME/token`, `HF_HOME`
/// defaulting to `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub fn token_file() -> PathBuf {
    if let Some(path) = std::env::var_os("HF_TOKEN_PATH") {
        return path.into();
    }
    let home = std::env::var_os("HF_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| dirs::home_dir().map(|h| h.join(".cache")))
                .unwrap_or_default()
                .join("huggingface")
        });
    home.join("token")
}

/// The token as Python's `huggingface_hub` finds it: `HF_TOKEN`, else the [`token_file`].
pub fn find_token() -> Option<Token> {
    if let Ok(value) = std::env::var("HF_TOKEN") {
        if !value.trim().is_empty() {
            return Some(Token {
                value: value.trim().to_string(),
                origin: "HF_TOKEN".into(),
            });
        }
    }
    let file = token_file();
    let value = std::fs::read_to_string(&file).ok()?.trim().to_string();
    (!value.is_empty()).then(|| Token {
        value,
        origin: file.display().to_string(),
    })
}

/// Why a push failed. No message holds the token.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(
        "no Hugging Face token: set HF_TOKEN, or run `hf auth login` (it writes {file}); \
         a token with write access is made at {endpoint}/settings/tokens"
    )]
    NoToken { file: String, endpoint: String },
    #[error(
        "the Hub at {endpoint} rejected the token from {origin} (401): it is invalid or revoked; \
         make one with write access at {endpoint}/settings/tokens"
    )]
    Rejected { endpoint: String, origin: String },
    #[error(
        "{repo} belongs to someone else: the token from {origin} is {user}'s, who may push to \
         {namespaces}"
    )]
    NotYours {
        repo: String,
        origin: String,
        user: String,
        namespaces: String,
    },
    #[error(
        "the Hub at {endpoint} refused to let the token from {origin} write to {repo} (403): \
         the token is read-only or not allowed in that namespace; make one with write access \
         at {endpoint}/settings/tokens"
    )]
    ReadOnly {
        repo: String,
        origin: String,
        endpoint: String,
    },
    #[error(
        "cannot reach the Hub at {endpoint}: {reason}. Check the network, or point HF_ENDPOINT \
         at a reachable Hub"
    )]
    Network { endpoint: String, reason: String },
    #[error("the Hub at {endpoint} refused {step}: {reason}")]
    Refused {
        endpoint: String,
        step: &'static str,
        reason: String,
    },
}

/// What `push` reports, one JSON object per line with `--json`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PushEvent {
    /// The files are ready and the repository exists.
    Start {
        repo: String,
        revision: String,
        endpoint: String,
        files: Vec<FileSize>,
        bytes: u64,
    },
    /// Bytes of the large files sent by xet so far.
    Progress { done: u64, total: u64 },
    /// The commit request is on its way (carrying the small files).
    Committing,
    /// The commit exists.
    Pushed {
        url: String,
        commit: Option<String>,
        timm: String,
        tltui: String,
    },
}

/// A file of the commit.
#[derive(Debug, Clone, Serialize)]
pub struct FileSize {
    pub path: String,
    pub bytes: u64,
}

/// Shows [`PushEvent`]s as text (a bar on a terminal) or JSON lines.
struct Printer {
    json: bool,
    bar: bool,
}

impl Printer {
    fn show(&self, event: &PushEvent) {
        if self.json {
            let mut out = std::io::stdout().lock();
            if serde_json::to_writer(&mut out, event).is_ok() {
                let _ = writeln!(out);
            }
            return;
        }
        let mb = |b: u64| b as f64 / 1e6;
        let size = |b: u64| match b {
            0..1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
            _ => format!("{:.1} MB", mb(b)),
        };
        match event {
            PushEvent::Start {
                repo,
                revision,
                endpoint,
                files,
                bytes,
            } => {
                let list: Vec<String> = files
                    .iter()
                    .map(|f| format!("{} ({})", f.path, size(f.bytes)))
                    .collect();
                println!(
                    "pushing to {repo} (branch {revision}) at {endpoint}: {}; {} in all",
                    list.join(", "),
                    size(*bytes)
                );
            }
            PushEvent::Progress { done, total } if self.bar => {
                let filled = (20 * done / (*total).max(1)) as usize;
                eprint!(
                    "\r\x1b[2Kuploading [{}{}] {:.1}/{:.1} MB",
                    "#".repeat(filled.min(20)),
                    ".".repeat(20 - filled.min(20)),
                    mb(*done),
                    mb(*total)
                );
                let _ = std::io::stderr().flush();
            }
            PushEvent::Progress { .. } => {}
            PushEvent::Committing => {
                if self.bar {
                    eprint!("\r\x1b[2K");
                }
                println!("committing");
            }
            PushEvent::Pushed {
                url,
                commit,
                timm,
                tltui,
            } => {
                println!("pushed: {url}");
                if let Some(c) = commit {
                    println!("commit {c}");
                }
                println!("load it with timm:  {timm}");
                println!("or with tltui:      {tltui}");
            }
        }
    }
}

/// Forwards hf-hub's upload events.
struct Forward(Arc<Printer>);

impl ProgressHandler for Forward {
    fn on_progress(&self, event: &ProgressEvent) {
        match event {
            ProgressEvent::Upload(UploadEvent::Progress {
                bytes_completed,
                total_bytes,
                ..
            }) => self.0.show(&PushEvent::Progress {
                done: *bytes_completed,
                total: *total_bytes,
            }),
            ProgressEvent::Upload(UploadEvent::Committing) => self.0.show(&PushEvent::Committing),
            _ => {}
        }
    }
}

/// The backbone's Hub repository, when the checkpoint's `backbone` names one (not a local file).
fn base_model(backbone: &str) -> Option<RepoId> {
    if std::path::Path::new(backbone).exists() {
        return None;
    }
    backbone.parse().ok()
}

/// `tltui push`.
pub fn run(args: &PushArgs) -> anyhow::Result<()> {
    let mut repo: RepoId = args.repo.parse().map_err(|_| {
        anyhow::anyhow!(
            "{:?} is not a repository name of the form ORG/NAME",
            args.repo
        )
    })?;
    if let Some(branch) = &args.revision {
        repo.revision = branch.clone();
    }
    let ckpt = Checkpoint::load(&args.checkpoint, &candle_core::Device::Cpu)?;
    let files = timm_files(&ckpt)?;
    let onnx = args
        .onnx
        .then(|| crate::onnx::checkpoint_bytes(&ckpt, crate::onnx::Options::DEPLOY))
        .transpose()?;
    let run_files = run_files(&args.checkpoint)?;
    // A model trained on a Hub dataset names it unasked.
    let trained_on = args.dataset.clone().or_else(|| {
        crate::data::hub_dataset::parse_spec(&ckpt.meta.class_root)?
            .ok()
            .map(|r| format!("{}/{}", r.owner, r.name))
    });
    let options = HubOptions::from_config(&crate::config::Config::default().hub);
    let Some(token) = find_token() else {
        let client = build_client(&options, None)?;
        return Err(PushError::NoToken {
            file: token_file().display().to_string(),
            endpoint: client.endpoint().to_string(),
        }
        .into());
    };
    let client = build_client(&options, Some(&token.value))?;
    let printer = Arc::new(Printer {
        json: args.json,
        bar: !args.json && std::io::stderr().is_terminal(),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pushed = runtime.block_on(async {
        let user = client
            .whoami()
            .send()
            .await
            .map_err(|e| failure(e, &client, &repo, &token, None, "the token check"))?;
        let base = base_model(&ckpt.meta.backbone);
        let license = match &base {
            Some(base) => backbone_license(&client, base).await,
            None => None,
        };
        let shared: Vec<&str> = run_files.iter().map(|(path, _)| path.as_str()).collect();
        let mut card = model_card(&CardInput {
            repo: &repo,
            meta: &ckpt.meta,
            base_model: base.as_ref(),
            license: license.as_deref(),
            dataset: trained_on.as_deref(),
            run_files: &shared,
        });
        let mut files = vec![
            ("model.safetensors".to_string(), files.weights),
            ("config.json".to_string(), files.config),
        ];
        if let Some(bytes) = onnx {
            card.push_str(&crate::onnx::card_section(&args.repo));
            files.push((crate::onnx::FILE_NAME.to_string(), bytes));
        }
        files.push(("README.md".to_string(), card.into_bytes()));
        files.extend(run_files);
        upload(&client, &repo, &token, &user, args, files, &printer).await
    });
    let pushed = pushed.map_err(|e| anyhow::anyhow!(redact(&e.to_string(), &token.value)))?;
    printer.show(&pushed);
    Ok(())
}

/// The run directory's files beside the checkpoint (pictures, `metrics.csv`, TensorBoard's
/// `runs/`), as (path in the repository, bytes).
fn run_files(checkpoint: &std::path::Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let dir = checkpoint
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    crate::rundir::shared_files(dir)
        .into_iter()
        .map(|(name, path)| {
            let bytes = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            Ok((name, bytes))
        })
        .collect()
}

/// Creates the repository (and branch) if needed and makes the commit.
async fn upload(
    client: &HFClient,
    repo: &RepoId,
    token: &Token,
    user: &hf_hub::users::User,
    args: &PushArgs,
    files: Vec<(String, Vec<u8>)>,
    printer: &Arc<Printer>,
) -> Result<PushEvent, PushError> {
    let id = format!("{}/{}", repo.owner, repo.name);
    let fail =
        |step: &'static str| move |e: HFError| failure(e, client, repo, token, Some(user), step);
    client
        .create_repository()
        .repo_id(&id)
        .repo_type(RepoTypeModel)
        .private(args.private)
        .exist_ok(true)
        .send()
        .await
        .map_err(fail("to create the repository"))?;
    let handle = client.model(repo.owner.clone(), repo.name.clone());
    if repo.revision != "main" {
        match handle.create_branch().branch(&repo.revision).send().await {
            Ok(()) | Err(HFError::Conflict { .. }) => {}
            Err(e) => return Err(fail("to create the branch")(e)),
        }
    }
    let sizes: Vec<FileSize> = files
        .iter()
        .map(|(path, bytes)| FileSize {
            path: path.clone(),
            bytes: bytes.len() as u64,
        })
        .collect();
    let operations = files
        .into_iter()
        .map(|(path, bytes)| CommitOperation::add_bytes(path, bytes))
        .collect();
    printer.show(&PushEvent::Start {
        repo: id.clone(),
        revision: repo.revision.clone(),
        endpoint: client.endpoint().to_string(),
        bytes: sizes.iter().map(|f| f.bytes).sum(),
        files: sizes,
    });
    let message = args
        .message
        .clone()
        .unwrap_or_else(|| "Upload model trained with tltui".to_string());
    let commit = handle
        .create_commit()
        .operations(operations)
        .commit_message(message)
        .revision(repo.revision.clone())
        .progress(Progress::new(Forward(printer.clone())))
        .send()
        .await
        .map_err(fail("the commit"))?;
    let mut url = format!("{}/{id}", client.endpoint().trim_end_matches('/'));
    if repo.revision != "main" {
        url.push_str(&format!("/tree/{}", repo.revision));
    }
    Ok(PushEvent::Pushed {
        url,
        commit: commit.commit_oid,
        timm: timm_snippet(repo),
        tltui: format!("tltui predict hf-hub:{repo} IMAGE_OR_DIR..."),
    })
}

/// The `license` of the backbone's card: from the Hugging Face cache, else from the Hub; `None`
/// when neither has it.
async fn backbone_license(client: &HFClient, base: &RepoId) -> Option<String> {
    let handle = client.model(base.owner.clone(), base.name.clone());
    for local_only in [true, false] {
        let found = handle
            .download_file()
            .filename("README.md")
            .revision(base.revision.clone())
            .local_files_only(local_only)
            .send()
            .await;
        if let Ok(path) = found {
            return std::fs::read_to_string(path)
                .ok()
                .and_then(|c| license_of(&c));
        }
    }
    None
}

/// One message for each way a Hub call fails.
fn failure(
    e: HFError,
    client: &HFClient,
    repo: &RepoId,
    token: &Token,
    user: Option<&hf_hub::users::User>,
    step: &'static str,
) -> PushError {
    let endpoint = client.endpoint().to_string();
    let repo_id = format!("{}/{}", repo.owner, repo.name);
    match (e, user) {
        (HFError::AuthRequired { .. }, _) => PushError::Rejected {
            endpoint,
            origin: token.origin.clone(),
        },
        (HFError::Forbidden { .. }, Some(user)) if !namespaces(user).contains(&repo.owner) => {
            PushError::NotYours {
                repo: repo_id,
                origin: token.origin.clone(),
                user: user.username.clone(),
                namespaces: namespaces(user)
                    .iter()
                    .map(|n| format!("{n}/…"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        }
        (HFError::Forbidden { .. }, _) => PushError::ReadOnly {
            repo: repo_id,
            origin: token.origin.clone(),
            endpoint,
        },
        (e @ HFError::Request { .. }, _) => PushError::Network {
            endpoint,
            reason: describe(&e),
        },
        (e, _) => PushError::Refused {
            endpoint,
            step,
            reason: describe(&e),
        },
    }
}

/// The user's own namespace and their organisations'.
fn namespaces(user: &hf_hub::users::User) -> Vec<String> {
    let orgs = user.orgs.iter().flatten().filter_map(|o| o.name.clone());
    std::iter::once(user.username.clone()).chain(orgs).collect()
}

/// `text` with every occurrence of `token` masked.
fn redact(text: &str, token: &str) -> String {
    if token.is_empty() {
        text.to_string()
    } else {
        text.replace(token, "hf_***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_masked() {
        assert_eq!(
            redact("bad header Bearer hf_secret1 at x", "hf_secret1"),
            "bad header Bearer hf_*** at x"
        );
        assert_eq!(redact("nothing here", "hf_secret1"), "nothing here");
    }

    #[test]
    fn local_backbones_have_no_base_model() {
        let t = tempfile::tempdir().unwrap();
        let local = t.path().join("model.safetensors");
        std::fs::write(&local, b"x").unwrap();
        assert_eq!(base_model(&local.display().to_string()), None);
        let hub = base_model("timm/resnet18.a1_in1k@v2").unwrap();
        assert_eq!((hub.owner.as_str(), hub.revision.as_str()), ("timm", "v2"));
    }
}
