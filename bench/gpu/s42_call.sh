# s42: decode attention over compressed caches (kv_attend, decision 163): the codes read as
# whole words, 4 requested per thread before any is decoded (w), and that with the per-row state
# in registers (wu), against the kernel before (old, kvdev.cu at 59cfea9); and the positions'
# split into blocks of ≥ 1 chunk against ≥ 8. Two back-to-back device calls (the SmolLM2 model
# is over one call's carry limit); s41's first call (a) is kept below for the record.
#   x: stash the carried binaries and the model's first part under $HOME/s42; `gpu_packed bench
#      --only attention` for old, w and wu, twice, alternating; then the full check of w and wu
#      (every packed kernel, the fused one-row kernels, kv_device_attention).
#   y: join the model (xz, two parts); greedy generation on CPU against CUDA (f32, identical
#      ids required); decode speed of SmolLM2 for the f32, q8 and kivi2 caches, crunch old
#      and wu, the split at ≥ 8 chunks (default) and ≥ 1 (CRUNCH_KV_SPLIT_CHUNKS=1).
# Usage (GPU machine, repository root): OUT=DIR bash bench/gpu/s42_call.sh x|y (or a|b, s42's
# first pair, which carried .cache/s42a and .cache/s42b; z: the third kernel step, carrying
# .cache/s42z; w: the fourth, carrying .cache/s42w).
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
case $1 in
w)
  # Decision 163's fourth step (all: kv_combine's maxima and weights in parallel and its sums
  # with 8 splits' loads in flight; load_words requests the words' scales with their codes)
  # against the third (v); then all's full check.
  for b in gp_v gp_all; do xz -dc .cache/s42w/$b.xz > /tmp/$b && chmod +x /tmp/$b; done
  mkdir -p /tmp/att4
  nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee /tmp/att4/gpu.txt
  for r in 1 2; do
    for b in gp_v gp_all; do
      /tmp/$b bench --only attention --repeats 10 > /tmp/att4/$b-$r.jsonl 2> /tmp/att4/$b-$r.md
      echo "$b run $r exit $?"
    done
  done
  for b in gp_v gp_all; do echo "== $b"; tail -9 /tmp/att4/$b-2.md; done
  /tmp/gp_all check > /tmp/att4/check.jsonl 2> /tmp/att4/check.err
  echo "check exit $?"
  grep -v '"pass":true' /tmp/att4/check.jsonl | head -20
  grep '"check":"kv_device_attention"' /tmp/att4/check.jsonl | python3 -c 'import sys,json; r=[json.loads(l) for l in sys.stdin]; print(len(r), "kv_device_attention checks, max rel diff", max(x["max_rel_diff"] for x in r), "all pass", all(x["pass"] for x in r))'
  gzip -9 /tmp/att4/check.jsonl
  tar czf $OUT/att4.tar.gz -C /tmp att4
  ;;
z)
  # Decision 163's third step (v: each word's scale index computed once, per-channel scales
  # read as vectors) against 6f5698e's kernel (head); then v's full check (the split at ≥ 1
  # chunk is the default there) and its full bench (the block table after 89e68b2's staging).
  for b in gp_head gp_v; do xz -dc .cache/s42z/$b.xz > /tmp/$b && chmod +x /tmp/$b; done
  mkdir -p /tmp/att3
  nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee /tmp/att3/gpu.txt
  for r in 1 2; do
    for b in gp_head gp_v; do
      /tmp/$b bench --only attention --repeats 10 > /tmp/att3/$b-$r.jsonl 2> /tmp/att3/$b-$r.md
      echo "$b run $r exit $?"
    done
  done
  for b in gp_head gp_v; do echo "== $b"; tail -9 /tmp/att3/$b-2.md; done
  /tmp/gp_v check > /tmp/att3/check.jsonl 2> /tmp/att3/check.err
  echo "check exit $?"
  grep -v '"pass":true' /tmp/att3/check.jsonl | head -20
  grep '"check":"kv_device_attention"' /tmp/att3/check.jsonl | python3 -c 'import sys,json; r=[json.loads(l) for l in sys.stdin]; print(len(r), "kv_device_attention checks, max rel diff", max(x["max_rel_diff"] for x in r), "all pass", all(x["pass"] for x in r))'
  gzip -9 /tmp/att3/check.jsonl
  REPEATS=5 bash bench/gpu/packed_kernels.sh /tmp/gp_v /tmp/att3/pk > /tmp/att3/pk.log 2>&1
  grep -E "check exit|bench exit" /tmp/att3/pk.log
  grep -E "streaming|cc\+pdl" /tmp/att3/pk/packed-bench.err | head -20
  gzip -9 /tmp/att3/pk/packed-check.jsonl
  tar czf $OUT/att3.tar.gz -C /tmp att3
  ;;
