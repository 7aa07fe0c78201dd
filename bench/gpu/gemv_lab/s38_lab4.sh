# s38, fourth run: the runtime's swapped int8 kernels (mma_i8x_g*, planes in fragment order,
# decision 157) against i8y.cu: scales loaded once per tile row and shuffled (s), and x's planes
# requested a group ahead with the codes (sp); outputs checked against the bf16 refs, mma_i8_g32
# and mma_i8x_g8/g16 (bit-identical expected). Then SASS and ncu for i8y_sp_g16.
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
I8=${LAB_I8_ONLY:-mma_u4_g8,mma_i8x_g8,i8y_s_g8,i8y_sp_g8,i8y_sp_g8w16,mma_u4_g16,mma_i8x_g16,i8y_s_g16,i8y_sp_g16,i8y_sp_g16w8,mma_i8_g32,mma_i8x_g32,i8y_s_g32,i8y_sp_g32}
LAB_NO_CHAIN=1 LAB_ONLY=mma_u4_w2 LAB_I8_ONLY=$I8 timeout 300 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
grep -E '"rows"|i8_vs|hbm' $OUT/lab.jsonl | grep -v '"n":' | sed 's/.*"kernel":"\([^"]*\)","rows":\([0-9]*\),"what":"\([^"]*\)","us":\([0-9.]*\).*/\1 \2 \3 \4/; s/.*"kernel":"\([^"]*\)","ref":"\([^"]*\)","rows":\([0-9]*\).*"rel":\([0-9.e+-]*\).*/check \1 vs \2 rows \3 rel \4/'
if [ -z "$LAB_NO_NCU" ]; then
/usr/local/cuda/bin/cuobjdump -sass -fun i8y_sp_g16 /tmp/gemv_lab > $OUT/sass_i8y_sp_g16.txt 2>&1
grep -cE "^\s+/\*[0-9a-f]{4}\*/" $OUT/sass_i8y_sp_g16.txt
for kn in ${LAB_NCU:-i8y_sp_g16}; do
LAB_NO_CHAIN=1 LAB_ONLY=mma_u4_w2 LAB_I8_ONLY=$kn timeout 150 /usr/local/cuda/bin/ncu --clock-control none --kernel-name $kn --launch-skip 8 --launch-count 4 --section SpeedOfLight --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis --section InstructionStats --section ComputeWorkloadAnalysis --section SchedulerStats --metrics smsp__inst_executed.sum,smsp__inst_executed_pipe_tensor.sum,smsp__inst_executed_pipe_lsu.sum,smsp__inst_executed_pipe_alu.sum,smsp__inst_executed_pipe_fma.sum,smsp__inst_executed_pipe_xu.sum,smsp__inst_executed_pipe_fp16.sum,smsp__inst_executed_pipe_uniform.sum,smsp__inst_executed_pipe_adu.sum,smsp__inst_executed_pipe_cbu.sum /tmp/gemv_lab 2 1 > $OUT/ncu_$kn.txt 2>&1
grep -E "^\s+(Duration|DRAM Throughput|L1/TEX Cache Throughput|Warp Cycles Per Issued|Achieved Occupancy|Issued Ipc Active|Issue Slots Busy|No Eligible|smsp__inst_executed)" $OUT/ncu_$kn.txt | awk '{print $1,$2,$3,$NF}' | head -80
done
gzip -9 $OUT/ncu_*.txt $OUT/sass_*.txt
fi
