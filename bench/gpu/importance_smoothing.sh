#!/usr/bin/env bash
# Issue 19: does flattening the importance across input columns keep crunch's advantage off the
# calibration domain? For each preset and each transform of crunch's saved importance
# (bench/importance_transform.py: pow:A, mix:L; `none` = as collected), crunch's RTN GGUF is
# written and scored by `crunch eval --base` (ctx 2048, 65,536 tokens) on the evaluation split
# and on the off-domain text, on the GPU. One JSON line per (preset, mode, text) in
# OUT/importance-smoothing.jsonl. llama-quantize's KL on the same texts is in
# bench/gpu/results/2026-11-29-gguf-presets-full.jsonl (same base, same protocol).
# Usage: bench/gpu/importance_smoothing.sh CRUNCH IN OUT   (IN: base-f32.gguf or the Q4_1 GGUF and
#   llama/ tools to make it, crunch-imatrix.gguf,
#   eval.txt, offdomain.txt, gguf-*.whl); env PRESETS, MODES.
set -uo pipefail
crunch=$1 in=$2 out=$3
here=$(cd "$(dirname "$0")/.." && pwd)
presets=${PRESETS:-Q5_K_M Q6_K Q4_K_M Q3_K_M}
modes=${MODES:-pow:0.5 mix:1}
work=/tmp/imp-smooth; mkdir -p "$work" "$out"
[ -f "$in/base-f32.gguf" ] || LD_LIBRARY_PATH=$in/llama "$in/llama/llama-quantize" --allow-requantize \
  "$in/SmolLM2-135M-Instruct.Q4_1.gguf" "$in/base-f32.gguf" F32 > /dev/null 2>&1
[ -d "$work/py" ] || python3 -m pip install -q --no-deps --target "$work/py" "$in"/gguf-*.whl
for m in $modes; do
  tag=${m/:/}
  [ -f "$work/imp-$tag.gguf" ] || PYTHONPATH=$work/py python3 "$here/importance_transform.py" \
    "$in/crunch-imatrix.gguf" "$work/imp-$tag.gguf" "$m"
done
for p in $presets; do
  for m in $modes; do
    tag=${m/:/}
    f=$work/crunch-$p-$tag.gguf
    [ -f "$f" ] || "$crunch" --threads 16 quantize "$in/base-f32.gguf" --format gguf --mix "$p" \
      --imatrix "$work/imp-$tag.gguf" --out "$f" --force --json > /dev/null 2>&1
    for text in eval offdomain; do
      r=$("$crunch" eval "$f" --base "$in/base-f32.gguf" --device cuda --data "$in/$text.txt" \
        --ctx 2048 --max-tokens 65536 --json 2>/dev/null)
      python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(json.dumps({"preset": sys.argv[2], "mode": sys.argv[3], "text": sys.argv[4], **{k: r.get(k) for k in ("kl", "ppl", "top1_agreement", "tokens_scored")}}))' \
        "$r" "$p" "$m" "$text" | tee -a "$out/importance-smoothing.jsonl"
    done
  done
done
