#!/usr/bin/env python3
"""A local stand-in of the Hugging Face Hub serving a folder in the Hub's repository layout
(DIR/ORG/NAME/FILE, e.g. ../shared/hub), for running tltui where the Hub cannot be reached.

usage: hub_stand_in.py DIR [--port 8765] [--upload-dir UP --user TOKEN:NAME[:ORG,ORG...]]...
then:  HF_ENDPOINT=http://127.0.0.1:8765 HF_HOME=$(mktemp -d) tltui DATASET ...

It speaks the part of the protocol hf-hub uses: HEAD/GET /ORG/NAME/resolve/REV/FILE answers a
small file with 200 and its git blob sha1 as ETag; a .safetensors or .parquet file with 302 to
/blobs/... carrying X-Linked-Etag (sha256) and X-Linked-Size, as the Hub's LFS storage does.
Dataset repositories live under DIR/datasets/ORG/NAME and answer
/datasets/ORG/NAME/resolve/REV/FILE and GET /api/datasets/ORG/NAME/tree/REV (the file list).

With --upload-dir and one --user per accepted token it also speaks the write API `tltui push`
uses: GET /api/whoami-v2; POST /api/repos/create (409 when the repository exists, 403 outside
the user's own namespace and organisations); POST /api/models/ORG/NAME/preupload/REV answering
every file "regular" (so files travel inline, never by xet); POST .../branch/BRANCH; and
POST .../commit/REV taking the NDJSON commit with base64 files, written to UP/ORG/NAME/ (one tree
for all branches) and served from there. A missing or unknown token is 401."""
import argparse, base64, functools, hashlib, json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@functools.lru_cache(maxsize=None)
def digests(path, mtime):
    body = open(path, "rb").read()
    blob = hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()
    return len(body), blob, hashlib.sha256(body).hexdigest()


class Handler(BaseHTTPRequestHandler):
    roots = ["."]
    upload = None
    users = {}  # token -> (name, [orgs])

    def find(self, org, name, file, kind=""):
        for root in [self.upload, *self.roots]:
            path = os.path.join(root or "", kind, org, name, *file)
            if root and os.path.isfile(path):
                return path
        return None

    def answer(self, status, headers, body_path=None, body=b""):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("X-Repo-Commit", COMMIT)
        if body_path is None:
            self.send_header("Content-Length", len(body))
        self.end_headers()
        if self.command == "HEAD":
            return
        if body_path:
            with open(body_path, "rb") as f:
                while chunk := f.read(1 << 20):
                    self.wfile.write(chunk)
        else:
            self.wfile.write(body)

    def json(self, status, value):
        self.answer(status, {"Content-Type": "application/json"}, body=json.dumps(value).encode())

    def do_GET(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:2] == ["api", "whoami-v2"]:
            return self.api(parts[1:], b"")
        if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] == "tree":
            return self.tree(parts[2], parts[3])
        kind = ""
        if parts[0] == "datasets" or parts[:2] == ["blobs", "datasets"]:
            kind = "datasets"
            parts.remove("datasets")
        if parts[0] == "blobs" and len(parts) >= 4:
            path = self.find(parts[1], parts[2], parts[3:], kind)
            if path:
                size, _, sha256 = digests(path, os.path.getmtime(path))
                return self.answer(200, {"ETag": f'"{sha256}"', "Content-Length": size}, path)
        elif len(parts) >= 5 and parts[2] == "resolve":
            org, name, _, _rev, *file = parts
            path = self.find(org, name, file, kind)
            if path:
                size, blob, sha256 = digests(path, os.path.getmtime(path))
                if path.endswith((".safetensors", ".parquet")):
                    prefix = f"{kind}/" if kind else ""
                    return self.answer(302, {
                        "Location": f"/blobs/{prefix}{org}/{name}/{'/'.join(file)}",
                        "ETag": f'"{blob}"', "X-Linked-Etag": f'"{sha256}"',
                        "X-Linked-Size": size})
                return self.answer(200, {"ETag": f'"{blob}"', "Content-Length": size}, path)
        self.answer(404, {"X-Error-Code": "EntryNotFound"})

    do_HEAD = do_GET

    def tree(self, org, name):
        """The Hub API's recursive file list of a dataset repository."""
        for root in self.roots:
            repo = os.path.join(root, "datasets", org, name)
            if os.path.isdir(repo):
                entries = []
                for dirpath, _, files in sorted(os.walk(repo)):
                    for f in sorted(files):
                        path = os.path.join(dirpath, f)
                        size, blob, _ = digests(path, os.path.getmtime(path))
                        entries.append({"type": "file", "oid": blob, "size": size,
                                         "path": os.path.relpath(path, repo).replace(os.sep, "/")})
                return self.json(200, entries)
        self.answer(404, {"X-Error-Code": "RepoNotFound"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[0] != "api" or self.upload is None:
            return self.json(404, {"error": "no such endpoint"})
        self.api(parts[1:], body)

    def api(self, parts, body):
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if token not in self.users:
            return self.json(401, {"error": "Invalid credentials in Authorization header"})
        user, orgs = self.users[token]
        writable = lambda ns: ns == user or ns in orgs
        if parts == ["whoami-v2"]:
            return self.json(200, {"name": user, "type": "user", "orgs": [{"name": o} for o in orgs]})
        if parts == ["repos", "create"]:
            req = json.loads(body or b"{}")
            ns, name = req.get("organization") or user, req["name"]
            if not writable(ns):
                return self.json(403, {"error": f'You don\'t have the rights to create a model under the namespace "{ns}"'})
            repo = os.path.join(self.upload, ns, name)
            if os.path.isdir(repo) or self.find(ns, name, ["config.json"]):
                return self.json(409, {"error": "You already created this model repo"})
            os.makedirs(repo)
            return self.json(200, {"url": f"http://{self.headers['Host']}/{ns}/{name}"})
        if len(parts) == 5 and parts[0] == "models":
            _, org, name, action, _rev = parts
            repo = os.path.join(self.upload, org, name)
            if not os.path.isdir(repo):
                return self.json(404, {"error": "Repository not found"})
            if not writable(org):
                return self.json(403, {"error": "You don't have write access"})
            if action == "preupload":
                files = json.loads(body)["files"]
                return self.json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
            if action == "branch":
                return self.json(200, {})
            if action == "commit":
                for line in body.splitlines():
                    entry = json.loads(line)
                    if entry["key"] == "file":
                        path = os.path.join(repo, entry["value"]["path"])
                        os.makedirs(os.path.dirname(path), exist_ok=True)
                        with open(path, "wb") as f:
                            f.write(base64.b64decode(entry["value"]["content"]))
                    elif entry["key"] != "header":
                        return self.json(400, {"error": f"the stand-in takes no {entry['key']} entries"})
                return self.json(200, {"commitUrl": f"http://{self.headers['Host']}/{org}/{name}/commit/{COMMIT}", "commitOid": COMMIT})
        self.json(404, {"error": "no such endpoint"})


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="+")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--upload-dir", help="where pushed repositories are written")
    ap.add_argument("--user", action="append", default=[], metavar="TOKEN:NAME[:ORG,...]")
    a = ap.parse_args()
    Handler.roots, Handler.upload = a.dir, a.upload_dir
    for spec in a.user:
        token, name, *orgs = spec.split(":")
        Handler.users[token] = (name, orgs[0].split(",") if orgs else [])
    print(f"serving {', '.join(a.dir)} as the Hub on http://127.0.0.1:{a.port}"
          + (f"; pushes go to {a.upload_dir}" if a.upload_dir else ""), flush=True)
    ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()
