#!/usr/bin/env bash
# Decision 145's coded group scales in a compressed-tensors export, loaded by its consumer: GPTQ
# (CPU, so both formats get the same codes from the same seed) at 3 and 4 bits, group 16, 6-bit
# coded scales and, as controls, free f16 scales; each written in crunch's format and as
# compressed-tensors. `crunch eval --device cuda` scores the first; scripts/check_ct_smollm2.py
# loads the second with transformers + compressed-tensors and scores the same tokens (ctx 512,
# 8,192 tokens; the two mean NLLs must agree within 1e-4 nats).
# Usage (GPU machine): bench/gpu/ct_coded.sh CRUNCH MODEL CALIB TEXT WHEELS OUT
#   MODEL: SmolLM2 or a cut of it (`gpu_packed truncate --layers 3` fits one carry with crunch)
#   WHEELS: compressed-tensors 0.20.1, loguru, psutil, pydantic and pydantic-core for the
#   machine's Python (installed with --no-deps: pip's resolver does not see the installed torch)
set -uo pipefail
crunch=$1 model=$2 calib=$3 text=$4 wheels=$5 out=$6
root=$(cd "$(dirname "$0")/../.." && pwd)
work=/tmp/ct-coded; mkdir -p "$work" "$out"
python3 -c "import compressed_tensors" 2>/dev/null ||
  python3 -m pip install --no-deps --no-index "$wheels"/*.whl 2>&1 | tail -1
pairs=()
for spec in 4:asym:s6 4:sym:s6 3:asym:s6 3:sym:s6 4:asym:f16 3:sym:f16; do
  IFS=: read -r b s c <<< "$spec"; n=$b-$s-$c
  sb=(); [ "$c" = s6 ] && sb=(--scale-bits 6)
  for f in crunch compressed-tensors; do
    "$crunch" --threads "$(nproc)" quantize "$model" --method gptq --bits "$b" --group-size 16 \
      --"$s" "${sb[@]}" --calib "$calib" --calib-samples 32 --device cpu --format $f \
      --out "$work/$f-$n" --force --json > "$work/q-$f-$n.json" 2> "$work/q-$f-$n.err" \
      || echo "quantize $n $f failed: $(tail -1 "$work/q-$f-$n.err")"
  done
  "$crunch" eval "$work/crunch-$n" --device cuda --data "$text" --ctx 512 --max-tokens 8192 \
    --json > "$work/e-$n.json" 2> "$work/e-$n.err"
  pairs+=("$work/compressed-tensors-$n" "$work/e-$n.json")
done
cat "$work"/e-*.json > "$out/crunch-evals.jsonl"
python3 "$root/scripts/check_ct_smollm2.py" --text "$text" --ctx 512 --max-tokens 8192 "${pairs[@]}" \
  2> "$out/check.err" | tee "$out/ct-coded.jsonl"
