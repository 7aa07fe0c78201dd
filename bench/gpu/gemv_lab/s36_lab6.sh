# s36, sixth run: 2 tiles of 16 weight rows per warp pass (i8s.cu's i8mt2_*: each read of x's
# planes feeds 2 mma) against the runtime's int8 kernels at 8, 16 and 32 rows (mma_i8_g32 is
# the runtime's 32-row kernel), with everything of lab5 beside them.
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
LAB_NO_CHAIN=1 LAB_ONLY=${LAB_ONLY:-mma_u4_w2} timeout 400 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
grep -E '"rows"|i8_vs|hbm' $OUT/lab.jsonl | grep -v '"n":' | grep -E 'block|i8_vs|hbm' | sed 's/.*"kernel":"\([^"]*\)","rows":\([0-9]*\),"what":"\([^"]*\)","us":\([0-9.]*\).*/\1 \2 \3 \4/; s/.*"kernel":"\([^"]*\)","ref":"\([^"]*\)","rows":\([0-9]*\).*"rel":\([0-9.e+-]*\).*/check \1 vs \2 rows \3 rel \4/' | grep -v "i8s[248]_"
