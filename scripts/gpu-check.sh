#!/usr/bin/env bash
# For a machine with an NVIDIA GPU (and ../shared): builds tltui with CUDA, runs the numerical
# checks on the GPU — timm's golden logits, the portable ops and a full training pass against the
# CPU kernels — then the bench's figures on the GPU, and PyTorch's train step on the same GPU when
# torch with CUDA is installed. Prints a table at the end. About 5 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/cuda-build.sh
CUDA_ROOT=$(echo "${TOOLKIT:-$PWD/target/cuda-toolkit}"/venv/lib/python3*/site-packages/nvidia/cu13)
export CUDA_ROOT PATH="$CUDA_ROOT/bin:$PATH" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LD_LIBRARY_PATH="$CUDA_ROOT/lib:${LD_LIBRARY_PATH:-}"
OUT=${OUT:-target/gpu-check}
mkdir -p "$OUT"

echo "== numerical checks on CUDA"
cargo test --release --features cuda --lib ops_on_cuda -- --nocapture 2>&1 | tee "$OUT/ops.txt"
cargo test --release --features cuda --test golden --test backbones cuda -- --nocapture 2>&1 |
  tee "$OUT/model.txt"

echo "== bench"
W=../shared/hub/timm/tf_efficientnet_lite0.in1k
DATA=../shared/datasets/Dog-Cat-Classifier
for batch in 32 128; do
  ./target/release/tltui bench "$DATA" --weights "$W/model.safetensors" --device cuda \
    --batch "$batch" --reps 5 --json | tee "$OUT/bench-cuda-$batch.json"
done
./target/release/tltui bench "$DATA" --weights "$W/model.safetensors" --device cpu \
  --batch 32 --reps 3 --json | tee "$OUT/bench-cpu-32.json"

if python3 -c 'import torch, timm; assert torch.cuda.is_available()' 2>/dev/null; then
  for batch in 32 128; do
    python3 - "$W" "$batch" <<'PY' | tee "$OUT/torch-cuda-$batch.json"
import json, sys, time, timm, torch
from safetensors.torch import load_file
w, batch = sys.argv[1], int(sys.argv[2])
m = timm.create_model("tf_efficientnet_lite0", num_classes=2).cuda()
m.load_state_dict({k: v for k, v in load_file(w + "/model.safetensors").items() if not k.startswith("classifier")}, strict=False)
for mod in m.modules():
    if isinstance(mod, torch.nn.BatchNorm2d): mod.eval()
x = torch.randn(batch, 3, 224, 224, device="cuda"); y = torch.zeros(batch, dtype=torch.long, device="cuda")
opt = torch.optim.AdamW(m.parameters(), 1e-4)
def step():
    loss = torch.nn.functional.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
def timed(f, reps=5):
    f(); torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        t = time.time(); f(); torch.cuda.synchronize(); ts.append(time.time() - t)
    return sorted(ts)[reps // 2]
m.eval()
with torch.no_grad():
    fwd = batch / timed(lambda: m(x))
m.train()
for mod in m.modules():
    if isinstance(mod, torch.nn.BatchNorm2d): mod.eval()
print(json.dumps({"forward_img_per_s": fwd, "train_img_per_s": batch / timed(step), "batch": batch}))
PY
  done
else
  echo "(no torch with CUDA here: PyTorch figures left out)"
fi

echo "== summary"
python3 - "$OUT" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
print(f"{'run':<22}{'forward img/s':>15}{'train img/s':>13}")
for name in ["bench-cpu-32", "bench-cuda-32", "bench-cuda-128", "torch-cuda-32", "torch-cuda-128"]:
    r = load(name + ".json")
    if r:
        print(f"{name:<22}{r['forward_img_per_s']:>15.1f}{r['train_img_per_s']:>13.1f}")
for name in ["ops.txt", "model.txt"]:
    text = open(os.path.join(out, name)).read()
    print(name, "passed" if "test result: ok" in text and "FAILED" not in text else "FAILED")
PY
