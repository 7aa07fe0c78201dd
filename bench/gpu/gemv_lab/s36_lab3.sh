# s36, third run: 4–16 activation rows, decision 144's grouped bf16 kernels (mma_u4_g4/g8/g16)
# against int8 tensor-core candidates (i8.cu: x quantized per row and group of 128 into two int8
# planes, mma.m16n8k32 u8 × s8), each with its activation split per product; outputs of the int8
# kernels against the bf16 ones. The batch-1 kernel list and the chain probe are skipped.
# The figures in BENCHMARKS (decision 155) came from commit 451ef46's i8.cu candidates; from the
# next commit on, the lab times packed/mma.cu's mma_i8_g4/g8/g16 (i8_g4/g8/g16u1 there).
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
LAB_NO_CHAIN=1 LAB_ONLY=${LAB_ONLY:-mma_u4_w2,cc_u4+pdl} timeout 400 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
grep -E '"rows"|i8_vs|hbm|"what":"block"' $OUT/lab.jsonl | grep -v '"n":' | sed 's/.*"kernel":"\([^"]*\)","rows":\([0-9]*\),"what":"\([^"]*\)","us":\([0-9.]*\).*/\1 \2 \3 \4/'
