# s36, first run: cc_u4 with its codes through a per-lane cp.async ring (ccr.cu), NS = 4/6/8/9
# steps of 1 KB per warp in flight, against cc_u4+pdl in the same run; probes of the ring at
# NS = 8 without arithmetic, without staging, and without either (outputs meaningless).
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
LAB_ONLY=${LAB_ONLY:-mma_u4_w2,cc_u4+pdl,ccr4+pdl,ccr6+pdl,ccr8+pdl,ccr9+pdl,ccr8_nomath+pdl,ccr8_nostage+pdl,ccr8_neither+pdl,cc_probe_neither+pdl} timeout 300 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
grep -v '"n":' $OUT/lab.jsonl | grep -v g4_vs | sed 's/.*"kernel":"\([^"]*\)","what":"\([^"]*\)",[^0-9]*\([0-9.e+-]*\).*/\1 \2 \3/'
grep hbm $OUT/lab.jsonl
