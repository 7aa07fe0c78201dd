#!/usr/bin/env bash
# Issue 14 on the GPU machine: the GGUF budget search at the sizes of llama.cpp's Q2_K, Q3_K_M
# and Q4_K_M files (88.2, 93.5, 105.5 MB), full protocol (calibration 128 x 512 WikiText tokens,
# seed 0; evaluation 65,536 tokens, ctx 2048, both texts), searched and scored on CUDA, measured
# by `crunch eval --base BASE --device cuda` against llama.cpp's files of the same size; then
# `--target-kl 0.05`, and the rate-distortion figure with llama.cpp's files (`--compare`).
# Usage (on the GPU machine):
#   bench/gpu/search_gguf.sh CRUNCH SOURCE.gguf TEXTS_DIR PRESETS_DIR OUTDIR
# SOURCE: SmolLM2's GGUF (made into an F32 base once with `crunch quantize --mix F32`, as the
# CPU runs' base-f32.gguf); PRESETS_DIR: llama-Q2_K.gguf, llama-Q3_K_M.gguf, llama-Q4_K_M.gguf
# (llama-quantize --imatrix outputs of that base, e.g. .cache/kq/presets/).
set -euo pipefail
crunch=$1 source=$2 texts=$3 presets=$4 out=$5
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
mkdir -p "$out" /tmp/search-gguf
base=/tmp/search-gguf/base-f32.gguf
[ -f "$base" ] || "$crunch" quantize "$source" --format gguf --mix F32 --out "$base"
python3 "$(dirname "$0")/../search_gguf.py" --crunch "$crunch" --base "$base" \
  --presets-dir "$presets" --calib "$texts/calib.txt" --eval "$texts/eval.txt" \
  --offdomain "$texts/offdomain.txt" --work /tmp/search-gguf --threads 16 --device cuda \
  --harness crunch --calib-samples 128 --calib-len 512 \
  --search "--generations 50 --offspring 16 --selection 2x4,8x1" --target-kl 0.05 \
  --plot "$out/search_gguf_rd.svg" | tee "$out/search-gguf.txt"
