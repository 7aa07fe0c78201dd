# s37, fourth run: the runtime's swapped kernels (mma_i8x_g*, decision 156, 8 warps per block) against
# the same body with W = 10, 12 or 16 warps per block (one block per SM: 12 warps fit the 16-row kernel in
# 168 registers), outputs checked against the bf16 refs and mma_i8_g32. No ncu.
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
I8=${LAB_I8_ONLY:-mma_u4_g8,mma_i8x_g8,i8xw16_g8s4,i8xw12_g8s4,mma_u4_g16,mma_i8x_g16,i8xw12_g16s4,i8xw10_g16s4,mma_i8_g32,mma_i8x_g32,i8xw12_g32s4,i8xw10_g32s4}
LAB_NO_CHAIN=1 LAB_ONLY=mma_u4_w2 LAB_I8_ONLY=$I8 timeout 300 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
grep -E '"rows"|i8_vs|hbm' $OUT/lab.jsonl | grep -v '"n":' | sed 's/.*"kernel":"\([^"]*\)","rows":\([0-9]*\),"what":"\([^"]*\)","us":\([0-9.]*\).*/\1 \2 \3 \4/; s/.*"kernel":"\([^"]*\)","ref":"\([^"]*\)","rows":\([0-9]*\).*"rel":\([0-9.e+-]*\).*/check \1 vs \2 rows \3 rel \4/'
if false; then
for kn in i8x_g16s2 i8x_g16s4x1; do
LAB_NO_CHAIN=1 LAB_ONLY=mma_u4_w2 LAB_I8_ONLY=$kn timeout 120 /usr/local/cuda/bin/ncu --clock-control none --kernel-name $kn --launch-skip 8 --launch-count 4 --section SpeedOfLight --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis /tmp/gemv_lab 2 1 > $OUT/ncu_$kn.txt 2>&1
grep -E "^\s+(Duration|DRAM Throughput|L1/TEX Cache Throughput|SM Active Cycles|Elapsed Cycles|Warp Cycles Per Issued|Achieved Occupancy)" $OUT/ncu_$kn.txt | awk '{print $1,$2,$3,$NF}' | paste - - - - - - -
done
fi
