#!/usr/bin/env python3
"""Checks a tltui run directory with TensorBoard's own reader.

    check_runlog.py RUN_DIR [EVENTS.jsonl]

RUN_DIR is where the run wrote its checkpoints. The check:

- `metrics.csv` and `batches.csv` have their headers and rows;
- with EVENTS.jsonl (the run's `--headless --json` output), `metrics.csv` holds exactly the
  `validation` events (phase, epoch, loss, accuracy, accuracy_clean, in order) and
  `batches.csv` exactly the `batch` events;
- TensorBoard's `EventAccumulator` reads `RUN_DIR/runs` and its scalars equal the CSV files':
  `val/loss`, `val/accuracy`, `val/accuracy_clean`, `train/loss`, `train/accuracy` and `lr` at
  each row's step, `batch/loss`, `batch/accuracy` and `batch/lr` at each batch's step;
- `history.png`, `confusion_matrix.png` and `top_losses.png`, when `--pictures` is given, are
  PNG files.

Needs `pip install tensorboard`. Prints what it compared; exits 1 on the first mismatch.
"""

import csv
import json
import struct
import sys
from pathlib import Path


def f32(x):
    """A number as the float32 it was written from."""
    return struct.unpack("f", struct.pack("f", float(x)))[0]


def fail(msg):
    print(f"check_runlog: {msg}", file=sys.stderr)
    sys.exit(1)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    if not args:
        fail(__doc__)
    run = Path(args[0])
    metrics = rows(run / "metrics.csv")
    batches = rows(run / "batches.csv")
    if not metrics or not batches:
        fail(f"{run}: metrics.csv has {len(metrics)} rows, batches.csv {len(batches)}")

    if len(args) > 1:
        events = [json.loads(line) for line in open(args[1]) if line.startswith("{")]
        vals = [e for e in events if e.get("event") == "validation"]
        if len(vals) != len(metrics):
            fail(f"{len(vals)} validation events but {len(metrics)} rows in metrics.csv")
        for i, (v, r) in enumerate(zip(vals, metrics)):
            want = {
                "phase": v["phase"] or "",
                "epoch": str(v["epoch"]),
                "val_loss": f32(v["loss"]),
                "val_accuracy": f32(v["accuracy"]),
                "val_accuracy_clean": "" if v["accuracy_clean"] is None else f32(v["accuracy_clean"]),
            }
            got = {
                "phase": r["phase"],
                "epoch": r["epoch"],
                "val_loss": f32(r["val_loss"]),
                "val_accuracy": f32(r["val_accuracy"]),
                "val_accuracy_clean": r["val_accuracy_clean"] and f32(r["val_accuracy_clean"]),
            }
            if want != got:
                fail(f"metrics.csv row {i + 1}: {got} but the validation event says {want}")
        batch_events = [e for e in events if e.get("event") == "batch"]
        if len(batch_events) != len(batches):
            fail(f"{len(batch_events)} batch events but {len(batches)} rows in batches.csv")
        for i, (b, r) in enumerate(zip(batch_events, batches)):
            if (f32(b["loss"]), f32(b["accuracy"]), b["phase"]) != (
                f32(r["loss"]),
                f32(r["accuracy"]),
                r["phase"],
            ):
                fail(f"batches.csv row {i + 1}: {r} but the batch event says {b}")
        print(
            f"check_runlog: metrics.csv = {len(vals)} validation events, "
            f"batches.csv = {len(batch_events)} batch events"
        )

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "runs"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])

    def compare(tag, table, column):
        expected = [(int(r["step"]), f32(r[column])) for r in table if r[column] != ""]
        if not expected:
            return 0
        if tag not in tags:
            fail(f"TensorBoard has no scalar {tag!r} (it has {sorted(tags)})")
        got = [(e.step, f32(e.value)) for e in acc.Scalars(tag)]
        if got != expected:
            diff = next(
                (i, g, w) for i, (g, w) in enumerate(zip(got + [None] * len(expected), expected)) if g != w
            )
            fail(f"{tag}: {len(got)} values, {len(expected)} in the CSV; first difference at {diff}")
        return len(got)

    counted = {}
    for tag, column in [
        ("val/loss", "val_loss"),
        ("val/accuracy", "val_accuracy"),
        ("val/accuracy_clean", "val_accuracy_clean"),
        ("train/loss", "train_loss"),
        ("train/accuracy", "train_accuracy"),
        ("lr", "lr"),
    ]:
        counted[tag] = compare(tag, metrics, column)
    for tag, column in [("batch/loss", "loss"), ("batch/accuracy", "accuracy"), ("batch/lr", "lr")]:
        counted[tag] = compare(tag, batches, column)
    print("check_runlog: TensorBoard's EventAccumulator reads back the CSV values:", counted)

    if "--pictures" in argv:
        for name in ["history.png", "confusion_matrix.png", "top_losses.png"]:
            head = (run / name).read_bytes()[:8]
            if head != b"\x89PNG\r\n\x1a\n":
                fail(f"{name} is not a PNG")
        print("check_runlog: history.png, confusion_matrix.png, top_losses.png are PNGs")


if __name__ == "__main__":
    main(sys.argv[1:])
