# s32: the 3.0-bpw point searched for 150 generations, two ladders side by side (one GPU each).
M=~/m; S=$M/SmolLM2-135M-Instruct.Q4_1.gguf; R=~/r
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 PYTHONUNBUFFERED=1
g() { # GPU NAME LEVELS
  CUDA_VISIBLE_DEVICES=$1 python3 bench/search_table.py --crunch $M/crunch --model $S \
    --calib $M/calib.txt --eval $M/eval.txt --offdomain $M/offdomain.txt --work /tmp/g150-$2 \
    --threads 10 --device cuda --generations 150 --offspring 16 --selection 8x4,32x1 \
    --levels $3 --uniform 3:0 > $R/g150-$2.txt 2> $R/g150-$2.err
  echo "g150 $2 done rc=$? $(date +%T)" >> $R/progress
  cp /tmp/g150-$2/searched-*/recipe.toml $R/recipe-g150-$2.toml
}
g 0 union 2,2g32s6,2g64,2g16s6,2g32,3g0,3g256s6,3g128s6,3,3g64s6,3g64,3g32s6,3g16s6,3g32,4,4g64s6,4g64,4g32s6,4g32,5,6,8 &
g 1 twolevel 2g32s6,2g16s6,3g0,3g256s6,3g128s6,3g64s6,3g32s6,3g16s6,3g32,4g64s6,4g32s6,4g16s6,5,6,8 &
wait
