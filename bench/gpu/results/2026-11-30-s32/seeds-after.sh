# s32: a searched recipe re-applied with other calibration draws (crunch compress --recipe with
# the recipe's seed replaced), each evaluated by the protocol. t2-*: the 150-generation
# two-level recipe at 3.028 bpw (seeds 1, 2); f5-*: s31's free-ladder recipe at 3.594 bpw
# (bench/gpu/results/2026-11-30-s31/search/recipe-3.594.toml; seeds 0, 1, 2).
M=~/m; S=$M/SmolLM2-135M-Instruct.Q4_1.gguf; export LD_LIBRARY_PATH=/usr/local/cuda/lib64; R=~/r
f() { # RECIPE TAG SEED GPU
 export CUDA_VISIBLE_DEVICES=$4
 sed "s/^seed = .*/seed = $3/; s#^data = .*#data = \"$M/calib.txt\"#" $1 > /tmp/$2-$3.toml
 $M/crunch --threads 10 compress $S --recipe /tmp/$2-$3.toml --device cuda --out /tmp/$2-$3 --force --json > $R/$2-$3.json
 for t in eval offdomain; do $M/crunch --threads 10 eval /tmp/$2-$3 --base $S --device cuda --data $M/$t.txt \
   --ctx 2048 --max-tokens 65536 --json > $R/$2-$3-$t.json; done; }
f $R/recipe-g150-twolevel.toml t2 1 0 & f $R/recipe-g150-twolevel.toml t2 2 1 & wait
f $R/recipe-s31free.toml f5 0 0 & f $R/recipe-s31free.toml f5 1 1 & f $R/recipe-s31free.toml f5 2 0 & wait
