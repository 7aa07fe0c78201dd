#!/usr/bin/env bash
# Issue 17, packed-weight CUDA kernels (decision 117): correctness, then speed.
#   1. `gpu_packed check --model SmolLM2`: every packed kernel against the CPU packed kernel
#      (random Q4_0/int4 g128, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K weights of odd shapes, 1–32 rows,
#      f32 and bf16 activations, ≤ 1e-3 relative; embedding rows bit for bit), every linear
#      layer of SmolLM2 (a Q4_K_M file puts ffn_down in Q4_K/Q6_K, decision 140), and greedy
#      generation of 32 tokens identical on CPU and GPU (f32 mode).
#   2. `gpu_packed bench`: Llama-3-8B linear shapes, random int4 g128, batch 1–32: device
#      time per token, achieved bandwidth vs the streaming-read bandwidth measured in the same
#      run, tokens/s vs batch 1, for the default kernels (tensor cores at batch 1, decision
#      132), decision 139's one-row variants (wide2, wide4, and both +grouped: q/k/v and
#      gate/up as one launch each, timed as the model issues them), decision 117's dp4a
#      kernels alone, cuBLAS bf16 on the same shapes, and GGUF Q4_K and Q6_K weights
#      (decision 140); the same as a markdown table (OUT/packed-bench.err). CRUNCH_GEMV=NAME
#      sets the variant the check's "default" rows and model checks use (unset: reference).
# JSON lines in OUT/packed-check.jsonl and OUT/packed-bench.jsonl.
# Usage (GPU machine): bench/gpu/packed_kernels.sh GPU_PACKED OUT [SMOLLM2_GGUF]
#   GPU_PACKED: target/release/examples/gpu_packed, built by
#     cargo build --release -p crunch-generate --features cuda --example gpu_packed
#   SMOLLM2_GGUF: SmolLM2-135M-Instruct.Q4_1.gguf or its Q4_K_M requantization by crunch (or any
#   GGUF; the model checks are skipped
#   without it)
set -uo pipefail
bin=$1 out=$2 model=${3:-}
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee "$out/gpu.txt"
if [ -n "$model" ]; then
  "$bin" check --model "$model" --tokens 32 > "$out/packed-check.jsonl" 2> "$out/packed-check.err"
else
  "$bin" check > "$out/packed-check.jsonl" 2> "$out/packed-check.err"
fi
echo "check exit $?"
grep -v '"pass":true' "$out/packed-check.jsonl" | head -40
"$bin" bench --layers 4 --repeats "${REPEATS:-20}" > "$out/packed-bench.jsonl" 2> "$out/packed-bench.err"
echo "bench exit $?"
cat "$out/packed-bench.jsonl"
tail -5 "$out/packed-check.err"
cat "$out/packed-bench.err"
