#!/usr/bin/env bash
# Issue 14, timing only: the budget search at Llama-3-8B's shapes on the H200, measured on models
# of 2 and 4 decoder blocks (random bf16 weights, exact 8B shapes: hidden 4096, intermediate
# 14336, 32 heads, 8 KV heads, vocab 128256; `gpu_llama make --layers N`) and projected to 32
# blocks stage by stage, by a line through the two points (the variants and every candidate's
# forward scale with the blocks; the sampling's vocabulary work, the LM head and the KL over the
# vocabulary do not).
# Usage (on the GPU machine): bench/gpu/search_8b.sh CRUNCH GPU_LLAMA OUTDIR
#   CRUNCH: crunch built with --features cuda; GPU_LLAMA: bench's gpu_llama (--features cuda).
# Calibration: 128 windows of 512 tokens sampled from the model itself (`--calib self:128x512`,
# no tokenizer needed). The search runs GENS generations (default 4) and the projection scales
# the measured time per generation to FULL_GENS (default 50; 16 offspring, selection 2x4,8x1:
# the SmolLM2 runs' settings).
# SETTING picks the variant flags (decision 124):
#   large (default): --level-inputs independent --level-no-mse (one capture and propagation per
#                    block for all levels; min-max grids: the host's clipping search is ~3/4 of
#                    a GPTQ level at these shapes, BENCHMARKS s25)
#   default:         the defaults (sequential inputs, MSE grids): ~11.8 s per block and level
# LEVELS overrides --levels (default: the 10 levels that were crunch's default when this was
# measured, s26/s27; crunch's default ladder is now 16 levels, decision 150). The ladder is not
# pruned and a mutation moves one rank, as measured (--no-prune-levels --jump 1).
# DEVICE: the search's device (default cuda, f32 arithmetic; cuda-bf16 runs the model in bf16, as
#   `gpu_llama eval` and `crunch eval --device cuda-bf16` do).
# CRUNCH_FITNESS_TIMING=1: the fitness's counters (swap, forward, LM head, KL) are measured with
#   the device synchronized at their boundaries (otherwise queued GPU work lands in the next
#   stage); each JSON line carries them ("fitness", "generation_fitness").
# Swaps (decisions 129, 137): on the GPU every quantized variant is kept there as codes and a swap
#   is one kernel whatever the model's size (≈ 42 GB of codes for 10 levels at 32 blocks, beside
#   the two f32 copies' 64 GB; the log's "variants kept on the device" line gives the bytes, and
#   the JSON's fitness.device_variants says which path ran). So the 2- and 4-block runs use the
#   defaults and their line projects the 32-block search as it runs. The host path (a host
#   dequantization + upload per swap, with the swap cache) is what runs where the codes would
#   not fit; CRUNCH_DEVICE_VARIANTS=0 forces it, to compare. CRUNCH_SWAP_CACHE_MB still sets the
#   swap cache (its default, a quarter of the units' f32 bytes, is what 32 blocks get; on the
#   host path a 2- or 4-block run's share would flatter the projection: decision 129's runs gave
#   both sizes the 32-block default, 6656).
# Prints one JSON line per model (every stage's seconds), then one projection line per stage
# and the total against the 45-minute target. BLOCKS="2" (then BLOCKS="4") runs one size per call
# where a call has a time limit: the lines collect in OUT/search8b-SETTING.jsonl and the
# projection is printed once it holds both sizes.
set -euo pipefail
crunch=$1 gpu_llama=$2 out=$3
setting=${SETTING:-large}
case $setting in
  large) flags=(--level-inputs independent --level-no-mse) ;;
  default) flags=() ;;
  *) echo "SETTING must be large or default" >&2; exit 2 ;;
