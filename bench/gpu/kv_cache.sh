#!/usr/bin/env bash
# Issue 17, KV-cache compression: `crunch eval --kv-cache f32,f16,q8,q4,kivi4,kivi2,...`
# on the protocol's evaluation (SmolLM2-135M-Instruct Q4_1, --ctx 2048, --max-tokens 65536) of
# eval.txt and offdomain.txt. Several modes in one run: each is scored against the model with
# its own f32 cache (computed once per window), so each record has PPL, KL(f32 cache ‖ mode),
# top-1 agreement and, in kv_cache, bytes per token and the longest context in 1 GiB.
# DEVICES="cuda cpu" runs the CUDA backend and the host CPU (the two must agree to 1e-3 in KL);
# MAX_TOKENS=8192 DEVICES=cpu is the CPU table of BENCHMARKS.md.
# One JSON line per (device, text, mode) in OUT/kv-cache.jsonl.
# Usage: bench/gpu/kv_cache.sh CRUNCH IN OUT [MODES]
#   CRUNCH: target/release/crunch built by scripts/build-cuda
#   IN: a folder with SmolLM2-135M-Instruct.Q4_1.gguf, eval.txt, offdomain.txt
#   MODES: comma-separated (default f32,f16,q8,q4,kivi4,kivi2,kivi2:s1:pre,kivi2:vg64:s1:pre,
#   the last two the variants of decision 121)
# On CUDA the compressed stores live in device memory (decision 138: the host's quantizer
# decides the codes, so CPU and CUDA hold the same codes for the same keys and values; the
# device kernel attends them); the two devices differ only in the model's own arithmetic and
# the attention's float rounding.
set -uo pipefail
crunch=$1 in=$2 out=$3
modes=${4:-f32,f16,q8,q4,kivi4,kivi2,kivi2:s1:pre,kivi2:vg64:s1:pre}
devices=${DEVICES:-cuda}
max_tokens=${MAX_TOKENS:-65536}
threads=${THREADS:-$(nproc)}
mkdir -p "$out"
# Per-run scratch files, so that two runs (e.g. one per device) can go side by side.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for dev in $devices; do
  for text in eval offdomain; do
    start=$(date +%s.%N)
    "$crunch" --threads "$threads" eval "$in/SmolLM2-135M-Instruct.Q4_1.gguf" \
      --data "$in/$text.txt" --ctx 2048 --max-tokens "$max_tokens" --device "$dev" \
      --kv-cache "$modes" --json > "$tmp/run.jsonl" 2> "$tmp/run.err" \
      || { echo "FAILED $dev $text: $(tail -3 "$tmp/run.err")"; continue; }
    python3 - "$dev" "$text" "$start" "$tmp/run.jsonl" <<'PY' | tee -a "$out/kv-cache.jsonl"
import json, sys, time
for line in open(sys.argv[4]):
    r = json.loads(line)
    kv = r["kv_cache"]
    print(json.dumps({"device": sys.argv[1], "text": sys.argv[2], "kv_cache": kv["mode"],
                      "tokens": r["tokens_evaluated"], "ppl": r["ppl"], "nll": r["nll"],
                      "kl": r["kl"], "top1_agreement": r["top1_agreement"],
                      "bytes_per_token": kv["bytes_per_token"], "vs_f16": kv["bytes_per_token_vs_f16"],
                      "at_ctx_vs_f16": kv["bytes_at_context_vs_f16"],
                      "max_context_1gib": kv["max_context_in_budget"],
                      "run_seconds": r["seconds"], "wall": time.time() - float(sys.argv[3])}))
PY
  done
done