x)
  mkdir -p $HOME/s42 && cp -r .cache/s42x/. $HOME/s42/
  for b in gp_old gp_w gp_wu; do xz -dc $HOME/s42/$b.xz > /tmp/$b && chmod +x /tmp/$b; done
  mkdir -p /tmp/att
  nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee /tmp/att/gpu.txt
  for r in 1 2; do
    for b in gp_old gp_w gp_wu; do
      /tmp/$b bench --only attention --repeats 10 > /tmp/att/$b-$r.jsonl 2> /tmp/att/$b-$r.md
      echo "$b run $r exit $?"
    done
  done
  for b in gp_old gp_w gp_wu; do echo "== $b"; tail -9 /tmp/att/$b-2.md; done
  for b in gp_w gp_wu; do
    (time /tmp/$b check > /tmp/att/check-$b.jsonl 2> /tmp/att/check-$b.err) 2> /tmp/att/check-$b.time
    echo "$b check exit $?"
    grep real /tmp/att/check-$b.time
    grep -v '"pass":true' /tmp/att/check-$b.jsonl | head -20
    grep '"check":"kv_device_attention"' /tmp/att/check-$b.jsonl | python3 -c 'import sys,json; r=[json.loads(l) for l in sys.stdin]; print(len(r), "kv_device_attention checks, max rel diff", max(x["max_rel_diff"] for x in r), "all pass", all(x["pass"] for x in r))'
    gzip -9 /tmp/att/check-$b.jsonl
  done
  tar czf $OUT/att.tar.gz -C /tmp att
  ;;
