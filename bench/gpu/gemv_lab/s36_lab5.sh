# s36, fifth run: the runtime's int8 kernel body (packed/mma.cu's i8_gemm_wide) at other shapes:
# 32 rows in one pass (NT = 8) against two passes of 16 (as mma_gemm_int8 runs them), and 1
# group per register buffer at 4 and 8 rows against the runtime's 2.
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
grep -A2 "i8r_g32u1\|i8r_g4u1\|i8r_g8u1" $OUT/ptxas.txt | grep -E "Used|spill" | head -6
LAB_NO_CHAIN=1 LAB_ONLY=${LAB_ONLY:-mma_u4_w2} timeout 400 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
grep -E '"rows"|i8_vs|hbm' $OUT/lab.jsonl | grep -v '"n":' | grep -E 'block|i8_vs|hbm' | sed 's/.*"kernel":"\([^"]*\)","rows":\([0-9]*\),"what":"\([^"]*\)","us":\([0-9.]*\).*/\1 \2 \3 \4/; s/.*"kernel":"\([^"]*\)","ref":"\([^"]*\)","rows":\([0-9]*\).*"rel":\([0-9.e+-]*\).*/check \1 vs \2 rows \3 rel \4/'
