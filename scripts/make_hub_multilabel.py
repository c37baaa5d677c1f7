#!/usr/bin/env python3
"""Writes a small multi-label Hugging Face Hub dataset repository, in the layout the Hub stores
(as ../shared/hub/datasets/tltui-test/dog-cat is), made from Dog-Cat's images:

  OUT/README.md                                   YAML dataset_info (features, splits, sizes) + configs
  OUT/data/train-00000-of-00001.parquet           24 rows
  OUT/data/validation-00000-of-00001.parquet      12 rows

Columns: `image` (Image feature, bytes embedded, `path` the source's file name such as
`cat.12.jpg`, `collage_0001.jpg`, `blank_0001.png`) and `labels` = a list of
ClassLabel(names=["cat", "dog"]) (`Sequence(ClassLabel(...))`, which datasets >= 4 writes as
`List(ClassLabel(...))`, YAML `list: class_label:`). Each split has single cats ([0]), single dogs
([1]), side-by-side collages of a cat and a dog ([0, 1]) and one synthetic image with no tag ([]).

Everything is done with the `datasets` library's own code the way `Dataset(Dict).push_to_hub`
does it, only to a local folder instead of a commit: the image files are cast to Image() and
embedded with `embed_table_storage`, each split is written with `Dataset.to_parquet` at push_to_hub's
writer batch size, the split sizes are `_estimate_nbytes()` / the parquet file's size, and README.md
comes from push_to_hub's own `_get_updated_dataset_card` (falling back to the public
DatasetInfosDict / MetadataConfigs calls it makes, should that private helper move).

usage: make_hub_multilabel.py OUT [--src DOG_CAT_TRAIN_DATA] [--seed 0]
  OUT    a new or empty folder, e.g. HUB/datasets/ORG/NAME for hub_stand_in.py to serve
  --src  default ../shared/datasets/Dog-Cat-Classifier/Data/Train_Data (beside the repository)
needs: pip install datasets pyarrow pillow"""
import argparse, glob, os, random, sys, tempfile

import datasets
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage

here = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--src", default=os.path.join(here, "..", "..", "shared", "datasets", "Dog-Cat-Classifier", "Data", "Train_Data"))
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
out = os.path.abspath(a.out)
shared = os.path.abspath(os.path.join(here, "..", "..", "shared"))
if out == shared or out.startswith(shared + os.sep):
    sys.exit(f"refusing to write into {shared}")
if os.path.exists(out) and os.listdir(out):
    sys.exit(f"{out} exists and is not empty")
datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()

NAMES = ["cat", "dog"]
# per split: single cats, single dogs, collages, images without a tag
PLAN = {"train": (8, 8, 7, 1), "validation": (4, 4, 3, 1)}
ListOf = getattr(datasets, "List", None) or datasets.Sequence  # Sequence(x) is List(x) in datasets >= 4
FEATURES = Features({"image": Image(), "labels": ListOf(ClassLabel(names=NAMES))})

rng = random.Random(a.seed)
pools = {}
for c in NAMES:
    files = sorted(glob.glob(os.path.join(a.src, c, "*.jpg")))
    if not files:
        sys.exit(f"no JPEGs in {os.path.join(a.src, c)}")
    rng.shuffle(files)
    pools[c] = files
tmp = tempfile.mkdtemp(prefix="make_hub_multilabel-")


def collage(left, right, name, height=224):
    halves = []
    for f in (left, right):
        im = PILImage.open(f).convert("RGB")
        halves.append(im.resize((max(1, round(im.width * height / im.height)), height), PILImage.BICUBIC))
    canvas = PILImage.new("RGB", (halves[0].width + halves[1].width, height))
    canvas.paste(halves[0], (0, 0)); canvas.paste(halves[1], (halves[0].width, 0))
    path = os.path.join(tmp, name); canvas.save(path, "JPEG", quality=95)
    return path


def blank(name, k):
    """A synthetic image with no cat and no dog: a seeded colour gradient."""
    r = random.Random(a.seed * 1000 + k); c0 = [r.randrange(256) for _ in range(3)]; c1 = [r.randrange(256) for _ in range(3)]
    im = PILImage.new("RGB", (160, 120))
    im.putdata([tuple(round(c0[i] + (c1[i] - c0[i]) * x / 159) for i in range(3)) for y in range(120) for x in range(160)])
    path = os.path.join(tmp, name); im.save(path, "PNG")
    return path


