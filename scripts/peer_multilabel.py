#!/usr/bin/env python3
"""The multi-label peer: PyTorch + timm doing tltui's multi-label job the way a user would, with
../shared/tools/peer_torch.py's recipe (same model loading, transforms, optimizers, learning rates,
batch and epoch conventions), only with one sigmoid output per tag and BCEWithLogitsLoss.

usage: peer_multilabel.py WEIGHTS_DIR SPLIT_CSV [--warmup-epochs 30] [--finetune-epochs 2]
                          [--batch 32] [--image-size N] [--pos-weight] [--threads N] [--json]
  WEIGHTS_DIR  timm's Hub layout: config.json (architecture, pretrained_cfg) + model.safetensors
  SPLIT_CSV    header `file_name,labels,split`; file_name absolute or relative to the CSV's folder;
               labels space-separated tags (empty: an image with no tag); split `train` or `val`
               (`validation` is accepted too). The label set is the sorted union of all tags.
               Or a `.json` file written by `tltui inspect DATASET --files --json`: tltui's own
               split of the same dataset, so both train and validate on the same images.
  --pos-weight BCE pos_weight = negatives / positives of each label in train, clamped to [1, 10].
               Off by default, as peer_torch.py's cross-entropy has no class weights.
  --json       one JSON object per line on stdout, each with an "event" field:
               start, features, warmup, finetune (one per fine-tune epoch)

Recipe (as peer_torch.py): all images decoded with timm's eval transform from the config;
features = forward_head(forward_features(x), pre_logits=True) in eval mode; warm-up = a new
Linear head trained on the cached features, Adam lr 1e-3, shuffled batches, --warmup-epochs
(peer_torch.py's fixed 30); the head is copied into the model's classifier; fine-tune = the whole
network with AdamW lr 1e-4, timm's training transform (augmentation), BatchNorm kept in eval mode.

Validation metrics after the warm-up and after each fine-tune epoch:
  map          macro mean average precision: sklearn's average_precision_score per label, mean over
               the labels with at least one positive in val
  thresholds   per label, the score threshold (predict p >= t) that gives that label's best F1 on
               val (precision_recall_curve; ties: the lowest); 0.5 for a label without positives
  f1_micro     micro F1 over all labels at those thresholds
  f1_macro     mean F1 over the labels with at least one positive in val, at those thresholds
  exact_match  share of val images whose whole tag set is predicted exactly, at those thresholds
  *_at_05      the same three at threshold 0.5 for every label
needs: pip install torch timm safetensors pillow numpy scikit-learn"""
import argparse, csv, json, os, random, sys, time

import numpy as np
import torch, timm
from PIL import Image
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, precision_recall_curve
from timm.data import resolve_data_config, create_transform

ap = argparse.ArgumentParser()
ap.add_argument("weights"); ap.add_argument("split_csv")
ap.add_argument("--warmup-epochs", type=int, default=30)
ap.add_argument("--finetune-epochs", type=int, default=2)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--image-size", type=int, help="input side in pixels instead of the config's (ViTs resample position embeddings)")
ap.add_argument("--pos-weight", action="store_true", help="BCE pos_weight = neg/pos per label in train, clamped to [1, 10]")
ap.add_argument("--threads", type=int)
ap.add_argument("--json", action="store_true")
a = ap.parse_args()
torch.manual_seed(0); random.seed(0)
if a.threads:
    torch.set_num_threads(a.threads)


def emit(event, text, **fields):
    if a.json:
        print(json.dumps({"event": event, **fields}), flush=True)
    else:
        print(text, flush=True)


# ---- the split file
base = os.path.dirname(os.path.abspath(a.split_csv))
rows = []
if a.split_csv.endswith(".json"):
    # `tltui inspect DATASET --files --json`: tltui's own split, each file's labels in `class`.
    for f in json.load(open(a.split_csv))["files"]:
        rows.append((f["path"], sorted(set(f["class"].split())), f["split"]))
