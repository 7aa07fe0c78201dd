# s36, fourth run: the int8 rows kernels (packed/mma.cu, decision 155) against i8s.cu's slotted
# variants (SLOTS tiles per block pass, so SLOTS warps share each group's activation planes in
# L1), at 4, 8, 12 and 16 rows, with decision 144's bf16 kernels beside them; outputs against
# the bf16 kernels.
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
LAB_NO_CHAIN=1 LAB_ONLY=${LAB_ONLY:-mma_u4_w2} timeout 400 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
grep -E '"rows"|i8_vs|hbm' $OUT/lab.jsonl | grep -v '"n":' | grep -E 'block|i8_vs|hbm' | sed 's/.*"kernel":"\([^"]*\)","rows":\([0-9]*\),"what":"\([^"]*\)","us":\([0-9.]*\).*/\1 \2 \3 \4/; s/.*"kernel":"\([^"]*\)","ref":"\([^"]*\)","rows":\([0-9]*\).*"rel":\([0-9.e+-]*\).*/check \1 vs \2 rows \3 rel \4/'
