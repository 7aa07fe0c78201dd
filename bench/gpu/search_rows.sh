#!/usr/bin/env bash
# Issue 14 on the GPU machine: the budget search vs uniform GPTQ (bench/search_table.py), both
# texts, and the rate-distortion figure of the first search.
# The search's settings as first measured (s22: search_table.py's ten levels, one-rank moves, no
# pruning); crunch's own defaults since decision 150 are bench/gpu/search_codec_rows.sh's union
# row with PRUNE=1 JUMP=3 (s33).
# Usage (on the GPU machine): bench/gpu/search_rows.sh CRUNCH MODEL.gguf DIR_WITH_TEXTS OUTDIR
set -euo pipefail
crunch=$1 model=$2 texts=$3 out=$4
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
python3 "$(dirname "$0")/../search_table.py" --crunch "$crunch" --model "$model" \
  --calib "$texts/calib.txt" --eval "$texts/eval.txt" --offdomain "$texts/offdomain.txt" \
  --work /tmp/search-table --threads 16 --device cuda \
  --no-prune-levels --jump 1 \
  --generations 30 --offspring 16 --selection 2x4,8x1 --plot "$out/search_rows_rd.svg" \
  | tee "$out/search-table.txt"