esac
flags+=(--levels "${LEVELS:-2,3,3g64,3g32,4,4g64,4g32,5,6,8}" --no-prune-levels --jump 1)
gens=${GENS:-4} full=${FULL_GENS:-50}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
mkdir -p "$out"
for n in ${BLOCKS:-2 4}; do
  m=/tmp/search8b-m$n
  [ -f "$m/model.safetensors" ] || "$gpu_llama" make --shape 8b --layers "$n" --dir "$m" >/dev/null
  rm -rf "/tmp/search8b-o$n" "/tmp/search8b-cache$n-$setting"
  start=$(date +%s.%N)
  # The stages as timestamped lines in the log too, should a call's time limit stop the run.
  CRUNCH_PROGRESS=lines "$crunch" compress "$m" --out "/tmp/search8b-o$n" --target-bpw 3.5 \
    --device "${DEVICE:-cuda}" --calib self:128x512 --seed 0 --generations "$gens" --offspring 16 \
    --selection 2x4,8x1 ${flags[@]+"${flags[@]}"} --search-cache "/tmp/search8b-cache$n-$setting" --json \
    > "$out/search8b-$setting-$n.json" 2> "$out/search8b-$setting-$n.log"
  end=$(date +%s.%N)
  python3 - "$n" "$start" "$end" "$out/search8b-$setting-$n.json" "$setting" <<'PY'
import json, sys
n, start, end, path, setting = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
s = json.load(open(path))["search"]
t = s["timing"]
g = t["generation_end_s"]
# Mean seconds per generation from the second generation's end on (the first also holds the
# seeds' held-window scoring); with one generation, that generation.
per_gen = (g[-1] - g[0]) / (len(g) - 1) if len(g) > 1 else (g[0] if g else 0.0)
seeds = (g[0] - per_gen) if g else t["end_s"]
fill = (t["fill_end_s"][-1] - g[-1]) if t["fill_end_s"] and g else 0.0
wall = end - start
row = {"setting": setting, "blocks": n, "wall_s": wall, "calibration_s": t["calibration_s"],
       "variants_s": t["variants_s"], "uniform_s": t["uniform_s"], "seeds_s": seeds,
       "generation_s": per_gen, "generations": s["generations"], "fill_s": fill,
       # Loading, the model loaded twice for the fitness, and writing (the chosen levels
       # re-made by the driver): what the stages above leave of the wall time.
       "load_and_write_s": wall - t["calibration_s"] - t["variants_s"] - t["uniform_s"] - t["end_s"],
       "variants_made": s["variants_made"], "evaluations": s["evaluations"],
       # The fitness's time counters (decision 129; synchronized with CRUNCH_FITNESS_TIMING=1):
       # over the whole command, and per generation (the first also holds the seeds).
       "fitness": t.get("fitness"), "generation_fitness": t.get("generation_fitness"),
       # Which swap path ran (decision 137) and the codes' device bytes.
       "device_variants": (t.get("fitness") or {}).get("device_variants"),
       "device_variant_bytes": (t.get("fitness") or {}).get("device_variant_bytes")}
print(json.dumps(row))
PY
done | tee -a "$out/search8b-$setting.jsonl"
python3 - "$out/search8b-$setting.jsonl" "$full" <<'PY'
import json, sys
rows = {r["blocks"]: r for r in map(json.loads, open(sys.argv[1]))}
full = int(sys.argv[2])
if len(rows) < 2:
    sys.exit(0)
(a, b) = (rows[k] for k in sorted(rows)[:2])
total = 0.0
for key in ("calibration_s", "variants_s", "uniform_s", "seeds_s", "generation_s", "fill_s",
            "load_and_write_s"):
    per_block = (b[key] - a[key]) / (b["blocks"] - a["blocks"])
    fixed = a[key] - per_block * a["blocks"]
    at32 = fixed + 32 * per_block
    times = full if key == "generation_s" else 1
    total += at32 * times
    print(json.dumps({"projection": key, "per_block_s": per_block, "fixed_s": fixed,
                      "blocks_32_s": at32, "times": times, "stage_s": at32 * times}))
print(json.dumps({"projection": "end_to_end", "setting": a["setting"], "generations": full,
                  "blocks_32_s": total, "blocks_32_min": total / 60, "target_s": 45 * 60,
                  "met": total <= 45 * 60}))
PY
