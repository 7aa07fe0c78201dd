# s41 (decision 161): the norm, silu_mul and residual add fused into the one-row products,
# checked and timed on the H200 in two
# back-to-back device calls (the SmolLM2 model is over one call's carry limit).
#   a: stash the carried binaries and the model's first part under $HOME/s41, then
#      packed_kernels.sh (gpu_packed check, incl. "fused", "feed" and the dependent chain;
#      gpu_packed bench, incl. the block table: split, producers writing planes, fused).
#   b: join the model's parts, then the serve consumer check (serve_paged.py --check, 4 and 32
#      clients, cc+pdl), greedy generation on CPU against CUDA, and decode speed with one
#      attention GEMM per side or one per group member (decision 162).
# Usage (GPU machine, repository root): OUT=DIR bash bench/gpu/s41_call.sh a|b
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
case $1 in
a)
  mkdir -p $HOME/s41 && cp -r .cache/s41a/. $HOME/s41/
  xz -dc $HOME/s41/gpu_packed.xz > /tmp/gpu_packed && chmod +x /tmp/gpu_packed
  mkdir -p /tmp/pk
  (time REPEATS=5 bash bench/gpu/packed_kernels.sh /tmp/gpu_packed /tmp/pk) > /tmp/pk/pk.log 2>&1
  grep -E "check exit|bench exit|summary|real" /tmp/pk/pk.log
  grep "\"check\":\"fused\"" /tmp/pk/packed-check.jsonl | head -4
  grep -c "\"check\":\"fused\"" /tmp/pk/packed-check.jsonl
  grep '"check":"kv_device_attention","kv_cache":"f32"' /tmp/pk/packed-check.jsonl
  tail -50 /tmp/pk/packed-bench.err
  gzip -9 /tmp/pk/packed-check.jsonl
  tar czf $OUT/pk.tar.gz -C /tmp pk
  ;;
b)
  mkdir -p /tmp/m /tmp/serve
  cp $HOME/s41/meta/* $HOME/s41/meta/.crunch-output /tmp/m/
  cat $HOME/s41/smolpartaa .cache/s41b/smolpartab > /tmp/m/model.safetensors
  sha256sum /tmp/m/model.safetensors | cut -c1-16
  xz -dc $HOME/s41/crunch.xz > /tmp/crunch && chmod +x /tmp/crunch
  for c in 4 32; do
    CRUNCH_GEMV=cc+pdl python3 bench/serve_paged.py /tmp/m --crunch /tmp/crunch --device cuda \
      --clients $c --max-tokens 64 --check > /tmp/serve/serve-$c.jsonl 2> /tmp/serve/serve-$c.err
    echo "clients $c exit $?"; cat /tmp/serve/serve-$c.jsonl; tail -3 /tmp/serve/serve-$c.err
  done
  # Greedy generation, CPU against CUDA (f32 mode: identical token ids required; the down
  # projections, k = 1,536, run the fused residual kernel at one row).
  p="The three most important inventions of the twentieth century are"
  for d in cpu cuda; do
    /tmp/crunch generate /tmp/m --prompt "$p" --max-tokens 32 --ignore-eos --device $d \
      --kv-cache f32 --json > /tmp/serve/generate-$d.json 2>> /tmp/serve/generate.err
  done
  python3 -c 'import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:3]); print(json.dumps({"check":"generate_cpu_vs_cuda","identical":a["token_ids"]==b["token_ids"],"cuda_decode_tok_s":b["decode_tokens_per_second"],"text":b["text"]}))' \
    /tmp/serve/generate-cpu.json /tmp/serve/generate-cuda.json
  # Decode speed, one attention GEMM per side against one per group member (decision 162),
  # same binary, alternating, 128 tokens.
  for r in 1 2 3; do
    for a in one per-member; do
      if [ $a = per-member ]; then export CRUNCH_ATTENTION=per-member; else unset CRUNCH_ATTENTION; fi
      /tmp/crunch generate /tmp/m --prompt "$p" --max-tokens 128 --ignore-eos --device cuda \
        --kv-cache f32 --json > /tmp/serve/speed-$a-$r.json 2>> /tmp/serve/generate.err
      python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"attention":sys.argv[2],"rep":sys.argv[3],"decode_tok_s":r["decode_tokens_per_second"],"prefill_tok_s":r["prefill_tokens_per_second"]}))' \
        /tmp/serve/speed-$a-$r.json $a $r
    done
  done
  unset CRUNCH_ATTENTION
  cp -r /tmp/serve $OUT/
  ;;
esac
