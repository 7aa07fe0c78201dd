# s38's and s39's lab runs (issue 17, decisions 157–158): `OUT=DIR bash bench/gpu/gemv_lab/s38_lab.sh RUN`, from the
# repository root on the GPU machine. Each run builds lab.cu with nvcc against the runtime's
# packed/mma.cu as it was at that run's commit, times its int8 rows kernels (µs per block of four
# 8B-shaped products, each after its own activation split) and checks their outputs against the
# bf16 refs, mma_i8_g32 and the bit-identical references in lab.cu; then, unless LAB_NO_NCU is
# set, dumps the SASS of and runs ncu (instruction mix, issue, stalls) on the run's NCU kernel.
#   1: the runtime's swapped kernels (12 warps at 16 rows) against the same bodies with an L2
#      look-ahead of the next tile (PF = 1) and of the first tile too (PF = 3), i8p.cu.
#   2: the runtime on x's planes in the mma's fragment order 16t + 4j + q (not committed: c0c1c93
#      with mma_split_i8's pair index 8t + 2·(jj & 3) + (jj >> 2) and i8x_gemm's loads at 4t + j)
#      against s37's bodies on the unordered planes (i8x.cu) and the ordered body at other warp
#      counts (i8f.cu).
#   3: as 2 with the order 16j + 4t + q (c0c1c93).
#   4: the runtime (c0c1c93) against i8y.cu: scales by shuffle (s), and the planes a group
#      ahead (sp).
#   5: the runtime with lab4's sp adopted (f00dda3) against i8y_sp and s37's bodies; no ncu.
#   6: the runtime (f00dda3) against i8y.cu's i8z_* (JM: the multiply j-major over all slabs,
#      commit 062ac66 had them as a copy, i8z.cu); ncu with every
#      stall reason on the runtime's 16-row kernel.
#   7: (s39, decision 158) the runtime at 8 warps for every row count against i8w.cu: one pipeline
#      over a warp's (tile, group) items, 1 (d2) or 2 (d3) ahead across tile boundaries, and
#      i8y_sp_g16 (s38's 12-warp runtime body); ncu with every stall reason on i8w_d2_g16.
#      i8w.cu is not kept (commit ac1fb19 has it and its lab.cu entries): run 7 needs that commit.
#   8: (s39) probes on the runtime's body at 8 warps (i8y.cu, PR: 1 no plane loads, 2 no code
#      loads, 4 no mma; outputs meaningless) at 16 and 32 rows, with the runtime beside them.
#   9: (s39) 16 warps per SM at 16 rows (2 blocks of 8, 1 of 16) on i8y.cu's s body within 128
#      registers, against 8 warps, each also without loads (PR = 3).
#  10: (s39) the runtime against i8y.cu's PR = 8 probe: the codes read tile-major, each warp load
#      512 contiguous bytes (the same bytes in another order; outputs meaningless); PR = 16: x's
#      planes read group-major likewise; 24: both.
#  11: (s39) where the fixed cost of a product goes: the runtime's kernels and an empty product
#      (i8y.cu, PR = 32) launched as in the runtime (LAB_I8_PDL=1: PDL for the split and the
#      product), then again without the split (LAB_NO_SPLIT=1, timing only) and without PDL.
#  12: (s39) a block with its producers (rms_norm, silu_mul) at 8 / 16 / 32 rows: producer, split
#      and product as the runtime runs them, against fuse.cu's producers that write the planes
#      (no split launch); bit-identity of x, planes and outputs (LAB_FUSE=1).
# LAB_I8_ONLY overrides the run's kernel list, LAB_NCU its ncu kernels.
run=${1:?usage: s38_lab.sh RUN (1-12)}
case $run in
1) list=mma_u4_g8,mma_i8x_g8,i8p1_g8,i8p3_g8,mma_u4_g16,mma_i8x_g16,i8p1_g16,i8p3_g16,mma_i8_g32,mma_i8x_g32,i8p1_g32,i8p3_g32
   ncu=mma_i8x_g16 ;;
2|3) list=mma_u4_g8,i8x_g8s4,mma_i8x_g8,i8f_g8w12,i8f_g8w16,mma_u4_g16,i8xw12_g16s4,mma_i8x_g16,i8f_g16w8,i8f_g16w16,mma_i8_g32,i8x_g32s4,mma_i8x_g32,i8f_g32w12
   ncu=mma_i8x_g16 ;;
4) list=mma_u4_g8,mma_i8x_g8,i8y_s_g8,i8y_sp_g8,i8y_sp_g8w16,mma_u4_g16,mma_i8x_g16,i8y_s_g16,i8y_sp_g16,i8y_sp_g16w8,mma_i8_g32,mma_i8x_g32,i8y_s_g32,i8y_sp_g32
   ncu=i8y_sp_g16 ;;
5) list=mma_u4_g8,i8x_g8s4,mma_i8x_g8,i8y_sp_g8,mma_u4_g16,i8xw12_g16s4,mma_i8x_g16,i8y_sp_g16,mma_i8_g32,i8x_g32s4,mma_i8x_g32,i8y_sp_g32
   ncu= ;;
6) list=mma_u4_g8,mma_i8x_g8,i8z_g8,i8z_g8w12,mma_u4_g16,mma_i8x_g16,i8z_g16,i8z_g16w8,mma_i8_g32,mma_i8x_g32,i8z_g32
   ncu=mma_i8x_g16
   stalls=',regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' ;;
