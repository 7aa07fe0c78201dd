cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
/usr/local/cuda/bin/cuobjdump -sass /tmp/gemv_lab > /tmp/sass.txt 2>&1; gzip -c /tmp/sass.txt > $OUT/sass.txt.gz
LAB_ONLY=mma_u4_w2,lab_lean2,lab_lean2b2,lab_lean4,lab_lean2+pdl,lab_w2_pdl,lab_pf_end /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
LAB_ONLY=mma_u4_w2,lab_lean2,lab_lean4 timeout 200 /usr/local/cuda/bin/ncu --clock-control none --kernel-name regex:"mma_u4_w2|lab_lean" --launch-skip 0 --launch-count 200 --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active /tmp/gemv_lab 1 1 > $OUT/ncu2.txt 2>&1
grep -v '"n":' $OUT/lab.jsonl | head -60
