#!/usr/bin/env python3
"""Checks a `tltui export --format onnx` file with the ONNX checker and runs it in onnxruntime.

usage: check_onnx.py MODEL.onnx [--run INPUT.npy]... [--bench BATCH SECONDS] [--save-pixels DIR]
                     [--images IMAGE... | --cropped IMAGE...]
  always      onnx.checker.check_model(full_check=True), then prints one JSON object: the
              metadata, and what the options below produced
  --run X     feeds the float32 array in X.npy to the graph's input and writes each output
              beside it as X.<output>.npy (logits, probabilities)
  --images    resizes each image as README.md's "Deploying with ONNX" says (EXIF orientation
              applied, PIL bicubic, shorter side to `resize`, center crop), feeds the uint8
              pixels (a --with-preprocessing export) and reports the top class (named from the
              metadata) and its probability (softmax; multi-label models: its sigmoid)
  --save-pixels DIR  also writes the pixels fed for each image as DIR/<file stem>.png
  --cropped   as --images, for images already resized and cropped to the input size
  --bench     onnxruntime's CPU images/s on random inputs of BATCH images for about SECONDS
needs: pip install onnx onnxruntime numpy pillow"""
import json, os, sys, time

import numpy as np
import onnx
import onnxruntime as ort


def pixels(path, meta, cropped=False):
    """The README's resize: uint8 RGB [1, size, size, 3] of the image at `path` (`cropped`: the
    image is that size already)."""
    from PIL import Image, ImageOps
    size, resize = json.loads(meta["input_size"])[1], int(meta["resize"])
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    if cropped:
        assert img.size == (size, size), f"{path}: {img.size}, not {size}x{size}"
        return np.asarray(img, dtype=np.uint8)[None]
    w, h = img.size
    nw, nh = (resize, resize * h // w) if w <= h else (resize * w // h, resize)
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = round((nw - size) / 2), round((nh - size) / 2)
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)[None]


def main(argv):
    path, rest = argv[0], argv[1:]
    runs, images, bench, cropped, save_pixels = [], [], None, False, None
    i = 0
    while i < len(rest):
        if rest[i] == "--run":
            runs.append(rest[i + 1]); i += 2
        elif rest[i] == "--save-pixels":
            save_pixels = rest[i + 1]; i += 2
        elif rest[i] == "--bench":
            bench = (int(rest[i + 1]), float(rest[i + 2])); i += 3
        elif rest[i] in ("--images", "--cropped"):
            images, cropped = rest[i + 1:], rest[i] == "--cropped"; break
        else:
            sys.exit(f"unknown argument {rest[i]!r}\n{__doc__}")
    onnx.checker.check_model(path, full_check=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    input_name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    report = {"checked": True, "metadata": meta, "input": input_name, "outputs": outputs}
    for x in runs:
        results = session.run(None, {input_name: np.load(x)})
        for name, value in zip(outputs, results):
            np.save(x[:-len(".npy")] + f".{name}.npy", value)
    if images:
        labels = json.loads(meta["label_names"])
        predictions = []
        for image in images:
            fed = pixels(image, meta, cropped)
            if save_pixels:
                from PIL import Image
                stem = os.path.splitext(os.path.basename(image))[0]
                Image.fromarray(fed[0]).save(os.path.join(save_pixels, stem + ".png"))
            logits = session.run(["logits"], {input_name: fed})[0][0]
            if meta.get("problem_type") == "multi_label_classification":
                p = 1 / (1 + np.exp(-logits))  # a sigmoid per label
            else:
                p = np.exp(logits - logits.max()); p /= p.sum()
            top = int(p.argmax())
            predictions.append({"path": image, "class": labels[top], "probability": float(p[top])})
        report["predictions"] = predictions
    if bench:
        batch, seconds = bench
        shape = [batch] + [d for d in session.get_inputs()[0].shape[1:]]
        if input_name == "pixels":
            x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        else:
            x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        session.run(None, {input_name: x})
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, {input_name: x}); done += batch
        report["img_per_s"] = done / (time.perf_counter() - start)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
