#!/bin/bash
# s33 (stopped after 28 min in its first step): the default ladder's GPTQ variants on the 2-core VM, run as nice -n 19 beside CI; see BENCHMARKS s33, "The 2-core point".
# s33 CPU: the default ladder's GPTQ variants (not timed for the issue), then the CPU setting's
# search over them at 3g32's bits (timed: issue 14's 2-core point), then the protocol's evaluation.
cd /work/main
M=.cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf B=.cache/bench O=/tmp/cpu33
C="--calib $B/calib.txt --calib-samples 128 --calib-len 512 --seed 0 --device cpu --search-cache $O/cache"
/usr/bin/time -v target/release/crunch --threads 2 compress $M --target-bpw 3.593750 $C --out $O/variants \
  --generations 0 --fill-rounds 0 --kl-windows 1 --force --json > $O/variants.json 2> $O/variants.err
echo "variants rc=$? $(date +%T)" >> $O/progress
/usr/bin/time -v target/release/crunch --threads 2 compress $M --target-bpw 3.593750 $C --out $O/searched \
  --generations 20 --offspring 8 --selection 1x2,4x1 --kl-windows 4 --fitness-len 256 --patience 8 \
  --fill-rounds 0 --force --json > $O/search.json 2> $O/search.err
echo "search rc=$? $(date +%T)" >> $O/progress
for t in eval offdomain; do
  target/release/crunch --threads 2 eval $O/searched --base $M --device cpu --data $B/$t.txt --ctx 2048 \
    --max-tokens 65536 --json > $O/$t.json 2> $O/$t.err
  echo "eval $t rc=$? $(date +%T)" >> $O/progress
done
