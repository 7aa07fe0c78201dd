#!/usr/bin/env bash
# Issue 17: `crunch generate|chat|serve --device cuda` (decision 134) and the fixed-memory
# context point (decision 135), on the GPU machine.
#   1. `gpu_packed check --model SMOL --tokens 32`: the packed kernels and SmolLM2's layers
#      (decision 117), then greedy generation of 32 tokens through `Engine<Host>` and
#      `Engine<Cuda>` (f32 and q8 must be identical; f16/q4/kivi reported; decision 138: the
#      compressed caches are on the device), prefill logits per mode (f32/f16/q8 within 1e-3),
#      a batch of three decoded together (identical), and every mode's device attention
#      against the host's on random keys/values (`kv_device_attention`, ≤ 1e-5).
#   2. `crunch generate --device cuda` end to end against `--device cpu`: greedy, 32 tokens,
#      --json; token ids compared (f32 and q8 must match; kivi2, cuda-bf16 reported).
#   3. `crunch serve --device cuda`: three concurrent requests (the scheduler's batched decode
#      on the GPU), each must return text.
#   4. `gpu_packed kvfit`: Llama-3-8B's cache at an 8 GiB budget, f32 / f16 / q8 / kivi2 /
#      kivi2:vg64:s1:pre:h, every one in device memory (decision 138).
# Usage: bench/gpu/generate_cuda.sh BIN_DIR OUT SMOLLM2_GGUF
#   BIN_DIR holds `crunch` and `gpu_packed` from scripts/build-cuda
#   (target/release/crunch, target/release/examples/gpu_packed).
set -uo pipefail
bin=$1 out=$2 model=$3
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
status=0

"$bin/gpu_packed" check --model "$model" --tokens 32 > "$out/check.jsonl" 2> "$out/check.err"
rc=$?; echo "check exit $rc"; [ $rc -eq 0 ] || status=1
grep -v '"pass":true' "$out/check.jsonl" | head -20
grep -E '"check":"(engine|kv_device)' "$out/check.jsonl"

prompt="The three most important inventions of the twentieth century are"
gen() { # DEVICE KV -> one JSON record
  "$bin/crunch" generate "$model" --prompt "$prompt" --max-tokens 32 --ignore-eos \
    --device "$1" --kv-cache "$2" --json 2>> "$out/generate.err"
}
for kv in f32 q8 kivi2; do
  gen cpu "$kv" > "$out/generate-cpu-$kv.json"
  gen cuda "$kv" > "$out/generate-cuda-$kv.json"
  python3 - "$out/generate-cpu-$kv.json" "$out/generate-cuda-$kv.json" "$kv" <<'PY' || status=1
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
same = a["token_ids"] == b["token_ids"]
print(json.dumps({"check": "crunch_generate", "kv_cache": sys.argv[3], "identical": same,
                  "cpu_decode_tok_s": a["decode_tokens_per_second"],
                  "cuda_decode_tok_s": b["decode_tokens_per_second"],
                  "cuda_prefill_tok_s": b["prefill_tokens_per_second"],
                  "device": b["device"], "kv_cache_memory": b["kv_cache_memory"],
                  "gpu_weight_bytes": b["weight_bytes"], "cuda_text": b["text"]}))
sys.exit(0 if same or sys.argv[3] not in ("f32", "q8") else 1)
PY
done
gen cuda-bf16 f32 > "$out/generate-cuda-bf16.json" && python3 -c \
  'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"check":"crunch_generate_bf16","decode_tok_s":r["decode_tokens_per_second"],"text":r["text"]}))' \
  "$out/generate-cuda-bf16.json" || status=1

port=18089
"$bin/crunch" serve "$model" --device cuda --port $port --ctx 1024 > "$out/serve.log" 2>&1 &
server=$!
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 1; done
pids=()
for i in 1 2 3; do
  curl -s "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
    -d "{\"prompt\": \"Request $i: the capital of France is\", \"max_tokens\": 24}" \
    > "$out/serve-$i.json" &
  pids+=($!)
done
wait "${pids[@]}"
kill "$server"; wait "$server" 2> /dev/null
for i in 1 2 3; do
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"check":"serve_cuda","text":r["choices"][0]["text"],"usage":r["usage"]}))' \
    "$out/serve-$i.json" || { status=1; cat "$out/serve-$i.json"; }
done

"$bin/gpu_packed" kvfit --budget-mib "${BUDGET_MIB:-8192}" --layers "${LAYERS:-2}" --decode 4 \
  --modes "${MODES:-f32,f16,q8,kivi2,kivi2:vg64:s1:pre:h}" > "$out/kvfit.jsonl" 2> "$out/kvfit.err"
echo "kvfit exit $?"
cat "$out/kvfit.jsonl"
tail -3 "$out/check.err" "$out/generate.err" "$out/kvfit.err"
exit $status
