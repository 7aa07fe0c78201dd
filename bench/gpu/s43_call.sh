# s43: decode attention over compressed caches with 8 warps per block (decision 163's prepared
# variant: WARPS 8, MAX_RPW 4, the same 32 query rows per block) against 4 warps (head).
#   a: `gpu_packed bench --only attention` for head and w8, twice, alternating; w8's full check.
# Usage (GPU machine, repository root): OUT=DIR bash bench/gpu/s43_call.sh a
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
. bench/gpu/s42_call.sh lib
case $1 in
a)
  unpack .cache/s43a gp_head gp_w8
  ab /tmp/att gp_head gp_w8
  check gp_w8 /tmp/att/check
  tar czf $OUT/att.tar.gz -C /tmp att
  ;;
b)
  # The second call: w8 with __launch_bounds__(256, 2) (two blocks per SM at 128 registers,
  # 180 bytes spilled) against head and w8; w8b's full check.
  unpack .cache/s43a gp_head gp_w8 gp_w8b
  ab /tmp/att2 gp_head gp_w8 gp_w8b
  check gp_w8b /tmp/att2/check
  tar czf $OUT/att2.tar.gz -C /tmp att2
  ;;
c)
  # The third call: __launch_bounds__(WARPS·32, B) at (WARPS, MAX_RPW, B) = (8, 4, 2) w8b,
  # (8, 4, 3) w8c, (16, 2, 1) w16, (16, 2, 2) w16b, against head; each one's full check.
  unpack .cache/s43a gp_head gp_w8b gp_w8c gp_w16 gp_w16b
  ab /tmp/att3 gp_head gp_w8b gp_w8c gp_w16 gp_w16b
  for b in gp_w8c gp_w16 gp_w16b; do check $b /tmp/att3/check-$b; done
  tar czf $OUT/att3.tar.gz -C /tmp att3
  ;;
esac
