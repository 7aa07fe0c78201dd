#!/usr/bin/env bash
# Issue 14 on the GPU machine, the whole protocol in one run (budget: ~6 min of device time):
# 1. the GGUF budget search at the exact sizes of llama.cpp's Q2_K, Q3_K_M and Q4_K_M files
#    (88.2, 93.5, 105.5 MB), calibration 128 x 512 WikiText tokens (seed 0), searched and scored
#    on CUDA; each searched file, llama.cpp's file (llama-quantize + imatrix) and crunch's
#    preset-typed RTN file (the search's seed) measured by `crunch eval --base BASE --device
#    cuda` (65,536 tokens, ctx 2048) on both texts; then `--target-kl 0.05` and the
#    rate-distortion figure with llama.cpp's files (`--compare`);
# 2. with a fifth argument MODEL.gguf, bench/gpu/search_rows.sh: crunch-format search vs
#    uniform GPTQ at 3.16 and 3.59 bpw, both texts.
# Usage (on the GPU machine):
#   bench/gpu/search_gguf.sh CRUNCH BASE_F32.gguf TEXTS_DIR PRESETS_DIR OUTDIR [MODEL.gguf]
# BASE_F32: SmolLM2 as F32 GGUF (llama-quantize --allow-requantize SmolLM2.Q4_1.gguf B F32, as
# bench/gpu/presets_and_search.sh makes it); PRESETS_DIR: llama-Q2_K.gguf, llama-Q3_K_M.gguf,
# llama-Q4_K_M.gguf (llama-quantize --imatrix outputs of that base). JSON lines on stdout.
set -euo pipefail
crunch=$1 base=$2 texts=$3 presets=$4 out=$5 model=${6:-}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out" /tmp/search-gguf
SECONDS=0
python3 "$here/../search_gguf.py" --crunch "$crunch" --base "$base" \
  --presets-dir "$presets" --calib "$texts/calib.txt" --eval "$texts/eval.txt" \
  --offdomain "$texts/offdomain.txt" --work /tmp/search-gguf --threads 16 --device cuda \
  --harness crunch --calib-samples 128 --calib-len 512 \
  --search "--generations 30 --offspring 16 --selection 2x4,8x1" --target-kl 0.05 \
  --target-kl-search "--generations 10 --offspring 16 --selection 2x4,8x1" \
  --plot "$out/search_gguf_rd.svg" | tee "$out/search-gguf.txt"
echo "{\"part\": \"gguf\", \"seconds\": $SECONDS}"
if [ -n "$model" ]; then
  SECONDS=0
  bash "$here/search_rows.sh" "$crunch" "$model" "$texts" "$out"
  echo "{\"part\": \"rows\", \"seconds\": $SECONDS}"
fi
