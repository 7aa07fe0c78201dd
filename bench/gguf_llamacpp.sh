#!/usr/bin/env bash
# llama.cpp runs crunch's GGUF files: for each MODEL, `llama-perplexity` and `crunch eval` score
# the same text with the same windows and must agree, and `llama-completion` must write text.
#
# Windows: crunch eval --ctx 512 cuts the text into windows of 512 tokens and predicts every
# token of each window but its first. llama-perplexity's strided mode (--ppl-stride 512 with
# -c 257, an effective context of 257 + 512/2 = 513) reads windows of 513 tokens starting 512
# apart and predicts their last 512 tokens: the same predictions from the same contexts, plus
# one more per window (the first token of the next crunch window, predicted from 512 tokens).
# Tolerance: |PPL_llama / PPL_crunch - 1| < 1% (the extra 1/512 of tokens, and llama.cpp's
# quantized dot products: it rounds activations to 8 bits for Q*_K and Q*_0 weights).
#
# Usage: bench/gguf_llamacpp.sh TEXT MODEL.gguf... (env: CRUNCH, LLAMACPP, TOKENS, THREADS)
# Prints one JSON line per model.
set -euo pipefail
text=$1
shift
crunch=${CRUNCH:-target/release/crunch}
bin=${LLAMACPP:-$HOME/.cache/llamacpp/build/bin}
tokens=${TOKENS:-16384}
threads=${THREADS:-2}
windows=$((tokens / 512))
status=0
for model in "$@"; do
  ours=$("$crunch" --threads "$threads" eval "$model" --data "$text" --ctx 512 --max-tokens "$tokens" --json)
  ppl_crunch=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ppl"])' "$ours")
  log=$("$bin/llama-perplexity" -m "$model" -f "$text" -c 257 --ppl-stride 512 --chunks "$windows" \
    -t "$threads" 2>&1)
  ppl_llama=$(printf '%s\n' "$log" | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' | tail -1)
  if [ -z "$ppl_llama" ]; then
    # Strided mode prints the running value per window; take the last.
    ppl_llama=$(printf '%s\n' "$log" | awk 'NF == 2 && $1 ~ /^[0-9]+$/ { v = $2 } END { print v }')
  fi
  completion=$("$bin/llama-completion" -m "$model" -p "The history of the Roman Empire" -n 40 \
    --temp 0 -t "$threads" -no-cnv 2>/dev/null | tr '\n' ' ' | head -c 400)
  ok=$(python3 -c 'import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(str(abs(b / a - 1) < 0.01).lower())' \
    "$ppl_crunch" "$ppl_llama")
  [ "$ok" = true ] || status=1
  python3 -c 'import json,sys; print(json.dumps({"model": sys.argv[1], "tokens": int(sys.argv[2]), "ppl_crunch_eval": float(sys.argv[3]), "ppl_llama_perplexity": float(sys.argv[4]), "within_1pct": sys.argv[5] == "true", "completion": sys.argv[6]}))' \
    "$model" "$tokens" "$ppl_crunch" "$ppl_llama" "$ok" "$completion"
done
exit $status
