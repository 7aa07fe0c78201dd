# s35 (decision 152), third run: batches of 2 or 3 steps at <= 64 registers, 2 blocks of 512 per SM
# The kernels named below are in commit eb27916's lab.cu and packed/cc.cu (reverted after s35): run
# this script from that commit.
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
LAB_ONLY=${LAB_ONLY:-mma_u4_w2,cc_u4+pdl,cc_u4_j2x2+pdl,cc_u4_j3x2+pdl,cc_u4_j2x2+pdl@1,lab_rd_tile_pdl} timeout 200 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
grep -v '"n":' $OUT/lab.jsonl | grep -E "block|diff|hbm"
