#!/usr/bin/env python3
"""Checks `tltui push` as a new user would, against a local Hub stand-in that speaks the write
API (hub_stand_in.py --upload-dir): a wrong HF_TOKEN exits 1 with one message and without the
token; the right one leaves model.safetensors, config.json and README.md in the repository; then
Python's timm.create_model("hf-hub:ORG/NAME", pretrained=True), with HF_ENDPOINT at the
stand-in, loads the model and predicts the same classes as `tltui predict CHECKPOINT` and
`tltui predict hf-hub:ORG/NAME` on the images.

usage: check_push.py TLTUI_BINARY CHECKPOINT IMAGE_OR_DIR...
needs: pip install torch timm safetensors pillow huggingface_hub"""
import json, os, secrets, socket, subprocess, sys, tempfile, time

binary, checkpoint, *images = sys.argv[1:]
here = os.path.dirname(os.path.abspath(__file__))
work = tempfile.mkdtemp(prefix="check_push-")
os.makedirs(f"{work}/empty")
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
endpoint = f"http://127.0.0.1:{port}"
token, wrong = "hf_" + secrets.token_hex(16), "hf_" + secrets.token_hex(16)
server = subprocess.Popen([sys.executable, f"{here}/hub_stand_in.py", f"{work}/empty", "--port", str(port),
                           "--upload-dir", f"{work}/hub", "--user", f"{token}:tester"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", port)).close()
        break
    except OSError:
        time.sleep(0.1)

# Python's huggingface_hub reads these at import time.
os.environ.update(HF_ENDPOINT=endpoint, HF_HOME=f"{work}/python-home", NO_PROXY="127.0.0.1,localhost")
os.environ.pop("HF_TOKEN", None)


def tltui(*args, token=None):
    env = dict(os.environ, HF_HOME=f"{work}/tltui-home")
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([binary, *args], env=env, capture_output=True, text=True)


try:
    r = tltui("push", checkpoint, "tester/check", token=wrong)
    wrong_token = {"exit": r.returncode, "stderr": r.stderr.strip(),
                   "token_printed": wrong in r.stdout + r.stderr}
    wrong_ok = r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and not wrong_token["token_printed"]

    r = tltui("push", checkpoint, "tester/check", "--json", token=token)
    if r.returncode != 0:
        sys.exit(f"push failed: {r.stderr}")
    pushed = json.loads(r.stdout.splitlines()[-1])
    files = sorted(os.listdir(f"{work}/hub/tester/check"))

    import timm, torch
    from PIL import Image

    model = timm.create_model("hf-hub:tester/check", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    labels = model.pretrained_cfg["label_names"]

    def ours(spec):
        r = tltui("predict", spec, *images, "--json", token=token)
        if r.returncode != 0:
            sys.exit(f"predict {spec} failed: {r.stderr}")
        return {p["path"]: p["top"][0] for p in json.loads(r.stdout)["predictions"]}

    local, via_hub = ours(checkpoint), ours("hf-hub:tester/check")
    agree, disagree = 0, []
    for path, top in sorted(local.items()):
        with torch.no_grad():
            probs = model(transform(Image.open(path).convert("RGB")).unsqueeze(0)).softmax(1)[0]
        label = labels[probs.argmax().item()]
        if label == top["class"] == via_hub[path]["class"]:
            agree += 1
        else:
            disagree.append({"path": path, "timm": [label, round(probs.max().item(), 4)],
                             "tltui": top, "tltui_hub": via_hub[path]})
    total = len(local)
    print(json.dumps({"wrong_token": wrong_token, "pushed": pushed, "files": files, "images": total,
                      "agree": agree, "disagree": disagree}, indent=1))
    ok = wrong_ok and files == ["README.md", "config.json", "model.safetensors"] and total > 0
    # Images on the decision boundary may differ (JPEG decoding and resampling differ slightly).
    sys.exit(0 if ok and agree >= 0.99 * total else 1)
finally:
    server.terminate()
