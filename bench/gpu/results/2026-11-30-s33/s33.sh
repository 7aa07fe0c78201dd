#!/bin/bash
# s33 on an nvidia-h200-x2: two searches per GPU (T threads each; 32 cores on the host):
#   issue 14: the union ladder at 3.028 (3-bit per channel) and 3.594 (3g32) bpw, 50 generations,
#   with --prune-levels (decision 148) and with --prune-levels --jump 3 (decision 149).
export REPO=$PWD
M=~/m; S=$M/SmolLM2-135M-Instruct.Q4_1.gguf; R=~/r; mkdir -p $R
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 PYTHONUNBUFFERED=1
T=${T:-8}
one() { # GPU UNIFORM TAG JUMP
  mkdir -p $R/$3-${2/:/g}
  CUDA_VISIBLE_DEVICES=$1 CRUNCH_CACHE=/tmp/cache-$3-${2/:/g} UNIFORM=$2 TAG=$3 PRUNE=1 JUMP=$4 \
    GENERATIONS=${GENERATIONS:-50} THREADS=$T \
    bash bench/gpu/search_codec_rows.sh union search $M/crunch $S $M $R/$3-${2/:/g} \
    > $R/$3-${2/:/g}/log 2>&1
  echo "$3 $2 done rc=$? $(date +%T)" >> $R/progress
  cp /tmp/search-union-${2/:/g}-$3-table/searched-*/recipe.toml $R/$3-${2/:/g}/ 2>/dev/null
}
cd "$REPO"
echo "start $(date +%T)" >> $R/progress
one 0 3:0 prune 1 &
one 1 3:32 prune 1 &
one 0 3:32 jump3 3 &
one 1 3:0 jump3 3 &
wait
echo "all done $(date +%T)" >> $R/progress
