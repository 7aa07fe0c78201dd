#!/usr/bin/env bash
# The GPU machine's part of issues 13, 14 and 19 (2026-11-29): from SmolLM2's Q4_1 GGUF and the
# protocol texts in IN, make the F32 base and llama-quantize's preset files (with llama.cpp's
# imatrix, IN/imatrix.gguf, made by llama-imatrix on the calibration split) with llama.cpp's
# tools carried in IN/llama, then run bench/gpu/gguf_presets_full.sh (crunch's RTN and GPTQ
# files of each preset, every file scored by crunch eval on both texts) and/or
# bench/gpu/search_gguf.sh (the GGUF budget search at llama.cpp's sizes).
# Usage: bench/gpu/presets_and_search.sh CRUNCH IN OUT presets|search [PRESETS...]
set -euo pipefail
crunch=$1 in=$2 out=$3 what=$4; shift 4
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$in/llama:${LD_LIBRARY_PATH:-}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
[ -f "$in/base-f32.gguf" ] || "$in/llama/llama-quantize" --allow-requantize "$in/SmolLM2-135M-Instruct.Q4_1.gguf" \
  "$in/base-f32.gguf" F32 > "$out/base.log" 2>&1
for p in ${*:-Q2_K Q3_K_S Q3_K_M Q4_K_S Q4_K_M Q5_K_M Q6_K}; do
  [ -f "$in/llama-$p.gguf" ] || "$in/llama/llama-quantize" --imatrix "$in/imatrix.gguf" \
    "$in/base-f32.gguf" "$in/llama-$p.gguf" "$p" 16 > "$out/llama-$p.log" 2>&1
done
ls -l "$in"/*.gguf
case $what in
  presets) PRESETS="${*:-Q2_K Q3_K_S Q3_K_M Q4_K_S Q4_K_M Q5_K_M Q6_K}" \
             bash "$here/gguf_presets_full.sh" "$crunch" "$in" "$out" ;;
  search) bash "$here/search_gguf.sh" "$crunch" "$in/base-f32.gguf" "$in" "$in" "$out" \
            "$in/SmolLM2-135M-Instruct.Q4_1.gguf" ;;
esac
