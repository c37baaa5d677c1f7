#!/usr/bin/env python3
"""A local stand-in of the Hugging Face Hub serving a folder in the Hub's repository layout
(DIR/ORG/NAME/FILE, e.g. ../shared/hub), for running tltui where the Hub cannot be reached.

usage: hub_stand_in.py DIR [--port 8765]
then:  HF_ENDPOINT=http://127.0.0.1:8765 HF_HOME=$(mktemp -d) tltui DATASET ...

It speaks the part of the protocol hf-hub uses: HEAD/GET /ORG/NAME/resolve/REV/FILE answers a
small file with 200 and its git blob sha1 as ETag; a .safetensors file with 302 to /blobs/...
carrying X-Linked-Etag (sha256) and X-Linked-Size, as the Hub's LFS storage does."""
import argparse, functools, hashlib, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@functools.lru_cache(maxsize=None)
def digests(path):
    body = open(path, "rb").read()
    blob = hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()
    return len(body), blob, hashlib.sha256(body).hexdigest()


class Handler(BaseHTTPRequestHandler):
    root = "."

    def answer(self, status, headers, body_path=None):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("X-Repo-Commit", COMMIT)
        self.end_headers()
        if body_path and self.command == "GET":
            with open(body_path, "rb") as f:
                while chunk := f.read(1 << 20):
                    self.wfile.write(chunk)

    def do_GET(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[0] == "blobs" and len(parts) >= 4:
            path = os.path.join(self.root, *parts[1:])
            if os.path.isfile(path):
                size, _, sha256 = digests(path)
                return self.answer(200, {"ETag": f'"{sha256}"', "Content-Length": size}, path)
        elif len(parts) >= 5 and parts[2] == "resolve":
            org, name, _, _rev, *file = parts
            path = os.path.join(self.root, org, name, *file)
            if os.path.isfile(path):
                size, blob, sha256 = digests(path)
                if path.endswith(".safetensors"):
                    return self.answer(302, {
                        "Location": f"/blobs/{org}/{name}/{'/'.join(file)}",
                        "ETag": f'"{blob}"', "X-Linked-Etag": f'"{sha256}"',
                        "X-Linked-Size": size, "Content-Length": 0})
                return self.answer(200, {"ETag": f'"{blob}"', "Content-Length": size}, path)
        self.answer(404, {"X-Error-Code": "EntryNotFound", "Content-Length": 0})

    do_HEAD = do_GET


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--port", type=int, default=8765)
    a = ap.parse_args()
    Handler.root = a.dir
    print(f"serving {a.dir} as the Hub on http://127.0.0.1:{a.port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()
