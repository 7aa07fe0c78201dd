set -x
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,memory.total --format=csv
which ncu nsys; ls /usr/local/cuda/bin | grep -i -E "ncu|nsight"; ls /opt/nvidia 2>/dev/null
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -o /tmp/gemv_lab lab.cu -lcuda 2>&1 | grep -E "error|warning" | head -30
LAB_ONLY=mma_u4_w2,lab_pf_end,lab_pf_start,lab_pf_end_el,lab_w2_pdl,lab_w2_pdl@2,lab_pf_end@2 /tmp/gemv_lab 8 10 > $OUT/lab16.jsonl 2>&1
LAB_PF_MB=32 LAB_ONLY=mma_u4_w2,lab_pf_end,lab_pf_start,lab_pf_end_el /tmp/gemv_lab 8 10 > $OUT/lab32.jsonl 2>&1
LAB_PF_MB=6 LAB_ONLY=mma_u4_w2,lab_pf_end,lab_pf_start /tmp/gemv_lab 8 10 > $OUT/lab6.jsonl 2>&1
NCU=$(which ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if [ -n "$NCU" ]; then LAB_ONLY=mma_u4_w2 timeout 240 $NCU --kernel-name mma_u4_w2 --launch-skip 8 --launch-count 4 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats /tmp/gemv_lab 2 1 > $OUT/ncu.txt 2>&1; fi
cat $OUT/lab16.jsonl