else:
  with open(a.split_csv, newline="") as fh:
      r = csv.DictReader(fh)
      missing = {"file_name", "labels", "split"} - set(r.fieldnames or [])
      if missing:
          sys.exit(f"{a.split_csv}: missing column(s) {sorted(missing)}; header must be file_name,labels,split")
      for row in r:
          split = row["split"].strip().lower()
          split = {"validation": "val", "valid": "val"}.get(split, split)
          if split not in ("train", "val"):
              sys.exit(f"{a.split_csv}: split {row['split']!r} is neither train nor val")
          path = row["file_name"] if os.path.isabs(row["file_name"]) else os.path.join(base, row["file_name"])
          rows.append((path, sorted(set((row["labels"] or "").split())), split))
labels = sorted({t for _, ts, _ in rows for t in ts})
if not labels:
    sys.exit(f"{a.split_csv}: no tags at all")
index = {t: i for i, t in enumerate(labels)}


def target(ts):
    y = torch.zeros(len(labels))
    for t in ts: y[index[t]] = 1
    return y


train = [(p, target(ts)) for p, ts, s in rows if s == "train"]
val = [(p, target(ts)) for p, ts, s in rows if s == "val"]
if not train or not val:
    sys.exit(f"{a.split_csv}: needs both train and val rows (train {len(train)}, val {len(val)})")

# ---- the model, exactly as peer_torch.py loads it
hub_cfg = json.load(open(os.path.join(a.weights, "config.json")))
arch = hub_cfg["architecture"]
kw = {"img_size": a.image_size} if a.image_size and arch.startswith(("vit", "deit", "eva")) else {}
m = timm.create_model(arch, pretrained=True, num_classes=len(labels), **kw,
                      pretrained_cfg_overlay=dict(hub_cfg.get("pretrained_cfg", {}), file=os.path.join(a.weights, "model.safetensors")))
cfg = resolve_data_config({"input_size": (3, a.image_size, a.image_size)} if a.image_size else {}, model=m)
t_eval = create_transform(**cfg)
t_train = create_transform(**cfg, is_training=True)
emit("start", f"torch {torch.__version__} timm {timm.__version__} threads {torch.get_num_threads()}\n"
     f"architecture {arch} input {cfg['input_size']}\nlabels {labels} train {len(train)} val {len(val)}",
     torch=torch.__version__, timm=timm.__version__, threads=torch.get_num_threads(), architecture=arch,
     input_size=list(cfg["input_size"]), labels=labels, train=len(train), val=len(val),
     train_positives={t: int(sum(y[i] for _, y in train)) for t, i in index.items()},
     val_positives={t: int(sum(y[i] for _, y in val)) for t, i in index.items()})


# ---- metrics
def metrics(logits, Y):
    P = torch.sigmoid(logits).numpy().astype(np.float64); Y = Y.numpy().astype(int)
    present = [j for j in range(len(labels)) if Y[:, j].sum() > 0]
    thr = np.full(len(labels), 0.5)
    for j in present:
        prec, rec, th = precision_recall_curve(Y[:, j], P[:, j])
        f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
        thr[j] = th[int(np.argmax(f1))]  # argmax: the first, i.e. the lowest threshold among ties

    def at(t):
        pred = (P >= t).astype(int)
        return (float(f1_score(Y, pred, average="micro", zero_division=0)),
                float(f1_score(Y, pred, average="macro", labels=present, zero_division=0)) if present else 0.0,
                float(accuracy_score(Y, pred)))
    mi, ma, em = at(thr[None, :]); mi5, ma5, em5 = at(0.5)
    mAP = float(np.mean([average_precision_score(Y[:, j], P[:, j]) for j in present])) if present else 0.0
    return {"map": round(mAP, 6), "f1_micro": round(mi, 6), "f1_macro": round(ma, 6), "exact_match": round(em, 6),
            "f1_micro_at_05": round(mi5, 6), "f1_macro_at_05": round(ma5, 6), "exact_match_at_05": round(em5, 6),
            "thresholds": {labels[j]: round(float(thr[j]), 6) for j in range(len(labels))},
            "labels_in_val": len(present)}


def summary(mt):
    return (f"mAP {mt['map']:.4f}  F1 micro {mt['f1_micro']:.4f} macro {mt['f1_macro']:.4f} exact {mt['exact_match']:.4f}"
            f"  (at 0.5: F1 micro {mt['f1_micro_at_05']:.4f} macro {mt['f1_macro_at_05']:.4f} exact {mt['exact_match_at_05']:.4f})")


