#!/usr/bin/env bash
# Installs the CUDA 13.0 compiler, headers and libraries that candle's CUDA
# build needs from NVIDIA's wheels on the Python package index (no GPU, no
# driver, no root needed), into one folder laid out like a CUDA toolkit:
#
#   cuda/toolkit.sh [DIR]          # DIR defaults to target/cuda-toolkit
#   source DIR/env.sh              # CUDA_HOME/CUDA_PATH/CUDA_ROOT, PATH, CUDA_COMPUTE_CAP
#
# Versions are pinned to CUDA 13.0: candle's kernels are PTX, compiled to
# machine code by the GPU driver when loaded, and a driver only accepts PTX
# from a toolkit no newer than itself (the GPU machines run 13.0 drivers).
#
# What the wheels lack is the driver library, libcuda.so: cudarc (with the
# `dynamic-linking` feature candle turns on) links against it. A real
# toolkit ships a stub for that (lib64/stubs/libcuda.so); the wheels do not,
# so this script builds the same kind of stub: a shared library named
# libcuda.so.1 exporting every function that the toolkit's own cuda.h
# declares, found by running the header through the C preprocessor (so the
# versioned names like cuMemAlloc_v2 are the real ones). Its bodies are
# never run: at run time the loader finds the driver's libcuda.so.1.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${1:-target/cuda-toolkit}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
root="$dir/nvidia/cu13"

wheels=(
    nvidia-cuda-nvcc==13.0.88     # nvcc, ptxas, fatbinary
    nvidia-nvvm==13.0.88          # cicc and libdevice (nvcc's back end)
    nvidia-cuda-crt==13.0.88      # nvcc's crt headers
    nvidia-cuda-cccl==13.0.85     # cuda/std headers (cub, thrust, libcu++)
    nvidia-cuda-runtime==13.0.96  # cuda.h, cuda_runtime.h, libcudart
    nvidia-cuda-nvrtc==13.0.88    # libnvrtc (cudarc links it)
    nvidia-cublas==13.0.2.14      # libcublas, libcublasLt
    nvidia-curand==10.4.0.35      # libcurand (CUDA 13.0's)
)
stamp="$dir/.installed"
want="$(printf '%s\n' "${wheels[@]%%#*}" | tr -d ' ')"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    rm -rf "$dir/nvidia" "$stamp"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
        --target "$dir" $want
    echo "$want" >"$stamp"
fi

[[ -x "$root/bin/nvcc" && -f "$root/include/cuda.h" ]] || {
    echo "error: $root does not hold nvcc and cuda.h after installing the wheels" >&2
    exit 1
}

# The linker looks for unversioned names (-lcublas); the wheels ship only the
# versioned ones (libcublas.so.13).
for lib in "$root"/lib/lib*.so.*; do
    base="${lib##*/}"
    ln -sfn "$base" "$root/lib/${base%%.so.*}.so"
done
ln -sfn lib "$root/lib64"

# The driver stub (see above).
stubs="$root/lib/stubs"
if [[ ! -f "$stubs/libcuda.so" || "$root/include/cuda.h" -nt "$stubs/libcuda.so" ]]; then
    mkdir -p "$stubs"
    cc -E -P -I "$root/include" "$root/include/cuda.h" \
        | python3 -c '
import re, sys
names = sorted(set(re.findall(r"\bCUresult\s+(cu[A-Za-z0-9_]+)\s*\(", sys.stdin.read())))
if len(names) < 300:
    sys.exit(f"only {len(names)} driver functions found in cuda.h")
print("/* Link-time stand-in for the CUDA driver (libcuda.so.1); never run. */")
for n in names:
    print(f"void {n}(void) {{}}")
' >"$stubs/libcuda.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so.tmp" "$stubs/libcuda.c"
    mv "$stubs/libcuda.so.tmp" "$stubs/libcuda.so"
fi

cat >"$dir/env.sh" <<ENV
# Source this to build flow with --features cuda against $root.
export CUDA_HOME="$root" CUDA_PATH="$root" CUDA_ROOT="$root"
export PATH="$root/bin:\$PATH"
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-90}"
ENV
echo "CUDA toolkit: $root ($("$root/bin/nvcc" --version | grep -o 'release [0-9.]*'), $(nm -D --defined-only "$stubs/libcuda.so" | grep -c ' T ') driver functions in the stub)"
