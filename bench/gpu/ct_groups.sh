#!/usr/bin/env bash
# Issue 13: the compressed-tensors export of SmolLM2 at every group size crunch accepts for it
# (the divisors of 192 = gcd(576, 1536) from 8 up, and per channel), asymmetric 4-bit RTN, loaded
# by transformers + compressed-tensors; mean NLL against crunch's evaluation of the same
# quantization in crunch's own format (scripts/check_ct_smollm2.py, tolerance 1e-4 nats).
# A group size crunch refuses for this format (e.g. 128) is shown refused before any work.
# Usage (GPU machine, compressed-tensors importable): bench/gpu/ct_groups.sh CRUNCH MODEL TEXT OUTDIR
set -uo pipefail
crunch=$1 model=$2 text=$3 out=$4
root=$(cd "$(dirname "$0")/../.." && pwd)
work=/tmp/ct-groups; mkdir -p $work
pairs=()
for g in 8 12 16 24 32 48 64 96 192 channel; do
  for f in crunch compressed-tensors; do
    "$crunch" --threads 16 quantize "$model" --method rtn --bits 4 --group-size $g \
      --format $f --out $work/$f-g$g --force --json > $work/$f-g$g.quantize.json 2>/dev/null || echo "quantize g$g $f failed"
  done
  "$crunch" eval $work/crunch-g$g --device cuda --data "$text" --ctx 512 --max-tokens 8192 --json \
    > $work/crunch-g$g.eval.json 2>/dev/null
  pairs+=($work/compressed-tensors-g$g $work/crunch-g$g.eval.json)
done
"$crunch" quantize "$model" --method rtn --bits 4 --group-size 128 --format compressed-tensors \
  --out $work/refused --force 2>&1 | tail -2 | tee $out/ct-g128-refused.txt
python3 "$root/scripts/check_ct_smollm2.py" --text "$text" --ctx 512 --max-tokens 8192 "${pairs[@]}" \
  2>/dev/null | tee $out/ct-groups.jsonl
