#!/usr/bin/env bash
# Issue 14 with lookup-table levels (decision 143) on the GPU machine, in two commands (each
# under 8 minutes; LUT variants are made on the host, no GPU kernel yet):
#   MODE=search:  uniform GPTQ 3-bit g128 and g32 and the search at each one's bits per weight
#                 over the default ladder plus 2lut/3lut/4lut (bench/search_table.py);
#   MODE=uniform: the uniform LUT models, 3 and 4 bits, one codebook per row.
# Both texts, the protocol's evaluation.
# Usage (on the GPU machine): bench/gpu/search_lut_rows.sh search|uniform CRUNCH MODEL.gguf DIR_WITH_TEXTS OUTDIR
set -euo pipefail
mode=$1 crunch=$2 model=$3 texts=$4 out=$5
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
common=(--crunch "$crunch" --model "$model" --calib "$texts/calib.txt" --eval "$texts/eval.txt"
        --offdomain "$texts/offdomain.txt" --work /tmp/search-lut-table --threads 16 --device cuda)
case $mode in
  search)
    python3 "$(dirname "$0")/../search_table.py" "${common[@]}" \
      --generations 30 --offspring 16 --selection 2x4,8x1 --plot "$out/search_lut_rd.svg" \
      --levels 2lut,2,3,3lut,3g64,3g32,4,4g64,4lut,4g32,5,6,8 | tee "$out/search-lut-table.txt" ;;
  uniform)
    python3 "$(dirname "$0")/../search_table.py" "${common[@]}" --skip-search --lut-uniform 3,4 \
      | tee "$out/lut-uniform-table.txt" ;;
  *) echo "mode: search or uniform" >&2; exit 2 ;;
esac
