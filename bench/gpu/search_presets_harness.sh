#!/usr/bin/env bash
# Issues 13, 14 and 19 on the GPU machine: the GGUF budget search at the exact file size of every
# llama-quantize preset of SmolLM2 (Q2_K, Q3_K_S, Q3_K_M, Q4_K_S, Q4_K_M, Q5_K_M, Q6_K; llama.cpp's
# files made with llama-imatrix's matrix of the 128 x 512 calibration tokens), each searched file,
# llama.cpp's file and crunch's preset-typed seed scored by `crunch eval --base --device cuda`
# (65,536 tokens, ctx 2048) on both texts (stage `crunch`), then the searched and llama.cpp's files
# by llama.cpp's own `llama-perplexity --kl-divergence` (CUDA build of
# bench/gpu/build_llama_cuda.sh, -ngl 99) against the F32 base's logits over 32 x 2048 tokens
# (stage `llama`; the crunch-eval figures are cached in WORK and reused).
# Usage: bench/gpu/search_presets_harness.sh CRUNCH IN WORK OUT crunch|llama [LLAMA_CUDA_BIN]
# IN: base-f32.gguf, calib.txt, eval.txt, offdomain.txt, llama-P.gguf for every preset.
# Environment: SIZES (default every preset above, e.g. SIZES=Q4_K_S=llama,Q4_K_M=llama to split
# the work over calls of the device's time limit), SEARCH_EXTRA (more search flags, e.g.
# "--fill-rounds 0" or "--fitness-self 64"; use another WORK for other flags: files in WORK are
# reused), TAG (suffix of the output file's name).
set -euo pipefail
crunch=$1 in=$2 work=$3 out=$4 stage=$5 llbin=${6:-}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out" "$work"
sizes=${SIZES:-Q2_K=llama,Q3_K_S=llama,Q3_K_M=llama,Q4_K_S=llama,Q4_K_M=llama,Q5_K_M=llama,Q6_K=llama}
tag=${TAG:-}
harness=(--harness crunch)
if [ "$stage" = llama ]; then
  export LLAMA_PPL_ARGS="-ngl 99"
  harness=(--harness both --llamacpp "$llbin" --llama-files crunch,llama)
fi
SECONDS=0
python3 "$here/../search_gguf.py" --crunch "$crunch" --base "$in/base-f32.gguf" \
  --presets-dir "$in" --calib "$in/calib.txt" --eval "$in/eval.txt" \
  --offdomain "$in/offdomain.txt" --work "$work" --threads 16 --device cuda \
  --calib-samples 128 --calib-len 512 --sizes "$sizes" "${harness[@]}" \
  --search "--generations 30 --offspring 16 --selection 2x4,8x1 ${SEARCH_EXTRA:-}" \
  | tee "$out/search-presets-$stage$tag.txt"
echo "{\"stage\": \"$stage\", \"seconds\": $SECONDS}" | tee -a "$out/search-presets-$stage$tag.txt"
