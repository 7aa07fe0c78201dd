# s38: one device call, a lab run (`s38_lab.sh RUN`, RUN = LAB_RUN) then packed_kernels.sh on the
# carried target/release/examples/gpu_packed; both folders back as two tarballs (the 8-file limit).
# Usage (GPU machine, repository root): LAB_RUN=5 LAB_NO_NCU=1 OUT=DIR bash bench/gpu/gemv_lab/s38_call.sh
set -u
mkdir -p /tmp/lab /tmp/pk
(OUT=/tmp/lab bash bench/gpu/gemv_lab/s38_lab.sh ${LAB_RUN:-5} 2>&1 | grep -v "^smsp__inst_executed_pipe_\(fp16\|xu\|uniform\|adu\|cbu\)") > /tmp/lab/lab.log
cat /tmp/lab/lab.log | head -60
(time REPEATS=5 bash bench/gpu/packed_kernels.sh target/release/examples/gpu_packed /tmp/pk) > /tmp/pk/pk.log 2>&1
grep -E "check exit|bench exit|summary|real" /tmp/pk/pk.log
tail -40 /tmp/pk/packed-bench.err
gzip -9 /tmp/pk/packed-check.jsonl
tar czf $OUT/lab.tar.gz -C /tmp lab; tar czf $OUT/pk.tar.gz -C /tmp pk
