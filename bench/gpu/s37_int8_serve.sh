#!/usr/bin/env bash
# s37 (issue 17, decision 155 follow-up): the int8 rows path through `crunch serve --device cuda`
# with a real HTTP client. SmolLM2-135M-Instruct (the PyPI Q4_1 GGUF) re-quantized by crunch to
# int4 g128 symmetric (`crunch quantize --method rtn --bits 4 --group-size 128 --sym
# --embeddings q4_k`): its down_proj (k = 1536) is groupable, so a batch of 2–32 sequences takes
# mma_i8_g* under `cc+pdl` (the default); the 576-wide products (k not a multiple of 128) keep
# their fallback. For each kernel variant, serve_paged.py sends 1, 4, 16 and 32 concurrent greedy
# /v1/completions (http.client) and, with --check, requires every completion's text to equal
# `crunch generate --device cuda` run alone (one row: cc_u4, a different x quantization, so an
# exact tie could in principle flip a token; any mismatch is reported, not hidden).
#   `wide2+grouped` (decision 144's bf16 kernels at 2–16 rows, 17–32 per-matrix) beside it, for
#   tokens/s only (its texts are not checked: the same `generate` runs would double the time).
# Usage: bench/gpu/s37_int8_serve.sh CRUNCH MODEL_DIR OUT
set -uo pipefail
crunch=$1 model=$2 out=$3
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
status=0
port=18461
for v in cc+pdl wide2+grouped; do
  check=--check; [ "$v" = cc+pdl ] || check=
  CRUNCH_GEMV=$v python3 "$here/serve_paged.py" "$model" --crunch "$crunch" --device cuda \
    --clients 1,4,16,32 --max-tokens 64 $check --port $port > "$out/serve-${v//+/_}.jsonl" 2> "$out/serve-${v//+/_}.err"
  rc=$?; echo "variant $v exit $rc"; [ $rc -eq 0 ] || status=1
  sed "s/^/$v /" "$out/serve-${v//+/_}.jsonl"; tail -3 "$out/serve-${v//+/_}.err"
  port=$((port + 1))
done
echo "status $status"
exit $status