7) list=mma_u4_g8,mma_i8x_g8,i8w_d2_g8,i8w_d3_g8,mma_u4_g16,mma_i8x_g16,i8y_sp_g16,i8w_d2_g16,i8w_d3_g16,mma_i8_g32,mma_i8x_g32,i8w_d2_g32
   ncu=i8w_d2_g16
   stalls=',regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' ;;
8) list=mma_i8x_g16,i8y_pr1_g16,i8y_pr2_g16,i8y_pr3_g16,i8y_pr4_g16,i8y_pr7_g16,mma_i8x_g32,i8y_pr1_g32,i8y_pr2_g32,i8y_pr3_g32,i8y_pr4_g32
   ncu= ;;
9) list=mma_i8x_g16,i8y_s_g16w8,i8y_s_g16b2,i8y_s_g16w16,i8y_pr3_g16,i8y_s_pr3_g16w8,i8y_s_pr3_g16b2,i8y_s_pr3_g16w16
   ncu= ;;
10) list=mma_i8x_g8,i8y_pr8_g8,mma_i8x_g16,i8y_pr8_g16,i8y_pr16_g16,i8y_pr24_g16,mma_i8x_g32,i8y_pr8_g32,i8y_pr16_g32,i8y_pr24_g32
   ncu= ;;
11) list=mma_i8x_g8,mma_i8x_g16,mma_i8x_g32,i8y_pr32_g16
   ncu= ;;
12) list=mma_i8x_g8,mma_i8x_g16,mma_i8x_g32
   export LAB_FUSE=1
   ncu= ;;
*) echo "s38_lab.sh: no run $run (1-12)" >&2; exit 2 ;;
esac
cd bench/gpu/gemv_lab
sed 's/^#if __CUDA_ARCH__ >= 800$/#if 1/' ../../../crates/crunch-runtime/src/cuda/packed/mma.cu > mma_lab.cu
/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=native -Xptxas -v -o /tmp/gemv_lab lab.cu -lcuda > $OUT/ptxas.txt 2>&1
grep -E "error" $OUT/ptxas.txt | head
if [ "$run" = 11 ]; then
  for v in pdl pdl_nosplit plain plain_nosplit; do
    env $([ "${v#pdl}" != "$v" ] && echo LAB_I8_PDL=1) $([ "${v%nosplit}" != "$v" ] && echo LAB_NO_SPLIT=1) \
      LAB_NO_CHAIN=1 LAB_ONLY=mma_u4_w2 LAB_I8_ONLY=$list timeout 200 /tmp/gemv_lab 8 10 2>&1 | sed "s/\"kernel\":\"/\"variant\":\"$v\",\"kernel\":\"/" >> $OUT/lab.jsonl
  done
else
LAB_NO_CHAIN=1 LAB_ONLY=mma_u4_w2 LAB_I8_ONLY=${LAB_I8_ONLY:-$list} timeout 300 /tmp/gemv_lab 8 10 > $OUT/lab.jsonl 2>&1
fi
grep -E '"rows"|i8_vs|hbm' $OUT/lab.jsonl | grep -v '"n":' | sed 's/.*"kernel":"\([^"]*\)","rows":\([0-9]*\),"what":"\([^"]*\)","us":\([0-9.]*\).*/\1 \2 \3 \4/; s/.*"kernel":"\([^"]*\)","ref":"\([^"]*\)","rows":\([0-9]*\).*"rel":\([0-9.e+-]*\).*/check \1 vs \2 rows \3 rel \4/'
if [ -z "${LAB_NO_NCU:-}" ]; then
for kn in ${LAB_NCU:-$ncu}; do
/usr/local/cuda/bin/cuobjdump -sass -fun $kn /tmp/gemv_lab > $OUT/sass_$kn.txt 2>&1
grep -cE "^\s+/\*[0-9a-f]{4}\*/" $OUT/sass_$kn.txt
LAB_NO_CHAIN=1 LAB_ONLY=mma_u4_w2 LAB_I8_ONLY=$kn timeout 150 /usr/local/cuda/bin/ncu --clock-control none --kernel-name $kn --launch-skip 8 --launch-count 4 --section SpeedOfLight --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis --section InstructionStats --section ComputeWorkloadAnalysis --section SchedulerStats --metrics smsp__inst_executed.sum,smsp__inst_executed_pipe_tensor.sum,smsp__inst_executed_pipe_lsu.sum,smsp__inst_executed_pipe_alu.sum,smsp__inst_executed_pipe_fma.sum,smsp__inst_executed_pipe_xu.sum,smsp__inst_executed_pipe_fp16.sum,smsp__inst_executed_pipe_uniform.sum,smsp__inst_executed_pipe_adu.sum,smsp__inst_executed_pipe_cbu.sum"${stalls:-}" /tmp/gemv_lab 2 1 > $OUT/ncu_$kn.txt 2>&1
grep -E "^\s+(Duration|DRAM Throughput|L1/TEX Cache Throughput|Warp Cycles Per Issued|Achieved Occupancy|Issued Ipc Active|Issue Slots Busy|No Eligible|smsp__inst_executed)" $OUT/ncu_$kn.txt | awk '{print $1,$2,$3,$NF}' | head -80
grep -E "issue_stalled" $OUT/ncu_$kn.txt | awk '{print $1,$NF}' | sort -k2 -g -r | head -60
done
gzip -9 $OUT/ncu_*.txt $OUT/sass_*.txt 2>/dev/null
fi
