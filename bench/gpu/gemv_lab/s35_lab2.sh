# s35 (decision 152), second run: items requested ahead into L2 with cp.async.bulk.prefetch
# The kernels named below are in commit eb27916's lab.cu and packed/cc.cu (reverted after s35): run
# this script from that commit.
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
LAB_ONLY=${LAB_ONLY:-mma_u4_w2,cc_u4+pdl,cc_u4_pf0+pdl,cc_u4_pf1+pdl,cc_u4_pf2+pdl,cc_u4_pf1,cc_u4_256_pf1+pdl@2,lab_rd_tile_pdl} timeout 200 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
grep -v '"n":' $OUT/lab.jsonl | grep -E "block|diff|hbm"
