# s35 (decision 152): co-residency. cc_u4 at 256 and 128 threads per block, "@N" = at most N
# blocks of one launch per SM, so the next PDL launch's blocks can sit beside; probes of the
# 256-thread shape without staging x, with x copied in already quantized, and with neither.
# The kernels named below are in commit eb27916's lab.cu and packed/cc.cu (reverted after s35): run
# this script from that commit.
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
LAB_ONLY=${LAB_ONLY:-mma_u4_w2,cc_u4+pdl,cc_u4_256+pdl@1,cc_u4_256+pdl@2,cc_u4_128+pdl@2,cc_u4_128+pdl@3,cc_u4_128+pdl@4,cc_probe256_nostage+pdl@1,cc_probe256_copy+pdl@1,cc_probe256_pre2+pdl@1,cc_probe256_neither+pdl@1,lab_rd_tile_pdl} timeout 200 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
grep -v '"n":' $OUT/lab.jsonl | grep -E "block|diff|hbm"
