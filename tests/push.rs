//! `tltui push` against the in-test Hub stand-in: what arrives, the token kept out of all output,
//! one message per failure, and the pushed model downloaded back and used by `predict`.

mod common;

use common::hub_stub::HubStub;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOKEN: &str = "hf_stubTokenOfAlice0123456789";

/// Runs tltui with `env` (HF_TOKEN and HF_HOME cleared first); returns success, stdout, stderr.
fn tltui(args: &[&OsStr], env: &[(&str, &OsStr)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tltui"));
    cmd.args(args)
        .env_remove("HF_TOKEN")
        .env_remove("HF_TOKEN_PATH")
        .env_remove("HF_HUB_CACHE")
        .env("NO_PROXY", "127.0.0.1,localhost");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Trains two warm-up epochs on generated shapes; returns the dataset and the final checkpoint.
fn trained(dir: &Path) -> (PathBuf, PathBuf) {
    let run = common::shapes_checkpoint(dir, &["red", "blue"], 16, &["--val-fraction", "0.25"]);
    (run.dataset, run.checkpoint)
}

/// `predict --json` as (path, class, probability), by path.
fn predictions(model: &OsStr, images: &Path, env: &[(&str, &OsStr)]) -> Vec<(String, String, f64)> {
    let (ok, out, err) = tltui(
        &[os("predict"), model, images.as_os_str(), os("--json")],
        env,
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let mut rows: Vec<_> = v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_string(),
                p["top"][0]["class"].as_str().unwrap().to_string(),
                p["top"][0]["probability"].as_f64().unwrap(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

fn front_matter(card: &str) -> &str {
    card.strip_prefix("---\n")
        .and_then(|rest| rest.split("\n---\n").next())
        .unwrap_or_else(|| panic!("no front matter in {card}"))
}

#[test]
fn push_then_download_and_predict() {
    let dir = tempfile::tempdir().unwrap();
    let (dataset, ckpt) = trained(dir.path());
    let stub = HubStub::start("someone/else", vec![]);
    stub.add_user(TOKEN, "alice", &["lab"]);
    let home = dir.path().join("hf-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("token"), format!("{TOKEN}\n")).unwrap();
    let env = [
        ("HF_ENDPOINT", os(&stub.endpoint)),
        ("HF_HOME", home.as_os_str()),
    ];

    // The token from HF_HOME/token; a new private repository.
    let (ok, out, err) = tltui(
        &[
            os("push"),
            ckpt.as_os_str(),
            os("lab/shapes"),
            os("--private"),
            os("--dataset"),
            os("lab/shapes-data"),
            os("--json"),
        ],
        &env,
    );
    assert!(ok, "{err}");
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["start", "committing", "pushed"], "{out}");
    let last = &events[2];
    assert_eq!(last["url"], format!("{}/lab/shapes", stub.endpoint));
    assert_eq!(
        last["timm"],
        r#"timm.create_model("hf-hub:lab/shapes", pretrained=True)"#
    );

    let commits = stub.commits();
    assert_eq!(commits.len(), 1);
    assert_eq!(
        (commits[0].repo.as_str(), commits[0].revision.as_str()),
        ("lab/shapes", "main")
    );
    let mut names: Vec<&str> = commits[0].files.iter().map(|(p, _)| p.as_str()).collect();
    names.sort();
    // The model, its card, and the run directory: pictures, metrics and TensorBoard's files.
    let events = names
        .iter()
        .filter(|n| n.starts_with("runs/events.out.tfevents."))
        .count();
    assert_eq!(events, 1, "{names:?}");
    names.retain(|n| !n.starts_with("runs/"));
    assert_eq!(
        names,
        [
            "README.md",
            "config.json",
            "confusion_matrix.png",
            "history.png",
            "metrics.csv",
            "model.safetensors",
            "top_losses.png"
        ]
    );
    let (files, private) = stub.repo("lab/shapes").unwrap();
    assert!(private);
    // The run directory's files arrive as they are beside the checkpoint.
    let run_dir = ckpt.parent().unwrap();
    for f in [
        "history.png",
        "confusion_matrix.png",
        "top_losses.png",
        "metrics.csv",
    ] {
        assert_eq!(files[f], std::fs::read(run_dir.join(f)).unwrap(), "{f}");
    }
    // The weights and config are exactly what `export` writes.
    let export = dir.path().join("export");
    let (ok, _, err) = tltui(&[os("export"), ckpt.as_os_str(), export.as_os_str()], &[]);
    assert!(ok, "{err}");
    for f in ["model.safetensors", "config.json"] {
        assert_eq!(files[f], std::fs::read(export.join(f)).unwrap(), "{f}");
    }
    let card = String::from_utf8(files["README.md"].clone()).unwrap();
    let front = front_matter(&card);
    for line in [
        "library_name: timm",
        "tags:\n- image-classification\n- timm\n- tltui",
        "datasets:\n- lab/shapes-data",
    ] {
        assert!(front.contains(line), "{line:?} not in {front}");
    }
    assert!(
        !front.contains("base_model"),
        "local weights have no base model: {front}"
    );
    assert!(
        card.contains("| red | 12 | 4 |") && card.contains("| blue | 12 | 4 |"),
        "{card}"
    );
    assert!(card.contains("tltui predict hf-hub:lab/shapes"), "{card}");
    assert!(
        card.contains("![Loss and accuracy per epoch](history.png)")
            && card.contains("![Confusion matrix of the last validation](confusion_matrix.png)"),
        "the card shows the pictures: {card}"
    );
    assert!(card.contains("`runs/`"), "{card}");

    // Every write and the token check carried the token; nothing else was asked of the API.
    let api: Vec<_> = stub
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/"))
        .collect();
    let calls: Vec<String> = api
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        calls,
        [
            "GET /api/whoami-v2",
            "POST /api/repos/create",
            "POST /api/models/lab/shapes/preupload/main",
            "POST /api/models/lab/shapes/commit/main",
        ]
    );
    for r in &api {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{r:?}"
        );
    }

    // HF_TOKEN wins over the file; an existing repository gets a new commit on a new branch.
    let mut env_token = env.to_vec();
    env_token.push(("HF_TOKEN", os(TOKEN)));
    std::fs::write(home.join("token"), "hf_staleTokenInTheFile").unwrap();
    let (ok, out, err) = tltui(
        &[
            os("push"),
            ckpt.as_os_str(),
            os("lab/shapes"),
            os("--revision"),
            os("dev"),
            os("--message"),
            os("second try"),
        ],
        &env_token,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("pushed: {}/lab/shapes/tree/dev", stub.endpoint)),
        "{out}"
    );
    assert!(
        out.contains(r#"timm.create_model("hf-hub:lab/shapes@dev", pretrained=True)"#),
        "{out}"
    );
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
    let commits = stub.commits();
    assert_eq!(commits.len(), 2);
    assert_eq!(commits[1].revision, "dev");
    assert_eq!(commits[1].header["summary"], "second try");

    // Downloaded back through tltui's Hub client, the model predicts what the checkpoint does.
    let fresh = dir.path().join("hf-home-2");
    let env_download = [
        ("HF_ENDPOINT", os(&stub.endpoint)),
        ("HF_HOME", fresh.as_os_str()),
        ("HF_TOKEN", os(TOKEN)),
    ];
    let pushed = predictions(os("hf-hub:lab/shapes"), &dataset, &env_download);
    let original = predictions(ckpt.as_os_str(), &dataset, &[]);
    assert_eq!(pushed.len(), 32);
    for (a, b) in pushed.iter().zip(&original) {
        assert_eq!((&a.0, &a.1), (&b.0, &b.1));
        assert!((a.2 - b.2).abs() < 1e-5, "{a:?} vs {b:?}");
    }
    assert!(
        fresh.join("hub/models--lab--shapes").is_dir(),
        "downloaded into the HF cache"
    );
}

#[test]
fn failures_give_one_message_and_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ckpt) = trained(dir.path());
    let stub = HubStub::start("bob/shapes", vec![]);
    stub.add_user(TOKEN, "alice", &[]);
    let empty_home = dir.path().join("empty-home");
    std::fs::create_dir_all(&empty_home).unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let cases: [(&str, &str, Option<&str>, &str, &str); 4] = [
        (
            "no token",
            &stub.endpoint,
            None,
            "alice/shapes",
            "no Hugging Face token",
        ),
        (
            "wrong token",
            &stub.endpoint,
            Some("hf_wrongTokenABCDEF0123456789"),
            "alice/shapes",
            "rejected the token from HF_TOKEN (401)",
        ),
        (
            "someone else's name",
            &stub.endpoint,
            Some(TOKEN),
            "bob/shapes",
            "bob/shapes belongs to someone else: the token from HF_TOKEN is alice's",
        ),
        (
            "no network",
            &closed,
            Some(TOKEN),
            "alice/shapes",
            "cannot reach the Hub at",
        ),
    ];
    for (case, endpoint, token, repo, expected) in cases {
        let mut env = vec![
            ("HF_ENDPOINT", os(endpoint)),
            ("HF_HOME", empty_home.as_os_str()),
        ];
        if let Some(t) = token {
            env.push(("HF_TOKEN", os(t)));
        }
        for json in [false, true] {
            let mut args = vec![os("push"), ckpt.as_os_str(), os(repo)];
            if json {
                args.push(os("--json"));
            }
            let (ok, out, err) = tltui(&args, &env);
            assert!(!ok, "{case}: {out}");
            assert_eq!(out, "", "{case}");
            assert_eq!(err.trim().lines().count(), 1, "{case}: one message: {err}");
            assert!(err.contains(expected), "{case}: {err}");
            if let Some(t) = token {
                assert!(!err.contains(t), "{case}: token printed: {err}");
            }
        }
    }
    assert!(stub.commits().is_empty());
    assert!(stub.repo("alice/shapes").is_none(), "nothing created");
}
