#!/bin/bash
# s33, second part (x2): (1) the search time of the union ladder with --prune-levels --jump 3 at
# 50 generations, one search alone per GPU (16 threads), variants cached from part 1, saved
# search states removed (so the search runs again; same key, so the answer must equal part 1's);
# (2) the two searched recipes re-applied at calibration seeds 1 and 2, evaluated on both texts.
M=~/m; S=$M/SmolLM2-135M-Instruct.Q4_1.gguf; R=~/r; mkdir -p $R/time $R/seeds
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 PYTHONUNBUFFERED=1
L=2,2g32s6,2g64,2g16s6,2g32,3g0,3g256s6,3g128s6,3,3g64s6,3g64,3g32s6,3g16s6,3g32,4,4g64s6,4g64,4g32s6,4g32,5,6,8
EV() { $M/crunch --threads 16 eval $1 --base $S --device cuda --data $M/$2.txt --ctx 2048 --max-tokens 65536 --json > $3 2>$3.err; }
one() { # GPU NAME TARGET
  export CUDA_VISIBLE_DEVICES=$1
  rm -rf /tmp/cache-jump3-$2/search/states
  CRUNCH_CACHE=/tmp/cache-jump3-$2 $M/crunch --threads 16 compress $S --target-bpw $3 --levels $L \
    --generations 50 --offspring 16 --selection 8x4,32x1 --prune-levels --jump 3 \
    --calib $M/calib.txt --calib-samples 128 --calib-len 512 --seed 0 --device cuda \
    --out /tmp/t-$2 --force --json > $R/time/$2.json 2> $R/time/$2.err
  echo "time $2 rc=$? $(date +%T)" >> $R/progress
  cmp /tmp/t-$2/recipe.toml /tmp/search-union-$2-jump3-table/searched-*/recipe.toml \
    && echo "time $2 recipe identical to part 1" >> $R/progress
  for s in 1 2; do
    sed "s/^seed = .*/seed = $s/" $R/jump3-$2/recipe.toml > /tmp/rc-$2-$s.toml
    $M/crunch --threads 16 compress $S --recipe /tmp/rc-$2-$s.toml --device cuda --out /tmp/r-$2-$s \
      --force --json > $R/seeds/r-$2-$s.json 2>$R/seeds/r-$2-$s.err
    for t in eval offdomain; do EV /tmp/r-$2-$s $t $R/seeds/r-$2-$s-$t.json; done
  done
  echo "seeds $2 done $(date +%T)" >> $R/progress
}
one 0 3g0 3.027833 &
one 1 3g32 3.593750 &
wait
echo "b done $(date +%T)" >> $R/progress
