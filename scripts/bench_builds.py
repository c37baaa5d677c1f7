#!/usr/bin/env python3
"""Two tltui builds, and optionally the PyTorch peer, on every family of ../shared, in one sitting.

For each backbone it runs `tltui bench --json` with the two builds right after each other, for
--rounds rounds in the order A B, B A, A B, ... (the machine's speed drifts, so only runs side by
side are compared), and prints a Markdown table of decode, forward and train-step img/s (medians
over the rounds) with the ratio B / A: the median of the rounds' ratios, and their range. With
--peer PYTHON it also runs ../shared/tools/peer_torch.py --bench after each round's pair and gives
B / peer the same way.

usage: bench_builds.py A_NAME=A_BIN B_NAME=B_BIN [--peer PYTHON] [--rounds N] [--reps N]
                       [--only NAME_PART] [--env-b VAR=VALUE]
  e.g. scripts/bench_builds.py native=/tmp/native/tltui portable=target/release/tltui
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
DATASET = os.path.join(SHARED, "datasets", "Dog-Cat-Classifier")
CLASS_ROOT = os.path.join(DATASET, "Data", "Train_Data")
# Every family: the pretrained Lite0 and the random-weight reference architectures (DINOv2 at 224,
# as BENCHMARKS.md measures it).
BACKBONES = [(os.path.join(SHARED, "hub", "timm", "tf_efficientnet_lite0.in1k"), None)] + [
    (os.path.join(SHARED, "reference", "archs", name), size)
    for name, size in [
        ("mobilenetv1_100.ra4_e3600_r224_in1k", None),
        ("mobilenetv2_100.ra_in1k", None),
        ("mobilenetv3_large_100.ra_in1k", None),
        ("efficientnet_b0.ra_in1k", None),
        ("resnet18.a1_in1k", None),
        ("convnext_atto.d2_in1k", None),
        ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", None),
        ("vit_small_patch14_dinov2.lvd142m", 224),
    ]
]
KEYS = ["decode_img_per_s", "forward_img_per_s", "train_img_per_s"]


def last_json(text):
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON line in:\n" + text)


def tltui(binary, weights, size, reps, env):
    cmd = [binary, "bench", DATASET, "--weights", os.path.join(weights, "model.safetensors"),
           "--json", "--skip-end-to-end", "--reps", str(reps)]
    if size:
        cmd += ["--image-size", str(size)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if out.returncode != 0:
        raise RuntimeError(f"{cmd}: {out.stderr}")
    return last_json(out.stdout)


def peer(python, weights, size):
    cmd = [python, os.path.join(SHARED, "tools", "peer_torch.py"), weights, CLASS_ROOT, "--bench"]
    if size:
        cmd += ["--image-size", str(size)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd}: {out.stderr}")
    return last_json(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--peer")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only")
    ap.add_argument("--env-b", action="append", default=[], help="VAR=VALUE for build B only")
    args = ap.parse_args()
    (a_name, a_bin), (b_name, b_bin) = (x.split("=", 1) for x in (args.a, args.b))
    env_b = dict(e.split("=", 1) for e in args.env_b)
    head = f"| backbone | figure | {a_name} img/s | {b_name} img/s | {b_name} / {a_name} (range) |"
    if args.peer:
        head += f" peer img/s | {b_name} / peer (range) |"
    print(head)
    print("| --- " * (7 if args.peer else 5) + "|")
    devices = {}
    for weights, size in BACKBONES:
        name = os.path.basename(weights) + (f" at {size}" if size else "")
        if args.only and args.only not in name:
            continue
        rounds = []
        for r in range(args.rounds):
            pair = [(a_name, a_bin, {}), (b_name, b_bin, env_b)]
            got = {n: tltui(binary, weights, size, args.reps, env)
                   for n, binary, env in (pair if r % 2 == 0 else pair[::-1])}
            if args.peer:
                got["peer"] = peer(args.peer, weights, size)
            devices.update({n: got[n]["device"] for n in (a_name, b_name)})
            rounds.append(got)
        for key in KEYS:
            med = lambda who: statistics.median(g[who][key] for g in rounds)
            ratios = lambda who: [g[b_name][key] / g[who][key] for g in rounds]
            spread = lambda rs: f"{statistics.median(rs):.3f}x ({min(rs):.3f}-{max(rs):.3f})"
            row = (f"| {name} | {key[:-len('_img_per_s')]} | {med(a_name):.1f} | {med(b_name):.1f} "
                   f"| {spread(ratios(a_name))} |")
            if args.peer:
                row += f" {med('peer'):.1f} | {spread(ratios('peer'))} |"
            print(row, flush=True)
    print(f"devices: {devices}", file=sys.stderr)


if __name__ == "__main__":
    main()
