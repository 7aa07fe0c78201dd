#!/usr/bin/env bash
# Issue 14 with coded group scales (decision 145) on the GPU machine, in two commands:
#   MODE=uniform: the uniform GPTQ models with 6-bit coded group scales, 3g16s6 (3.586 bpw),
#                 3g32s6 (3.305), 3g64s6 and 2g16s6, to set beside uniform GPTQ 3g128/3g32;
#   MODE=search:  uniform GPTQ 3-bit g128 and g32 and the search at each one's bits per weight
#                 over a ladder of coded levels (bench/search_table.py).
# Both texts, the protocol's evaluation. Act-order GPTQ with coded scales runs on the GPU (its
# static grids are fitted on the host, as for free scales).
# Usage (on the GPU machine): bench/gpu/search_kscale_rows.sh uniform|search CRUNCH MODEL.gguf DIR_WITH_TEXTS OUTDIR
set -euo pipefail
mode=$1 crunch=$2 model=$3 texts=$4 out=$5
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
common=(--crunch "$crunch" --model "$model" --calib "$texts/calib.txt" --eval "$texts/eval.txt"
        --offdomain "$texts/offdomain.txt" --work /tmp/search-kscale-table --threads 16 --device cuda)
case $mode in
  uniform)
    python3 "$(dirname "$0")/../search_table.py" "${common[@]}" --skip-search \
      --kscale-uniform 3:16:6,3:32:6,3:64:6,2:16:6 | tee "$out/kscale-uniform-table.txt" ;;
  search)
    python3 "$(dirname "$0")/../search_table.py" "${common[@]}" \
      --generations 30 --offspring 16 --selection 2x4,8x1 --plot "$out/search_kscale_rd.svg" \
      --levels 2g32s6,2g16s6,3g128s6,3g64s6,3g32s6,3g16s6,4g32s6,4g16s6,5g32s6,6g32s6,8 \
      | tee "$out/search-kscale-table.txt" ;;
  *) echo "mode: uniform or search" >&2; exit 2 ;;
esac
