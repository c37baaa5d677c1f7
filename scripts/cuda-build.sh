#!/usr/bin/env bash
# Builds tltui with `--features cuda` on a machine without the CUDA toolkit or a GPU.
#
# Fetches the CUDA 13.0 compiler and libraries from PyPI into $TOOLKIT (default
# target/cuda-toolkit): nvcc, cicc (nvvm), the crt/cccl headers, the runtime, cuBLAS, cuRAND and
# NVRTC. The driver library (libcuda.so.1) only comes with the GPU driver, so the linker gets a
# stub of it made here from cuda.h's function names; at run time the real driver provides them.
# CUDA_COMPUTE_CAP (default 90, Hopper) picks the GPU generation the kernels are compiled for,
# as there is no nvidia-smi to ask. Extra arguments go to cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLKIT=${TOOLKIT:-$PWD/target/cuda-toolkit}

if [ ! -x "$TOOLKIT/venv/bin/pip" ]; then
  python3 -m venv "$TOOLKIT/venv"
fi
"$TOOLKIT/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
  'nvidia-cuda-nvcc==13.0.*' 'nvidia-nvvm==13.0.*' 'nvidia-cuda-crt==13.0.*' \
  'nvidia-cuda-cccl==13.0.*' 'nvidia-cuda-runtime==13.0.*' 'nvidia-cublas==13.0.*' \
  'nvidia-cuda-nvrtc==13.0.*' 'nvidia-curand==10.4.*'
CUDA_ROOT=$(echo "$TOOLKIT"/venv/lib/python3*/site-packages/nvidia/cu13)

# The wheels ship versioned libraries only; the linker looks for the plain names.
for lib in cublas cublasLt curand nvrtc cudart; do
  versioned=$(cd "$CUDA_ROOT/lib" && ls "lib$lib.so."* | head -n 1)
  ln -sf "$versioned" "$CUDA_ROOT/lib/lib$lib.so"
done

# A stub driver library: every cu* name cuda.h mentions, as an empty function.
mkdir -p "$CUDA_ROOT/lib/stubs"
if [ ! -e "$CUDA_ROOT/lib/stubs/libcuda.so" ]; then
  grep -ohE '\bcu[A-Z][A-Za-z0-9_]*\b' "$CUDA_ROOT/include/cuda.h" | sort -u |
    sed 's/.*/void &(void) {}/' > "$TOOLKIT/libcuda-stub.c"
  cc -shared -fPIC -o "$CUDA_ROOT/lib/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 \
    "$TOOLKIT/libcuda-stub.c"
fi

export CUDA_ROOT PATH="$CUDA_ROOT/bin:$PATH" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LD_LIBRARY_PATH="$CUDA_ROOT/lib:${LD_LIBRARY_PATH:-}"
cargo build --release --features cuda "$@"
echo "built target/release/tltui with CUDA (compute capability $CUDA_COMPUTE_CAP);"
echo "at run time it needs the GPU driver and LD_LIBRARY_PATH=$CUDA_ROOT/lib"
