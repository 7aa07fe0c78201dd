# s40 (decision 159): producers that write the int8 planes, checked and timed on the H200 in two
# back-to-back device calls (the SmolLM2 model is over one call's carry limit).
#   a: stash the carried binaries and the model's first part under $HOME/s40, then
#      packed_kernels.sh (gpu_packed check, incl. "feed" and the dependent chain; gpu_packed
#      bench, incl. the block table with and without the producers writing planes).
#   b: join the model's parts, then the serve consumer check (serve_paged.py --check, 4 and 32
#      clients, cc+pdl).
# Usage (GPU machine, repository root): OUT=DIR bash bench/gpu/s40_call.sh a|b
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
case $1 in
a)
  mkdir -p $HOME/s40 && cp -r .cache/s40a/. $HOME/s40/
  xz -dc $HOME/s40/gpu_packed.xz > /tmp/gpu_packed && chmod +x /tmp/gpu_packed
  mkdir -p /tmp/pk
  (time REPEATS=5 bash bench/gpu/packed_kernels.sh /tmp/gpu_packed /tmp/pk) > /tmp/pk/pk.log 2>&1
  grep -E "check exit|bench exit|summary|real" /tmp/pk/pk.log
  grep '"check":"feed"' /tmp/pk/packed-check.jsonl | head -3
  grep -c '"check":"feed"' /tmp/pk/packed-check.jsonl
  tail -45 /tmp/pk/packed-bench.err
  gzip -9 /tmp/pk/packed-check.jsonl
  tar czf $OUT/pk.tar.gz -C /tmp pk
  ;;
b)
  mkdir -p /tmp/m /tmp/serve
  cp $HOME/s40/meta/* $HOME/s40/meta/.crunch-output /tmp/m/
  cat $HOME/s40/smolpartaa .cache/s40b/smolpartab > /tmp/m/model.safetensors
  sha256sum /tmp/m/model.safetensors | cut -c1-16
  xz -dc $HOME/s40/crunch.xz > /tmp/crunch && chmod +x /tmp/crunch
  for c in 4 32; do
    CRUNCH_GEMV=cc+pdl python3 bench/serve_paged.py /tmp/m --crunch /tmp/crunch --device cuda \
      --clients $c --max-tokens 64 --check > /tmp/serve/serve-$c.jsonl 2> /tmp/serve/serve-$c.err
    echo "clients $c exit $?"; cat /tmp/serve/serve-$c.jsonl; tail -3 /tmp/serve/serve-$c.err
  done
  cp -r /tmp/serve $OUT/
  ;;
esac
