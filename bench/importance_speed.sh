#!/usr/bin/env bash
# Collecting importance statistics on the CPU, side by side: crunch (E[x²] per input column,
# `crunch quantize --format gguf --calib ... --save-imatrix F --plan`) and llama.cpp's
# `llama-imatrix`, over the same number of calibration tokens (128 windows of 512) with the
# same threads, one after the other. crunch draws its 128 windows at seeded random starts of
# the file, llama-imatrix takes the first 128 consecutive chunks; both see 65,536 tokens.
# Prints one JSON line per tool (wall and CPU seconds, tokens per wall second) and the ratio.
#
# Usage: bench/importance_speed.sh BASE.gguf CALIB.txt WORKDIR
#   env: CRUNCH (binary), LLAMACPP (llama.cpp's bin folder), THREADS (2), SAMPLES (128 windows),
#   GPTQ_PRESET (e.g. Q4_K_M: also time a full `--method gptq` onto that preset over the same windows,
#   issue 13's "at most 3× llama-imatrix"), IMPORTANCE (1; 0 skips crunch's importance-only run)
# Compare CPU seconds too: on a shared machine wall time depends on the other load.
set -euo pipefail
base=$1 calib=$2 work=$3
crunch=${CRUNCH:-target/release/crunch}
bin=${LLAMACPP:-$HOME/.cache/llamacpp/build/bin}
threads=${THREADS:-2}
samples=${SAMPLES:-128}
mkdir -p "$work"
tokens=$((samples * 512))
measure() { # name, command...
  local name=$1
  shift
  local t0 t1 tf
  tf=$(mktemp)
  t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$tf" "$@" >/dev/null 2>"$work/$name.log"
  t1=$(date +%s.%N)
  read -r user sys <"$tf"
  rm -f "$tf"
  python3 -c 'import json,sys; n,w,u,s,t=sys.argv[1],float(sys.argv[2]),float(sys.argv[3]),float(sys.argv[4]),int(sys.argv[5]); print(json.dumps({"tool": n, "tokens": t, "wall_seconds": round(w, 2), "cpu_seconds": round(u + s, 2), "tokens_per_second": round(t / w, 1)}))' \
    "$name" "$(echo "$t1 - $t0" | bc)" "$user" "$sys" "$tokens" | tee -a "$work/speed.jsonl"
}
: >"$work/speed.jsonl"
[ "${IMPORTANCE:-1}" = 0 ] || measure crunch "$crunch" --threads "$threads" quantize "$base" --format gguf --calib "$calib" \
  --calib-samples "$samples" --calib-len 512 --seed 0 --save-imatrix "$work/crunch-imatrix.gguf" --force \
  --plan --out "$work/unused.gguf"
measure llama-imatrix "$bin/llama-imatrix" -m "$base" -f "$calib" --chunks "$samples" -c 512 -b 512 \
  -t "$threads" -o "$work/llama-imatrix.gguf"
if [ -n "${GPTQ_PRESET:-}" ]; then
  measure "crunch-gptq-$GPTQ_PRESET" "$crunch" --threads "$threads" quantize "$base" --format gguf \
    --mix "$GPTQ_PRESET" --method gptq --calib "$calib" --calib-samples "$samples" --calib-len 512 --seed 0 \
    --force --out "$work/gptq-$GPTQ_PRESET.gguf"
fi
python3 - "$work/speed.jsonl" <<'EOF'
import json, sys
rows = {r["tool"]: r for r in map(json.loads, open(sys.argv[1]))}
l = rows.pop("llama-imatrix")
for name, c in rows.items():
    print(json.dumps({"tool": name, "tokens": c["tokens"], "over_llama_imatrix_wall": round(c["wall_seconds"] / l["wall_seconds"], 3),
                      "over_llama_imatrix_cpu": round(c["cpu_seconds"] / l["cpu_seconds"], 3)}))
EOF
