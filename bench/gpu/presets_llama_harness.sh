#!/usr/bin/env bash
# Issue 13 in llama.cpp's own harness, full protocol, on the GPU machine's 16 CPU cores:
# llama-quantize + imatrix's file and crunch's default file (RTN, importance from crunch's saved
# imatrix) of each preset, scored by `llama-perplexity --kl-divergence` against the F32 base's
# logits over 32 chunks of 2048 tokens (65,536) of the evaluation split and of the off-domain
# text. One JSON line per (preset, file, text) in OUT/presets-llama-harness.jsonl.
# Usage: bench/gpu/presets_llama_harness.sh CRUNCH IN OUT [PRESETS...]
# env: PPL (a llama-perplexity to use, e.g. the CUDA build of bench/gpu/build_llama_cuda.sh; default
# IN/llama/llama-perplexity, CPU), PPL_ARGS (default "-t 16"; with the CUDA build "-ngl 99 -t 16").
# IN: as bench/gpu/presets_and_search.sh (SmolLM2 Q4_1 GGUF, llama/ tools, imatrix.gguf,
# crunch-imatrix.gguf, eval.txt, offdomain.txt); base-f32.gguf and llama-P.gguf are made if absent.
set -uo pipefail
crunch=$1 in=$2 out=$3; shift 3
export LD_LIBRARY_PATH=$in/llama:${LD_LIBRARY_PATH:-}
work=/tmp/llama-harness; mkdir -p "$work" "$out"
ppl=${PPL:-$in/llama/llama-perplexity}
read -r -a ppl_args <<<"${PPL_ARGS:--t 16}"
presets=${*:-Q2_K Q3_K_M Q4_K_S Q4_K_M Q5_K_M Q6_K}
[ -f "$in/base-f32.gguf" ] || "$in/llama/llama-quantize" --allow-requantize \
  "$in/SmolLM2-135M-Instruct.Q4_1.gguf" "$in/base-f32.gguf" F32 > /dev/null 2>&1
for text in eval offdomain; do
  [ -f "$work/base-$text.kld" ] || "$ppl" -m "$in/base-f32.gguf" "${ppl_args[@]}" \
    -f "$in/$text.txt" -c 2048 --chunks 32 --kl-divergence-base "$work/base-$text.kld" \
    > "$work/base-$text.log" 2>&1
done
for p in $presets; do
  [ -f "$in/llama-$p.gguf" ] || "$in/llama/llama-quantize" --imatrix "$in/imatrix.gguf" \
    "$in/base-f32.gguf" "$in/llama-$p.gguf" "$p" 16 > /dev/null 2>&1
  [ -f "$work/crunch-$p.gguf" ] || "$crunch" --threads 16 quantize "$in/base-f32.gguf" \
    --format gguf --mix "$p" --imatrix "$in/crunch-imatrix.gguf" --out "$work/crunch-$p.gguf" \
    --force > /dev/null 2>&1
  for f in "$in/llama-$p.gguf" "$work/crunch-$p.gguf"; do
    for text in eval offdomain; do
      log="$work/$p-$(basename "$f" .gguf)-$text.log"
      "$ppl" -m "$f" --kl-divergence-base "$work/base-$text.kld" \
        --kl-divergence -c 2048 "${ppl_args[@]}" > "$log" 2>&1
      python3 - "$p" "$(basename "$f")" "$text" "$(stat -c %s "$f")" "$log" <<'PY' | tee -a "$out/presets-llama-harness.jsonl"
import json, re, sys
t = open(sys.argv[5], errors="replace").read()
g = lambda pat: (lambda m: float(m.group(1)) if m else None)(re.search(pat, t))
print(json.dumps({"preset": sys.argv[1], "file": sys.argv[2], "text": sys.argv[3], "bytes": int(sys.argv[4]),
                  "kl": g(r"Mean\s+KLD:\s+([-\d.]+)"), "ppl": g(r"Mean PPL\(Q\)\s*:\s*([\d.]+)"),
                  "top1_agreement": (g(r"Same top p:\s+([\d.]+)") or 0) / 100}))
PY
    done
  done
done
