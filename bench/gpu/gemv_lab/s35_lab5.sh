# s35 (decision 152), fifth run: did the next launch's blocks sit beside the previous one's?
# cc_u4's body with per-block timestamps (TRACE) at 512 threads (1 block per SM, the runtime's
# shape) and 256 threads at 1 and 2 blocks per launch per SM: per block, start → return of
# griddepcontrol.wait and wait → end, one chain of 8 blocks' products.
# The kernels named below are in commit f1ed7ac's lab.cu and packed/cc.cu (reverted after s35): run
# this script from that commit.
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
LAB_ONLY=${LAB_ONLY:-mma_u4_w2,cc_u4+pdl,cc_trace512+pdl,cc_trace256+pdl@1,cc_trace256+pdl@2} timeout 200 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
grep '"block"' $OUT/lab.jsonl | grep -v '"n":' | sed 's/.*"kernel":"\([^"]*\)".*"us":\([0-9.]*\).*/\1 \2/'
grep -E 'trace|hbm|error|rror' $OUT/lab.jsonl
