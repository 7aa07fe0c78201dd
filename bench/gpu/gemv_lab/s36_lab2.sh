# s36, second run: the chain as one persistent kernel (chain.cu: cc_u4's body, a grid barrier
# between products instead of a kernel boundary; _cross: the next product's first codes requested
# before the last batch of this one is multiplied), against cc_u4+pdl and its no-staging,
# no-arithmetic probe in the same run.
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
LAB_ONLY=${LAB_ONLY:-mma_u4_w2,cc_u4+pdl,cc_probe_neither+pdl,ccr8_nomath+pdl} timeout 300 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
grep -v '"n":' $OUT/lab.jsonl | grep -v g4_vs | sed 's/.*"kernel":"\([^"]*\)","what":"\([^"]*\)",[^0-9]*\([0-9.e+-]*\).*/\1 \2 \3/'
grep hbm $OUT/lab.jsonl