taken = {c: 0 for c in NAMES}
def take(c):
    taken[c] += 1
    return pools[c][taken[c] - 1]


n_col = n_blank = 0
splits = {}
for split, (n_cat, n_dog, n_coll, n_none) in PLAN.items():
    images, labels = [], []
    for _ in range(n_cat): images.append(take("cat")); labels.append([0])
    for _ in range(n_dog): images.append(take("dog")); labels.append([1])
    for _ in range(n_coll):
        n_col += 1; cat, dog = take("cat"), take("dog")
        images.append(collage(*((cat, dog) if n_col % 2 else (dog, cat)), f"collage_{n_col:04d}.jpg")); labels.append([0, 1])
    for _ in range(n_none):
        n_blank += 1; images.append(blank(f"blank_{n_blank:04d}.png", n_blank)); labels.append([])
    order = list(range(len(images))); rng.shuffle(order)  # mixed, like a real split
    splits[split] = Dataset.from_dict({"image": [images[i] for i in order], "labels": [labels[i] for i in order]}).cast(FEATURES)

# ---- what push_to_hub does per split (Dataset._push_parquet_shards_to_hub{,_single}), to local files
from datasets.arrow_writer import get_writer_batch_size_from_data_size, get_writer_batch_size_from_features
from datasets.splits import SplitInfo
from datasets.table import embed_table_storage

data_dir = "data"
os.makedirs(os.path.join(out, data_dir), exist_ok=True)
splits_info, uploaded_sizes = [], []
for split, ds in splits.items():
    nbytes = ds._estimate_nbytes()
    wbs = get_writer_batch_size_from_features(ds.features) or get_writer_batch_size_from_data_size(len(ds), nbytes)
    shard = ds.shard(num_shards=1, index=0, contiguous=True)
    fmt = shard.format
    shard = shard.with_format("arrow").map(embed_table_storage, batched=True, batch_size=wbs, keep_in_memory=True).with_format(**fmt)
    path = os.path.join(out, data_dir, f"{split}-00000-of-00001.parquet")
    shard.to_parquet(path, batch_size=wbs)
    splits_info.append(SplitInfo(name=split, num_bytes=nbytes, num_examples=len(ds)))
    uploaded_sizes.append(os.path.getsize(path))

# ---- the dataset card, as push_to_hub writes it for a new repository (no README there yet)
try:
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem
    from datasets.dataset_dict import _get_updated_dataset_card
    # fs: the repository before the commit, i.e. empty (pointing it at OUT, which has data/ by now,
    # would make the helper think the files predate metadata configs and put `configs` first)
    empty = tempfile.mkdtemp(prefix="make_hub_multilabel-repo-")
    card, legacy = _get_updated_dataset_card(fs=DirFileSystem(path=empty, fs=LocalFileSystem()), config_name="default",
                                             splits_info=splits_info, features=FEATURES, data_dir=data_dir, set_default=None,
                                             uploaded_sizes=uploaded_sizes, deleted_sizes=[], remove_other_splits=True)
    text = str(card)
    os.rmdir(empty)
except ImportError:  # the private helper moved: the public calls it makes
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData
    info = DatasetInfo(config_name="default", features=FEATURES, splits=SplitDict(), download_size=0, dataset_size=0)
    for si, up in zip(splits_info, uploaded_sizes):
        info.splits.add(si); info.download_size += up; info.dataset_size += si.num_bytes
    info.size_in_bytes = info.download_size + info.dataset_size
    card_data = DatasetCardData()
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    MetadataConfigs({"default": {"data_files": [{"split": si.name, "path": f"{data_dir}/{si.name}-*"} for si in splits_info]}}).to_dataset_card_data(card_data)
    text = str(DatasetCard(f"---\n{card_data}\n---\n"))
with open(os.path.join(out, "README.md"), "w", encoding="utf-8", newline="") as fh:
    fh.write(text)

for f in os.listdir(tmp):
    os.remove(os.path.join(tmp, f))
os.rmdir(tmp)
print(f"{out}: datasets {datasets.__version__}; " + ", ".join(f"{s} {len(d)}" for s, d in splits.items())
      + f"; {n_col} collages, {n_blank} without a tag")
