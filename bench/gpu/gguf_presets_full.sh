#!/usr/bin/env bash
# Issue 13, the full protocol for the GGUF presets: crunch's RTN (importance-weighted) and GPTQ
# files of each preset, written on the GPU machine from the F32 base (GPTQ calibrated with
# --device cuda on the protocol's 128 × 512 calibration tokens, seed 0; RTN and the GPTQ file's
# embeddings/output weighted by crunch's saved importance), and llama-quantize's files (made
# beforehand on the CPU machine by bench/gguf_presets.py and carried in IN), all scored by
# `crunch eval --base` on the evaluation split (ctx 2048, 65,536 tokens) and on the off-domain
# text, on the GPU. One JSON line per (file, text) in OUT/gguf-presets-full.jsonl.
#
# Usage (GPU machine, crunch built by scripts/build-cuda):
#   bench/gpu/gguf_presets_full.sh CRUNCH IN OUT
# IN holds base-f32.gguf, crunch-imatrix.gguf (crunch's importance, `--save-imatrix`),
# llama-PRESET.gguf for each preset, calib.txt, eval.txt and offdomain.txt.
set -uo pipefail
crunch=$1 in=$2 out=$3
presets=${PRESETS:-Q2_K Q3_K_S Q3_K_M Q4_K_S Q4_K_M Q5_K_M Q6_K}
work=/tmp/gguf-full; mkdir -p "$work" "$out"
for p in $presets; do
  [ -f "$work/crunch-$p.gguf" ] || "$crunch" --threads 16 quantize "$in/base-f32.gguf" --format gguf \
    --mix "$p" --imatrix "$in/crunch-imatrix.gguf" --out "$work/crunch-$p.gguf" --force --json \
    > "$work/crunch-$p.json"
  [ -f "$work/crunch-gptq-$p.gguf" ] || "$crunch" --threads 16 quantize "$in/base-f32.gguf" \
    --format gguf --mix "$p" --method gptq --device cuda --calib "$in/calib.txt" \
    --calib-samples 128 --calib-len 512 --seed 0 --imatrix "$in/crunch-imatrix.gguf" \
    --out "$work/crunch-gptq-$p.gguf" --force --json > "$work/crunch-gptq-$p.json"
  for f in "$work/crunch-$p.gguf" "$work/crunch-gptq-$p.gguf" "$in/llama-$p.gguf"; do
    for text in eval offdomain; do
      r=$("$crunch" eval "$f" --base "$in/base-f32.gguf" --device cuda --data "$in/$text.txt" \
        --ctx 2048 --max-tokens 65536 --json 2>/dev/null)
      python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(json.dumps({"preset": sys.argv[2], "file": sys.argv[3], "text": sys.argv[4], **{k: r.get(k) for k in ("kl", "ppl", "top1_agreement", "tokens_scored")}}))' \
        "$r" "$p" "$(basename "$f")" "$text" | tee -a "$out/gguf-presets-full.jsonl"
    done
  done
done
