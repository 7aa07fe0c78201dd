#!/bin/bash
# s32 on an nvidia-h200-x2 (G1=0 on one GPU):
#   issue 14: the union-ladder search at uniform 3-bit per channel's bits (GPU 0) and at uniform
#   3g32's (GPU 1); then, per point, the calibration-draw spread: uniform GPTQ at seeds 1 and 2,
#   the searched recipe re-applied at seeds 0, 1, 2 (crunch compress --recipe), all evaluated;
#   the uniform-g32 drift (s25 0.3754 vs s31 0.3922): calibration on the host CPU, and the
#   2972a28 binary (crunch-old, when it arrives) crossed with this one for quantize x eval;
#   issue 17: the GPU half of the 2-bit KV protocol with the binary the VM's CPU half runs.
export REPO=$PWD
M=~/m; S=$M/SmolLM2-135M-Instruct.Q4_1.gguf; R=~/r; mkdir -p $R
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 PYTHONUNBUFFERED=1
L=2,2g32s6,2g64,2g16s6,2g32,3g0,3g256s6,3g128s6,3,3g64s6,3g64,3g32s6,3g16s6,3g32,4,4g64s6,4g64,4g32s6,4g32,5,6,8
T=${T:-12}
G1=${G1:-1}
EV() { # BIN MODEL TEXT OUT.json
  $1 --threads $T eval $2 --base $S --device cuda --data $M/$3.txt --ctx 2048 --max-tokens 65536 \
    --json > $4 2>$4.err; }
st() { # GPU UNIFORM NAME
  CUDA_VISIBLE_DEVICES=$1 python3 bench/search_table.py --crunch $M/crunch --model $S \
    --calib $M/calib.txt --eval $M/eval.txt --offdomain $M/offdomain.txt --work /tmp/st-$3 \
    --threads $T --device cuda --generations 50 --offspring 16 --selection 8x4,32x1 \
    --levels $L --uniform $2 --plot $R/rd-$3.svg > $R/st-$3.txt 2> $R/st-$3.err
  echo "st $3 done rc=$? $(date +%T)" >> $R/progress
  cp /tmp/st-$3/searched-*/recipe.toml $R/recipe-$3.toml
}
seeds() { # GPU NAME BITS GROUP
  export CUDA_VISIBLE_DEVICES=$1
  for s in 1 2; do
    $M/crunch --threads $T quantize $S --method gptq --bits $3 --group-size $4 --calib $M/calib.txt \
      --calib-samples 128 --calib-len 512 --seed $s --device cuda --out /tmp/u-$2-$s --force \
      --json > $R/u-$2-$s.json 2>/dev/null
    for t in eval offdomain; do EV $M/crunch /tmp/u-$2-$s $t $R/u-$2-$s-$t.json; done
  done
  for s in 0 1 2; do
    sed "s/^seed = .*/seed = $s/; s#^data = .*#data = \"$M/calib.txt\"#" $R/recipe-$2.toml > /tmp/rc-$2-$s.toml
    $M/crunch --threads $T compress $S --recipe /tmp/rc-$2-$s.toml --device cuda --out /tmp/r-$2-$s \
      --force --json > $R/r-$2-$s.json 2>$R/r-$2-$s.err
    for t in eval offdomain; do EV $M/crunch /tmp/r-$2-$s $t $R/r-$2-$s-$t.json; done
  done
  echo "seeds $2 done $(date +%T)" >> $R/progress
}
drift() { # GPU
  export CUDA_VISIBLE_DEVICES=$1
  C="--calib $M/calib.txt --calib-samples 128 --calib-len 512 --seed 0"
  $M/crunch --threads $T quantize $S --method gptq --bits 3 --group-size 32 $C --device cpu \
    --out /tmp/d-cpu --force --json > $R/d-cpu.json 2>/dev/null
  for t in eval offdomain; do EV $M/crunch /tmp/d-cpu $t $R/d-cpu-$t.json; done
  echo "drift cpu done $(date +%T)" >> $R/progress
  n=0; while [ ! -x $M/crunch-old ] && [ $n -lt 90 ]; do sleep 10; n=$((n+1)); done
  [ -x $M/crunch-old ] || { echo "drift: no crunch-old" >> $R/progress; return; }
  $M/crunch-old --threads $T quantize $S --method gptq --bits 3 --group-size 32 $C --device cuda \
    --out /tmp/d-old --force --json > $R/d-old.json 2>$R/d-old.err
  for t in eval offdomain; do
    EV $M/crunch-old /tmp/d-old $t $R/d-oldq-olde-$t.json
    EV $M/crunch /tmp/d-old $t $R/d-oldq-newe-$t.json
    EV $M/crunch-old /tmp/st-g32/uniform-3b-g32 $t $R/d-newq-olde-$t.json
  done
  echo "drift old done $(date +%T)" >> $R/progress
}
cd "$REPO"
(st 0 3:0 pc; seeds 0 pc 3 0
 CUDA_VISIBLE_DEVICES=0 DEVICES=cuda THREADS=$T bash bench/gpu/kv_cache.sh $M/crunch1724 $M $R/kvgpu \
   f32,kivi2:vg64:s1:pre:h:lm:u,kivi2:k8:vg64:s1:pre:h:lm:u,kivi2:v8:vg64:s1:pre:h:lm:u,kivi2:vg128:r32:s1:pre:h:lm:u \
   > $R/kvgpu.out 2>&1
 echo "kvgpu done rc=$? $(date +%T)" >> $R/progress) &
(st $G1 3:32 g32; seeds $G1 g32 3 32; drift $G1) &
wait
echo "all done $(date +%T)" >> $R/progress
