# s35 (decision 152), fourth run: x quantized by its producer (lever 2), probed at 512 / 256 /
# 128 threads per block (1 / 2 / 4 blocks per SM): planes copied to shared memory (copy) or read
# in place through L1 (direct), against no staging (nostage) and neither staging nor arithmetic
# (neither). Timing only: the probes' outputs mean nothing.
# The kernels named below are in commit 867d7ef's lab.cu and packed/cc.cu (reverted after s35): run
# this script from that commit.
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
LAB_ONLY=${LAB_ONLY:-mma_u4_w2,cc_u4+pdl,cc_probe_nostage+pdl,cc_probe_neither+pdl,cc_probe512_copy+pdl,cc_probe512_direct+pdl,cc_probe256x2_nostage+pdl,cc_probe256x2_copy+pdl,cc_probe256x2_direct+pdl,cc_probe256x2_neither+pdl,cc_probe128x4_nostage+pdl,cc_probe128x4_direct+pdl,cc_probe128x4_neither+pdl,lab_rd_tile_pdl} timeout 200 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
grep '"block"' $OUT/lab.jsonl | grep -v '"n":' | sed 's/.*"kernel":"\([^"]*\)".*"us":\([0-9.]*\).*/\1 \2/'
grep hbm $OUT/lab.jsonl
