#!/usr/bin/env bash
# Issue 17 / decision 141: `crunch serve --device cuda` on the paged key/value pool.
#   1. `gpu_packed check --model SMOL --tokens 32`: includes `kv_paged_attention` (the paged
#      kernel against the host's paged attention on random keys/values, 4 sequences in one
#      launch, heads of 64 and 128, with and without a window; each max_rel_diff <= 1e-3,
#      expected ~1e-6) and `engine_paged_decode` (the server's paged batch on CPU and GPU: the
#      same greedy tokens as per-sequence stores on the CPU). Exit 0 = every check passed.
#   2. serve --device cuda, default pool (80% of free memory, at most --max-batch contexts):
#      1, 4, 16 concurrent greedy clients, 128 tokens each: aggregate tokens/s, and every
#      completion's text equal to `crunch generate --device cuda` alone (--check).
#   3. a fixed pool of 256 pages (4,096 positions, SmolLM2: 4096 x 30 blocks x 2 x 3 heads x 64
#      x 4 B = 188.7 MB) with 32 clients of max_tokens 512: the most sequences active at once
#      (peak_active) against `contiguous_fit`, how many per-request stores of prompt +
#      max_tokens (what the per-sequence scheduler reserved) fit the same memory (about 7);
#      preemptions > 0 expected (the pool holds fewer than 32 whole requests); all complete.
# Usage: bench/gpu/serve_paged.sh BIN_DIR OUT SMOLLM2_GGUF
#   BIN_DIR holds `crunch` and `gpu_packed` (or `examples/gpu_packed`: target/release) from
#   scripts/build-cuda.
# Failure: a non-zero exit of any step, a "pass":false line, same_as_alone < clients, or a
# request that fails (serve_paged.py exits 1 and names it).
set -uo pipefail
bin=$1 out=$2 model=$3
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
status=0
gp=$bin/gpu_packed; [ -x "$gp" ] || gp=$bin/examples/gpu_packed

"$gp" check --model "$model" --tokens 32 > "$out/check.jsonl" 2> "$out/check.err"
rc=$?; echo "check exit $rc"; [ $rc -eq 0 ] || status=1
grep -E '"check":"(kv_paged|engine_paged|summary)' "$out/check.jsonl"

python3 "$here/serve_paged.py" "$model" --crunch "$bin/crunch" --device cuda \
  --clients 1,4,16 --max-tokens 128 --check --port 18451 | tee "$out/serve.jsonl"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

python3 "$here/serve_paged.py" "$model" --crunch "$bin/crunch" --device cuda \
  --clients 32 --max-tokens 512 --kv-pages 256 --port 18452 | tee "$out/serve_fixed.jsonl"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "status $status"
exit $status
