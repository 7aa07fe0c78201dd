# s42: decode attention over compressed caches (kv_attend, decision 163): the codes read as
# whole words, 4 requested per thread before any is decoded (w), and that with the per-row state
# in registers (wu), against the kernel before (old, kvdev.cu at 59cfea9); and the positions'
# split into blocks of ≥ 1 chunk against ≥ 8. Two back-to-back device calls (the SmolLM2 model
# is over one call's carry limit).
#   x: stash the carried binaries and the model's first part under $HOME/s42; `gpu_packed bench
#      --only attention` for old, w and wu, twice, alternating; then the full check of w and wu
#      (every packed kernel, the fused one-row kernels, kv_device_attention).
#   y: join the model (xz, two parts); greedy generation on CPU against CUDA (f32, identical
#      ids required); decode speed of SmolLM2 for the f32, q8 and kivi2 caches, crunch old
#      and wu, the split at ≥ 8 chunks (default) and ≥ 1 (CRUNCH_KV_SPLIT_CHUNKS=1).
# Also a (s42's first call: the old kernel against decision 162's prepared unroll, carrying
# .cache/s42a), z (the fourth call, .cache/s42z), w (the fifth, .cache/s42w), c (the sixth,
# .cache/s42c), p (the seventh, a profile, .cache/s42p; no nsys there) and n (the eighth,
# Nsight Compute, .cache/s42p).
# Usage (GPU machine, repository root): OUT=DIR bash bench/gpu/s42_call.sh a|x|y|z|w|c|p|n
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}

# unpack DIR BIN…: the carried DIR/BIN.xz into /tmp/BIN.
unpack() {
  local d=$1; shift
  for b in "$@"; do xz -dc $d/$b.xz > /tmp/$b && chmod +x /tmp/$b; done
}
# ab OUTDIR BIN…: `gpu_packed bench --only attention` for each binary, 2 runs, alternating.
ab() {
  local o=$1; shift
  mkdir -p $o
  nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $o/gpu.txt
  for r in 1 2; do
    for b in "$@"; do
      /tmp/$b bench --only attention --repeats 10 > $o/$b-$r.jsonl 2> $o/$b-$r.md
      echo "$b run $r exit $?"
    done
  done
  for b in "$@"; do echo "== $b"; tail -9 $o/$b-2.md; done
}
# check BIN OUTFILE-STEM: the full `gpu_packed check`, its failures and kv_device_attention.
check() {
  (time /tmp/$1 check > $2.jsonl 2> $2.err) 2> $2.time
  echo "$1 check exit $?"
  grep real $2.time
  grep -v '"pass":true' $2.jsonl | head -20
  grep '"check":"kv_device_attention"' $2.jsonl | python3 -c 'import sys,json; r=[json.loads(l) for l in sys.stdin]; print(len(r), "kv_device_attention checks, max rel diff", max(x["max_rel_diff"] for x in r), "all pass", all(x["pass"] for x in r))'
  gzip -9 $2.jsonl
}

case $1 in
a)
  mkdir -p $HOME/s42 && cp -r .cache/s42a/. $HOME/s42/
  unpack $HOME/s42 gp_old gp_new
  ab /tmp/att gp_old gp_new
  check gp_new /tmp/att/check
  tar czf $OUT/att.tar.gz -C /tmp att
  ;;
x)
  mkdir -p $HOME/s42 && cp -r .cache/s42x/. $HOME/s42/
  unpack $HOME/s42 gp_old gp_w gp_wu
  ab /tmp/att gp_old gp_w gp_wu
  for b in gp_w gp_wu; do check $b /tmp/att/check-$b; done
  tar czf $OUT/att.tar.gz -C /tmp att
  ;;
