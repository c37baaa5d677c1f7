#!/usr/bin/env python3
"""Builds a multi-label dataset from Dog-Cat's class folders: single cat images (tag `cat`), single
dog images (tag `dog`), and side-by-side collages of one cat and one dog image (tags `cat dog`).
Every source image is used exactly once; which ones go into collages is seeded.

usage: make_multilabel_dogcat.py SRC_TRAIN_DATA OUT [--seed 0] [--collages N] [--limit K]
                                 [--height 224] [--val-share F]
  SRC_TRAIN_DATA  a folder with cat/ and dog/ (e.g. ../shared/datasets/Dog-Cat-Classifier/Data/Train_Data)
  OUT             a new or empty folder: OUT/images/*.jpg and OUT/labels.csv are written
  --collages N    how many collages (default: a third of the smaller class)
  --limit K       use only the first K images of each class after the seeded shuffle (tiny smoke data)
  --height H      collages are H x H squares, each image fitted into its half; default 224
  --val-share F   also write OUT/split.csv (`file_name,labels,split`, what peer_multilabel.py reads):
                  a seeded share F of each tag set (cat / dog / cat dog) is `val`, the rest `train`

Single images are copied byte for byte (their original JPEG); collages are saved as JPEG quality 95.
labels.csv: header `file_name,tags`, file names relative to the CSV (`images/cat_0001.jpg`,
`images/collage_0001.jpg`), tags space-separated in one column, rows sorted by file name.
The cat is on the left in odd-numbered collages, on the right in even-numbered ones.
needs: pip install pillow"""
import argparse, csv, glob, os, random, shutil, sys

from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("src"); ap.add_argument("out")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--collages", type=int)
ap.add_argument("--limit", type=int)
ap.add_argument("--height", type=int, default=224)
ap.add_argument("--val-share", type=float)
a = ap.parse_args()

src, out = os.path.abspath(a.src), os.path.abspath(a.out)
shared = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared"))
if out == shared or out.startswith(shared + os.sep):
    sys.exit(f"refusing to write into {shared}")
if os.path.exists(out) and os.listdir(out):
    sys.exit(f"{out} exists and is not empty")

rng = random.Random(a.seed)
pools = {}
for c in ("cat", "dog"):
    files = sorted(glob.glob(os.path.join(src, c, "*.jpg")) + glob.glob(os.path.join(src, c, "*.jpeg")))
    if not files:
        sys.exit(f"no JPEGs in {os.path.join(src, c)}")
    rng.shuffle(files)
    pools[c] = files[:a.limit] if a.limit else files
n_col = a.collages if a.collages is not None else min(len(p) for p in pools.values()) // 3
if n_col > min(len(p) for p in pools.values()):
    sys.exit(f"--collages {n_col} needs that many images of each class")


def collage(left, right, height):
    """A square `height` x `height` picture: each image fitted (aspect kept) into its half, on
    grey, so that a centre crop of the square keeps both animals."""
    canvas = Image.new("RGB", (height, height), (128, 128, 128))
    half = height // 2
    for k, f in enumerate((left, right)):
        im = Image.open(f).convert("RGB")
        scale = min(half / im.width, height / im.height)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
        canvas.paste(im, (k * half + (half - im.width) // 2, (height - im.height) // 2))
    return canvas


os.makedirs(os.path.join(out, "images"), exist_ok=True)
rows = []
for i in range(n_col):
    cat, dog = pools["cat"][i], pools["dog"][i]
    # alternate which side the cat is on so position is no shortcut
    left, right = (cat, dog) if i % 2 == 0 else (dog, cat)
    name = f"images/collage_{i + 1:04d}.jpg"
    collage(left, right, a.height).save(os.path.join(out, name), "JPEG", quality=95)
    rows.append((name, "cat dog"))
for c in ("cat", "dog"):
    for i, f in enumerate(pools[c][n_col:]):
        name = f"images/{c}_{i + 1:04d}.jpg"
        shutil.copyfile(f, os.path.join(out, name))
        rows.append((name, c))

with open(os.path.join(out, "labels.csv"), "w", newline="") as fh:
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(["file_name", "tags"])
    w.writerows(sorted(rows))
if a.val_share is not None:
    split = {}
    for tags in ("cat", "dog", "cat dog"):
        names = sorted(n for n, t in rows if t == tags); rng.shuffle(names); k = round(len(names) * a.val_share)
        split.update({n: "val" if i < k else "train" for i, n in enumerate(names)})
    with open(os.path.join(out, "split.csv"), "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["file_name", "labels", "split"])
        w.writerows((n, t, split[n]) for n, t in sorted(rows))
counts = {"cat": len(pools["cat"]) - n_col, "dog": len(pools["dog"]) - n_col, "cat dog": n_col}
print(f"{out}: {len(rows)} images ({counts['cat']} cat, {counts['dog']} dog, {counts['cat dog']} collages)")
