#!/usr/bin/env bash
# Issue 14, timing only: the budget search at Llama-3-8B's shapes on the H200, measured on models
# of 2 and 4 decoder blocks (random bf16 weights, exact 8B shapes: hidden 4096, intermediate
# 14336, 32 heads, 8 KV heads, vocab 128256; `gpu_llama make --layers N`) and projected to 32
# blocks by a line through the two points (variants and every candidate's forward scale with
# the blocks; the embedding, LM head and KL over the vocabulary do not).
# Usage (on the GPU machine): bench/gpu/search_8b.sh CRUNCH GPU_LLAMA OUTDIR
#   CRUNCH: crunch built with --features cuda; GPU_LLAMA: bench's gpu_llama (--features cuda).
# Calibration: 128 windows of 512 tokens sampled from the model itself (`--calib self:128x512`,
# no tokenizer needed); default levels (10 GPTQ levels, each one sequential pass); search 50
# generations, 16 offspring, selection 2x4,8x1 (the SmolLM2 runs' settings).
# Prints one JSON line per model, then the projection. BLOCKS="2" (then BLOCKS="4") runs one
# size per call where a call has a time limit: the lines collect in OUT/search8b.jsonl and the
# projection is printed once it holds both sizes.
set -euo pipefail
crunch=$1 gpu_llama=$2 out=$3
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
mkdir -p "$out"
for n in ${BLOCKS:-2 4}; do
  m=/tmp/search8b-m$n
  [ -f "$m/model.safetensors" ] || "$gpu_llama" make --shape 8b --layers "$n" --dir "$m" >/dev/null
  rm -rf "/tmp/search8b-o$n"
  start=$(date +%s.%N)
  "$crunch" compress "$m" --out "/tmp/search8b-o$n" --target-bpw 3.5 --device cuda \
    --calib self:128x512 --seed 0 --generations 50 --offspring 16 --selection 2x4,8x1 \
    --search-cache "/tmp/search8b-cache$n" --json > "$out/search8b-$n.json"
  end=$(date +%s.%N)
  python3 - "$n" "$start" "$end" "$out/search8b-$n.json" <<'PY'
import json, sys
n, start, end, path = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
r = json.load(open(path))
s = r["search"]
print(json.dumps({"blocks": n, "wall_seconds": end - start, "search_seconds": s["search_seconds"],
                  "variants_made": s["variants_made"], "generations": s["generations"],
                  "evaluations": s["evaluations"]}))
PY
done | tee -a "$out/search8b.jsonl"
python3 - "$out/search8b.jsonl" <<'PY'
import json, sys
rows = {r["blocks"]: r for r in map(json.loads, open(sys.argv[1]))}
if len(rows) < 2:
    sys.exit(0)
(a, b) = (rows[k] for k in sorted(rows)[:2])
for key in ("wall_seconds", "search_seconds"):
    per_block = (b[key] - a[key]) / (b["blocks"] - a["blocks"])
    fixed = a[key] - per_block * a["blocks"]
    print(json.dumps({"projection": key, "per_block_s": per_block, "fixed_s": fixed,
                      "blocks_32_s": fixed + 32 * per_block, "target_s": 45 * 60}))
PY
