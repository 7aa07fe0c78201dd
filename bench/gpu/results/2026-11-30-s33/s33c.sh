#!/bin/bash
# s33, third part (x2): crunch compress --target-bpw with the search's defaults after decision 150
# (no --levels, --jump, --prune-levels or --selection), fresh variant cache, at uniform 3-bit per
# channel's and 3g32's bits, one per GPU. Its recipe must equal part 1's jump3 recipe (the 22-level
# union with --prune-levels --jump 3 --selection 8x4,32x1); evaluated only if it does not.
M=~/m; S=$M/SmolLM2-135M-Instruct.Q4_1.gguf; R=~/r; mkdir -p $R/defaults
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 PYTHONUNBUFFERED=1
one() { # GPU NAME TARGET
  export CUDA_VISIBLE_DEVICES=$1
  CRUNCH_CACHE=/tmp/cache-default-$2 $M/crunch --threads 16 compress $S --target-bpw $3 \
    --calib $M/calib.txt --calib-samples 128 --calib-len 512 --seed 0 --device cuda \
    --out /tmp/d-$2 --force --json > $R/defaults/$2.json 2> $R/defaults/$2.err
  echo "default $2 rc=$? $(date +%T)" >> $R/progress
  cp /tmp/d-$2/recipe.toml $R/defaults/recipe-$2.toml
  if cmp /tmp/d-$2/recipe.toml ~/repo/bench/gpu/results/2026-11-30-s33/jump3-$2/recipe.toml; then
    echo "default $2 recipe identical to part 1's jump3" >> $R/progress
  else
    for t in eval offdomain; do
      $M/crunch --threads 16 eval /tmp/d-$2 --base $S --device cuda --data $M/$t.txt --ctx 2048 \
        --max-tokens 65536 --json > $R/defaults/$2-$t.json 2>/dev/null
    done
    echo "default $2 evaluated $(date +%T)" >> $R/progress
  fi
}
one 0 3g0 3.027833 &
one 1 3g32 3.593750 &
wait
echo "c done $(date +%T)" >> $R/progress