y)
  mkdir -p /tmp/m /tmp/gen
  cp $HOME/s42/meta/* $HOME/s42/meta/.crunch-output /tmp/m/
  cat $HOME/s42/mpartaa .cache/s42y/mpartab | xz -dc > /tmp/m/model.safetensors
  sha256sum /tmp/m/model.safetensors | cut -c1-16
  for b in crunch_old crunch_wu; do xz -dc $HOME/s42/$b.xz > /tmp/$b && chmod +x /tmp/$b; done
  p="The three most important inventions of the twentieth century are"
  for d in cpu cuda; do
    /tmp/crunch_wu generate /tmp/m --prompt "$p" --max-tokens 32 --ignore-eos --device $d \
      --kv-cache f32 --json > /tmp/gen/generate-$d.json 2>> /tmp/gen/generate.err
  done
  python3 -c 'import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:3]); print(json.dumps({"check":"generate_cpu_vs_cuda","identical":a["token_ids"]==b["token_ids"],"cuda_decode_tok_s":b["decode_tokens_per_second"]}))' \
    /tmp/gen/generate-cpu.json /tmp/gen/generate-cuda.json
  # Decode speed: 512 tokens (16 chunks of 32 positions by the end), binaries alternating, the
  # split at the default (≥ 8 chunks) and at ≥ 1.
  for r in 1 2; do
    for kv in f32 q8 kivi2; do
      for split in 8 1; do
        [ $kv = f32 ] && [ $split = 1 ] && continue
        for b in crunch_old crunch_wu; do
          f=/tmp/gen/speed-$kv-$split-$b-$r.json
          CRUNCH_KV_SPLIT_CHUNKS=$split /tmp/$b generate /tmp/m --prompt "$p" --max-tokens 512 \
            --ignore-eos --device cuda --kv-cache $kv --json > $f 2>> /tmp/gen/generate.err
          python3 -c 'import json,sys,hashlib; r=json.load(open(sys.argv[1])); print(json.dumps({"kv_cache":sys.argv[2],"split_chunks":int(sys.argv[3]),"binary":sys.argv[4],"rep":int(sys.argv[5]),"decode_tok_s":r["decode_tokens_per_second"],"tokens":len(r["token_ids"]),"ids_sha":hashlib.sha256(str(r["token_ids"]).encode()).hexdigest()[:12]}))' \
            $f $kv $split $b $r
        done
      done
    done
  done | tee /tmp/gen/speed.jsonl
  tail -5 /tmp/gen/generate.err
  cp -r /tmp/gen $OUT/
  ;;
a)
  mkdir -p $HOME/s42 && cp -r .cache/s42a/. $HOME/s42/
  for b in gp_old gp_new; do xz -dc $HOME/s42/$b.xz > /tmp/$b && chmod +x /tmp/$b; done
  mkdir -p /tmp/att
  nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee /tmp/att/gpu.txt
  for r in 1 2; do
    for b in gp_old gp_new; do
      /tmp/$b bench --only attention --repeats 10 > /tmp/att/$b-$r.jsonl 2> /tmp/att/$b-$r.md
      echo "$b run $r exit $?"
    done
  done
  cat /tmp/att/gp_new-2.md
  grep decode_attention_compressed /tmp/att/*.jsonl
  (time /tmp/gp_new check > /tmp/att/check.jsonl 2> /tmp/att/check.err) 2> /tmp/att/check.time
  echo "check exit $?"
  cat /tmp/att/check.time
  grep -v '"pass":true' /tmp/att/check.jsonl | head -20
  grep '"check":"kv_device_attention"' /tmp/att/check.jsonl | head -12
  gzip -9 /tmp/att/check.jsonl
  tar czf $OUT/att.tar.gz -C /tmp att
  ;;
b)
  mkdir -p /tmp/m /tmp/gen
  cp $HOME/s42/meta/* $HOME/s42/meta/.crunch-output /tmp/m/
  cat $HOME/s42/smolpartaa .cache/s42b/smolpartab > /tmp/m/model.safetensors
  sha256sum /tmp/m/model.safetensors | cut -c1-16
  for b in crunch_old crunch_new; do xz -dc $HOME/s42/$b.xz > /tmp/$b && chmod +x /tmp/$b; done
  p="The three most important inventions of the twentieth century are"
  for d in cpu cuda; do
    /tmp/crunch_new generate /tmp/m --prompt "$p" --max-tokens 32 --ignore-eos --device $d \
      --kv-cache f32 --json > /tmp/gen/generate-$d.json 2>> /tmp/gen/generate.err
  done
  python3 -c 'import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:3]); print(json.dumps({"check":"generate_cpu_vs_cuda","identical":a["token_ids"]==b["token_ids"],"cuda_decode_tok_s":b["decode_tokens_per_second"]}))' \
    /tmp/gen/generate-cpu.json /tmp/gen/generate-cuda.json
  # Decode speed: 512 tokens (16 chunks of 32 positions by the end), old and new binary
  # alternating, the split at the default (≥ 8 chunks) and at ≥ 1.
  for r in 1 2; do
    for kv in f32 q8 kivi2; do
      for split in 8 1; do
        [ $kv = f32 ] && [ $split = 1 ] && continue
        for b in crunch_old crunch_new; do
          f=/tmp/gen/speed-$kv-$split-$b-$r.json
          CRUNCH_KV_SPLIT_CHUNKS=$split /tmp/$b generate /tmp/m --prompt "$p" --max-tokens 512 \
            --ignore-eos --device cuda --kv-cache $kv --json > $f 2>> /tmp/gen/generate.err
          python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"kv_cache":sys.argv[2],"split_chunks":int(sys.argv[3]),"binary":sys.argv[4],"rep":int(sys.argv[5]),"decode_tok_s":r["decode_tokens_per_second"],"tokens":len(r["token_ids"]),"ids_sha":__import__("hashlib").sha256(str(r["token_ids"]).encode()).hexdigest()[:12]}))' \
            $f $kv $split $b $r
        done
      done
    done
  done | tee /tmp/gen/speed.jsonl
  tail -5 /tmp/gen/generate.err
  cp -r /tmp/gen $OUT/
  ;;
esac
