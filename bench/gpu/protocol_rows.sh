#!/usr/bin/env bash
# The benchmark protocol on the GPU machine, on both evaluation texts, in one run:
#   - issue 12: re-run the quantization table's GPTQ 4-bit g128 and 3-bit g128 rows and one
#     SparseGPT row after the one-pipeline refactor (same PPL to 4 decimals as
#     bench/gpu/results/2026-11-28-smollm2-{gptq,compress}-gpu.txt);
#   - issue 19: the same runs (and RTN, SparseGPT 2:4, SVD-LLM, GPTQ+EoRA) evaluated on the
#     off-domain text (bench/offdomain.py) beside WikiText.
# Usage (on the GPU machine): bench/gpu/protocol_rows.sh CRUNCH MODEL.gguf DIR_WITH_TEXTS OUTDIR
set -euo pipefail
crunch=$1 model=$2 texts=$3 out=$4
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
base_wiki=21.895288032594205
compress_runs="sparsegpt 50%,sparsegpt 2:4,whitened-svd keep 0.8,gptq 3-bit g128 + eora 32"
for text in eval offdomain; do
  base=(); [ $text = eval ] && base=(--base-ppl $base_wiki)
  python3 quantize_table.py --crunch "$crunch" --model "$model" --calib "$texts/calib.txt" \
    --eval "$texts/$text.txt" --work /tmp/qt-$text --threads 16 --device cuda \
    --methods rtn,gptq --configs 4:128:asym,3:128:asym "${base[@]}" | tee "$out/quantize-$text.txt"
  python3 compress_table.py --crunch "$crunch" --model "$model" --calib "$texts/calib.txt" \
    --eval "$texts/$text.txt" --work /tmp/ct-$text --threads 16 --device cuda \
    --only "$compress_runs" "${base[@]}" | tee "$out/compress-$text.txt"
done
