#!/usr/bin/env python3
"""The label-issue finder against cleanlab on the same features, on copies of a class-folder
dataset with a share of each class's labels flipped (the truth kept outside the copy).

For each rate: a copy of CLASS_ROOT whose images are symlinks, `round(rate * n)` of each class's
images filed under another class (seeded); `tltui inspect COPY --label-issues --json` gives
tltui's flags; `tltui embed --json` gives the same images' features, on which cleanlab's
`find_label_issues` (its defaults) runs over 5-fold logistic-regression probabilities. Precision,
recall and F1 of both against the truth, and the finder's own time.

With --fix-check, also: does fixing help? A clean test set (a stratified 20 % of the images, true
labels) is held out; the rest is flipped; a warm-up on the flipped pool and one on the pool's
`--write-labels` file are each evaluated on the clean test set (`tltui eval --all`).

usage: label_issues_bench.py TLTUI CLASS_ROOT --weights W [--rates 0.05 0.2] [--fix-check]
                             [--work DIR] [--seed 0]
"""
import argparse, hashlib, json, os, random, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("tltui")
ap.add_argument("root")
ap.add_argument("--weights", required=True)
ap.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.2])
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--work")
ap.add_argument("--fix-check", action="store_true")
a = ap.parse_args()
work = a.work or tempfile.mkdtemp(prefix="label-issues-")
IMAGE = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def listing(root):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    return classes, {
        c: sorted(os.path.join(root, c, f) for f in os.listdir(os.path.join(root, c)) if f.lower().endswith(IMAGE))
        for c in classes
    }


def flipped_copy(dest, files, classes, rate, rng):
    """Symlinks of `files` ({class: [path]}) under dest/CLASS, a `rate` of each class under
    another class; returns {copy path: true class}, {copy path: given class}."""
    truth, given = {}, {}
    for c, paths in files.items():
        flip = set(rng.sample(range(len(paths)), round(rate * len(paths))))
        for i, src in enumerate(paths):
            label = rng.choice([o for o in classes if o != c]) if i in flip else c
            os.makedirs(os.path.join(dest, label), exist_ok=True)
            # A name that does not give the true class away.
            name = hashlib.sha1(src.encode()).hexdigest()[:12] + os.path.splitext(src)[1]
            link = os.path.join(dest, label, name)
            os.symlink(os.path.abspath(src), link)
            truth[os.path.abspath(link)], given[os.path.abspath(link)] = c, label
    return truth, given


def run(*args):
    out = subprocess.run([a.tltui, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def scores(flagged, truth, given):
    wrong = {p for p in truth if truth[p] != given[p]}
    hit = len(flagged & wrong)
    p = hit / len(flagged) if flagged else 0.0
    r = hit / len(wrong) if wrong else 1.0
    return {"flagged": len(flagged), "wrong": len(wrong), "precision": round(p, 4), "recall": round(r, 4),
            "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}


def tltui_finder(copy):
    t = time.time()
    report = json.loads(run("inspect", copy, "--label-issues", "--json", "--weights", a.weights))
    issues = report["label_issues"]
    return {os.path.abspath(f["path"]) for f in issues["flagged"]}, issues, time.time() - t


def cleanlab_finder(paths, given, classes):
    import numpy as np
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    rows = [json.loads(l) for l in run("embed", "--weights", a.weights, "--json", *paths).splitlines() if l.strip()]
    feats = {os.path.abspath(r["path"]): r["features"] for r in rows}
    order = [p for p in paths if p in feats]
    x = np.array([feats[p] for p in order], dtype=np.float32)
    y = np.array([classes.index(given[p]) for p in order])
    t = time.time()
    probs = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=StratifiedKFold(5, shuffle=True, random_state=a.seed), method="predict_proba")
    mask = find_label_issues(labels=y, pred_probs=probs)
    return {p for p, m in zip(order, mask) if m}, time.time() - t


classes, files = listing(a.root)
results = []
for rate in a.rates:
    rng = random.Random(a.seed)
    copy = os.path.join(work, f"flip-{rate}")
    truth, given = flipped_copy(copy, files, classes, rate, rng)
    with open(os.path.join(work, f"flip-{rate}.truth.json"), "w") as f:
        json.dump(truth, f)
    ours, issues, wall = tltui_finder(copy)
    theirs, cl_seconds = cleanlab_finder(sorted(truth), given, classes)
    results.append({"rate": rate, "images": len(truth), "tltui": scores(ours, truth, given) | {"finder_seconds": round(issues["seconds"], 3), "out_of_fold_accuracy": issues["out_of_fold_accuracy"], "outliers": len(issues["outliers"])},
                    "cleanlab": scores(theirs, truth, given) | {"seconds": round(cl_seconds, 3)}})
    print(json.dumps(results[-1]), flush=True)

if a.fix_check:
    rng = random.Random(a.seed + 1)
    test, pool = {}, {}
    for c, paths in files.items():
        shuffled = paths[:]
        rng.shuffle(shuffled)
        k = round(0.2 * len(shuffled))
        test[c], pool[c] = shuffled[:k], shuffled[k:]
    clean = os.path.join(work, "clean-test")
    flipped_copy(clean, test, classes, 0.0, rng)
    rate = max(a.rates)
    noisy = os.path.join(work, f"pool-{rate}")
    flipped_copy(noisy, pool, classes, rate, rng)
    fixed = os.path.join(work, f"pool-{rate}.fixed.csv")
    run("inspect", noisy, "--label-issues", "--weights", a.weights, "--write-labels", fixed)

    def warmup_accuracy(name, *source):
        ck = os.path.join(work, f"ck-{name}")
        run(noisy, *source, "--headless", "--json", "--weights", a.weights, "--warmup-epochs", "auto",
            "--finetune-epochs", "0", "--checkpoint-dir", ck)
        out = json.loads(run("eval", os.path.join(ck, "final.safetensors"), clean, "--all", "--json"))
        return out["accuracy"]

    fix = {"rate": rate, "clean_test_images": sum(len(v) for v in test.values()),
           "warmup_on_flipped": warmup_accuracy("flipped"),
           "warmup_on_fixed_labels": warmup_accuracy("fixed", "--labels", fixed)}
    print(json.dumps({"fix_check": fix}), flush=True)
