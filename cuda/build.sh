#!/usr/bin/env bash
# Builds `flow --features cuda` on a machine without a GPU (CI runs this on
# every submission), and packs the binary for a GPU machine:
#
#   cuda/build.sh                # toolkit into target/cuda-toolkit, build into target/cuda
#
# Results: target/cuda/release/flow (the build), target/cuda/flow (stripped,
# about 80 MB) and target/cuda/flow.xz (about 12 MB: what `cuda/gpu_check.py`
# takes to a GPU machine, whose copy limit is 64 MiB).
#
# CUDA_COMPUTE_CAP (default 90: H100/H200, the GPUs lent to this project)
# chooses the PTX target of candle's kernels. The driver compiles PTX for
# its GPU when loading it, forward-compatibly: a build for 80 also runs on
# 8.6, 8.9 and 9.0 GPUs (without the newer architectures' instructions),
# one for 90 only on 9.0 and later.
#
# The binary links the CUDA driver (libcuda.so.1) and cuBLAS, cuRAND and the
# CUDA runtime (13.x) dynamically: it starts only where those libraries are
# found (the driver's folder, and LD_LIBRARY_PATH for the others; a Python
# environment with torch's CUDA 13 wheels has them).
set -euo pipefail
cd "$(dirname "$0")/.."

bash cuda/toolkit.sh target/cuda-toolkit
# shellcheck source=/dev/null
source target/cuda-toolkit/env.sh
echo "building flow with CUDA for compute capability $CUDA_COMPUTE_CAP"
# No debug info: the binary is stripped for travel anyway, and linking
# without it is quicker.
CARGO_PROFILE_RELEASE_DEBUG=0 cargo build --release --locked --features cuda --target-dir target/cuda --bin flow
strip -o target/cuda/flow.tmp target/cuda/release/flow && mv target/cuda/flow.tmp target/cuda/flow
xz -T0 -6 -c target/cuda/flow >target/cuda/flow.xz.tmp && mv target/cuda/flow.xz.tmp target/cuda/flow.xz
echo "CUDA build: target/cuda/flow ($(du -h target/cuda/flow | cut -f1)), target/cuda/flow.xz ($(du -h target/cuda/flow.xz | cut -f1))"