y)
  mkdir -p /tmp/m /tmp/gen
  cp $HOME/s42/meta/* $HOME/s42/meta/.crunch-output /tmp/m/
  cat $HOME/s42/mpartaa .cache/s42y/mpartab | xz -dc > /tmp/m/model.safetensors
  sha256sum /tmp/m/model.safetensors | cut -c1-16
  unpack $HOME/s42 crunch_old crunch_wu
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
z)
  # s42's fourth call, decision 163's scale-index step (v: each word's scale index computed
  # once, per-channel scales read as vectors) against 6f5698e's kernel (head); then v's full
  # check (the split at ≥ 1 chunk is the default there) and its full bench (the block table
  # after 89e68b2's staging).
  unpack .cache/s42z gp_head gp_v
  ab /tmp/att3 gp_head gp_v
  check gp_v /tmp/att3/check
  REPEATS=5 bash bench/gpu/packed_kernels.sh /tmp/gp_v /tmp/att3/pk > /tmp/att3/pk.log 2>&1
  grep -E "check exit|bench exit" /tmp/att3/pk.log
  grep -E "streaming|cc\+pdl" /tmp/att3/pk/packed-bench.err | head -20
  gzip -9 /tmp/att3/pk/packed-check.jsonl
  tar czf $OUT/att3.tar.gz -C /tmp att3
  ;;
w)
  # s42's fifth call, decision 163's variant not kept (all: kv_combine's maxima and weights
  # in parallel and its sums with 8 splits' loads in flight; load_words requests the words'
  # scales with their codes) against the fourth call's kernel (v); then all's full check.
  unpack .cache/s42w gp_v gp_all
  ab /tmp/att4 gp_v gp_all
  check gp_all /tmp/att4/check
  tar czf $OUT/att4.tar.gz -C /tmp att4
  ;;
c)
  # s42's sixth call: the fifth call's kv_combine alone (cmb: maxima and weights in parallel,
  # sums with 8 splits' loads in flight) against the fourth call's kernels (v); cmb's check.
  unpack .cache/s42c gp_v gp_cmb
  ab /tmp/att5 gp_v gp_cmb
  check gp_cmb /tmp/att5/check
  tar czf $OUT/att5.tar.gz -C /tmp att5
  ;;
p)
  # s42's seventh call: where a compressed-cache decode call's device time goes. Nsight Systems
  # (if the machine has it) over `gpu_packed bench --only attention --repeats 3` of the kept
  # kernel; per-kernel device time (cuda_gpu_kern_sum, and every launch: cuda_gpu_trace).
  unpack .cache/s42p gp_v
  mkdir -p /tmp/prof
  nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
  echo "nsys: ${nsys:-none}"
  if [ -n "$nsys" ]; then
    $nsys profile -o /tmp/prof/att --force-overwrite true /tmp/gp_v bench --only attention \
      --repeats 3 > /tmp/prof/bench.jsonl 2> /tmp/prof/bench.md
    echo "profile exit $?"
    $nsys stats --report cuda_gpu_kern_sum,cuda_gpu_trace --format csv -o /tmp/prof/att \
      /tmp/prof/att.nsys-rep > /tmp/prof/stats.log 2>&1
    echo "stats exit $?"
    ls /tmp/prof
    cut -d, -f1-9 /tmp/prof/att_cuda_gpu_kern_sum.csv | head -25
    gzip -9 /tmp/prof/*trace*.csv
    rm -f /tmp/prof/att.nsys-rep /tmp/prof/att.sqlite
  fi
  tar czf $OUT/prof.tar.gz -C /tmp prof
  ;;
n)
  # s42's eighth call (the machine has no nsys): Nsight Compute on the kept kernel's first
  # decode call over q8 and over kivi2, 512 positions, split ≥ 1 (`--repeats 1`: each
  # configuration is 32 calls of kv_attend + kv_combine, q8's three lengths first).
  unpack .cache/s42p gp_v
  mkdir -p /tmp/ncu
  for at in 0:q8 192:kivi2; do
    ncu --kernel-name regex:'kv_(attend|combine)' --launch-skip ${at%%:*} --launch-count 2 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
      --csv --page details /tmp/gp_v bench --only attention --repeats 1 \
      > /tmp/ncu/${at##*:}.csv 2> /tmp/ncu/${at##*:}.err
    echo "${at##*:} exit $?"
    grep -E '"(Duration|Registers Per Thread|Achieved Occupancy|Grid Size|Block Size|Compute \(SM\) Throughput|Memory Throughput|Warp Cycles Per Issued Instruction|Avg. Active Threads Per Warp)"' \
      /tmp/ncu/${at##*:}.csv | cut -d, -f5,13- | head -30
  done
  tar czf $OUT/ncu.tar.gz -C /tmp ncu
  ;;
esac
