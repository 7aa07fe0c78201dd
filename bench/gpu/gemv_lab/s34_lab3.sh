cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head; grep -A2 "lab_bulk" $OUT/ptxas.txt | grep -E "registers|spill"
LAB_ONLY=mma_u4_w2,lab_bulk4,lab_bulk6,lab_bulk3,lab_w2_pdl timeout 120 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
for kn in mma_u4_w2 lab_bulk4; do
LAB_ONLY=mma_u4_w2,$kn timeout 100 /usr/local/cuda/bin/ncu --clock-control none --set full --kernel-name $kn --launch-skip 2 --launch-count 1 /tmp/gemv_lab 1 1 > $OUT/ncu_$kn.txt 2>&1
done
grep -v '"n":' $OUT/lab.jsonl | head -40