# ---- decode + features (eval transform), as peer_torch.py
t0 = time.time()
def load(items, tf):
    return torch.stack([tf(Image.open(f).convert("RGB")) for f, _ in items]), torch.stack([y for _, y in items])
Xtr, ytr = load(train, t_eval); Xva, yva = load(val, t_eval)
t_dec = time.time() - t0

m.eval()
def feats(X):
    out = []
    with torch.no_grad():
        for i in range(0, len(X), a.batch):
            out.append(m.forward_head(m.forward_features(X[i:i + a.batch]), pre_logits=True))
    return torch.cat(out)
t0 = time.time(); Ftr = feats(Xtr); Fva = feats(Xva); dt = time.time() - t0
n_all = len(Xtr) + len(Xva)
emit("features", f"decode+resize {n_all} images: {t_dec:.1f}s\nfeature forward: {n_all / dt:.1f} img/s ({dt:.1f}s)",
     images=n_all, decode_seconds=round(t_dec, 3), seconds=round(dt, 3), img_per_s=round(n_all / dt, 1),
     dim=int(Ftr.shape[1]))

# ---- loss: peer_torch.py uses plain cross-entropy (no class weights); --pos-weight is opt-in
pos = ytr.sum(0); neg = len(ytr) - pos
pos_weight = (neg / pos.clamp(min=1)).clamp(1, 10) if a.pos_weight else None
loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)

# ---- warm-up: a new head on the cached features, Adam 1e-3
head = torch.nn.Linear(Ftr.shape[1], len(labels)); opt = torch.optim.Adam(head.parameters(), 1e-3)
t0 = time.time()
for ep in range(a.warmup_epochs):
    perm = torch.randperm(len(Ftr))
    for i in range(0, len(Ftr), a.batch):
        idx = perm[i:i + a.batch]; loss = loss_fn(head(Ftr[idx]), ytr[idx])
        opt.zero_grad(); loss.backward(); opt.step()
dt = time.time() - t0
with torch.no_grad(): mt = metrics(head(Fva), yva)
ips = len(Ftr) * a.warmup_epochs / dt if dt > 0 and a.warmup_epochs else 0.0
emit("warmup", f"warm-up ({a.warmup_epochs} epochs on cached features, {dt:.2f}s, {ips:.0f} samples/s): {summary(mt)}",
     epochs=a.warmup_epochs, seconds=round(dt, 4), samples_per_s=round(ips, 1),
     pos_weight=None if pos_weight is None else {t: round(float(pos_weight[i]), 4) for t, i in index.items()}, **mt)

# ---- fine-tune: the whole network, AdamW 1e-4, BatchNorm in inference mode
with torch.no_grad():
    clf = m.get_classifier()
    clf.weight.copy_(head.weight); clf.bias.copy_(head.bias)
opt = torch.optim.AdamW(m.parameters(), 1e-4)


def train_mode():
    m.train()
    for mod in m.modules():  # Keras guide: keep BatchNorm in inference mode when fine-tuning a small set
        if isinstance(mod, torch.nn.BatchNorm2d): mod.eval()


train_mode()
for ep in range(a.finetune_epochs):
    t0 = time.time(); n = 0; perm = torch.randperm(len(train))
    for i in range(0, len(train), a.batch):
        idx = perm[i:i + a.batch]
        X = torch.stack([t_train(Image.open(train[j][0]).convert("RGB")) for j in idx]); y = ytr[idx]
        loss = loss_fn(m(X), y); opt.zero_grad(); loss.backward(); opt.step(); n += len(idx)
    dt = time.time() - t0
    m.eval()
    with torch.no_grad(): mt = metrics(torch.cat([m(Xva[i:i + a.batch]) for i in range(0, len(Xva), a.batch)]), yva)
    train_mode()
    emit("finetune", f"fine-tune epoch {ep + 1}: {n / dt:.1f} img/s (train step incl. decode+augment, {dt:.1f}s): {summary(mt)}",
         epoch=ep + 1, epochs=a.finetune_epochs, seconds=round(dt, 3), img_per_s=round(n / dt, 1), **mt)
