#!/usr/bin/env bash
# Builds llama.cpp's llama-perplexity with the CUDA backend on the GPU machine (sm_90, static), from
# the same vendored sources as ../shared/tools/build-llamacpp (llama-cpp-python 0.3.36's sdist),
# carried as a tarball: the harness's KL runs then take seconds instead of minutes on CPU.
# Usage: bench/gpu/build_llama_cuda.sh SRC.tgz NINJA DIR   (prints DIR/build/bin; resumable)
# SRC.tgz, made here (10.7 MB): tar czf llama-src.tgz --anchored --exclude=./docs --exclude=./models
#   --exclude=./media -C ~/.cache/llamacpp/src .   (the folder ../shared/tools/build-llamacpp unpacks);
# NINJA: ~/.cache/llamacpp/venv/bin/ninja (a static binary from the ninja wheel).
set -euo pipefail
src=$1 ninja=$2 dir=$3
mkdir -p "$dir/src" "$dir/tools"
[ -f "$dir/src/CMakeLists.txt" ] || tar xzf "$src" -C "$dir/src"
cp -f "$ninja" "$dir/tools/ninja"; chmod +x "$dir/tools/ninja"
export PATH=$dir/tools:/usr/local/cuda/bin:$PATH
[ -f "$dir/build/build.ninja" ] || cmake -S "$dir/src" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF >&2
cmake --build "$dir/build" -j"$(nproc)" --target llama-perplexity >&2
echo "$dir/build/bin"
