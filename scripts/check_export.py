#!/usr/bin/env python3
"""Checks a `tltui export` directory against timm: the model loads with every key matched and
predicts the same classes as `tltui predict` on the given images.

usage: check_export.py EXPORT_DIR TLTUI_BINARY CHECKPOINT IMAGE_OR_DIR...
needs: pip install torch timm safetensors pillow"""
import json, os, subprocess, sys

import timm, torch
from PIL import Image
from safetensors.torch import load_file
from timm.data import create_transform, resolve_data_config

export_dir, binary, checkpoint, *images = sys.argv[1:]
cfg = json.load(open(os.path.join(export_dir, "config.json")))
model = timm.create_model(cfg["architecture"], pretrained=False, num_classes=cfg["num_classes"])
model.load_state_dict(load_file(os.path.join(export_dir, "model.safetensors")), strict=True)  # raises on any unmatched key
model.eval()
# timm's own loading path with the exported file as the pretrained weights.
via_cfg = timm.create_model(cfg["architecture"], pretrained=True, num_classes=cfg["num_classes"],
                            pretrained_cfg_overlay=dict(file=os.path.join(export_dir, "model.safetensors"), **cfg["pretrained_cfg"]))
via_cfg.eval()
transform = create_transform(**resolve_data_config({}, model=model))

ours = json.loads(subprocess.check_output([binary, "predict", checkpoint, *images, "--json"]))
agree, disagree = 0, []
for p in ours["predictions"]:
    x = transform(Image.open(p["path"]).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        a = model(x).argmax(1).item()
        b = via_cfg(x).argmax(1).item()
        prob = model(x).softmax(1)[0, a].item()
    label = cfg["label_names"][a]
    if label == p["top"][0]["class"] and a == b:
        agree += 1
    else:
        disagree.append({"path": p["path"], "timm": [label, round(prob, 4)], "tltui": p["top"][0]})
total = len(ours["predictions"])
print(json.dumps({"images": total, "agree": agree, "keys_matched": True, "disagree": disagree}))
sys.exit(0 if agree == total and total > 0 else 1)
