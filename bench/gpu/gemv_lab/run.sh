#!/bin/bash
# On the GPU machine: bench/gpu/gemv_lab/run.sh [layers] [repeats] — builds lab.cu with nvcc for
# the local GPU and prints its JSON lines. mma.cu's `#if __CUDA_ARCH__ >= 800` hides its kernels
# from nvcc's host pass, so the lab includes a copy with the guard opened (sm_90 only here).
set -euo pipefail
cd "$(dirname "$0")"
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
$NVCC -O3 -std=c++17 -arch=native -o /tmp/gemv_lab lab.cu -lcuda 2>&1 | grep -E "error|warning" | head -20 || true
/tmp/gemv_lab "${1:-8}" "${2:-10}"
