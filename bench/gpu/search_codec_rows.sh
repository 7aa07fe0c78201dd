#!/usr/bin/env bash
# Issue 14 on the GPU machine: the crunch-format search against uniform GPTQ with the levels of
# one codec, and that codec's uniform models alone (bench/search_table.py; both texts, the
# protocol's evaluation; each command under 8 minutes on one H200 unless noted).
#   CODEC=lut    (decision 143): per-row lookup-table levels;
#                search: uniform GPTQ 3g128/3g32 and the search at their bits over the default
#                ladder plus 2lut/3lut/4lut; uniform: LUT 3 and 4 bits per row.
#   CODEC=kscale (decision 145): coded (two-level) group scales;
#                search: uniform GPTQ 3g128/3g32 and the search over coded levels only;
#                uniform: 3g16s6, 3g32s6, 3g64s6, 2g16s6.
#   CODEC=union  (s31's next step): uniform GPTQ 3-bit per channel (3.028 bpw, "3.0") and 3g32
#                (3.594, "3.5"), and the search at their bits over the free-scale ladder that met
#                3.5 in s31 together with the coded levels that brought 3.0 to 0.766x
#                (about 10 minutes per search on one H200; run the two on two GPUs:
#                UNIFORM=3:0 and UNIFORM=3:32); uniform: 3g128s6 and 3g16s6. PRUNE=1 prunes
#                the ladder to the uniform models' front first (decision 148); GENERATIONS=150
#                as s32's 3.0-bpw run (each UNIFORM has its own --work folder, so the two
#                can run side by side). JUMP=N lets a mutation raise a layer up to N ranks
#                (decision 149). TAG=NAME adds NAME to the work folder (two settings at one
#                UNIFORM side by side).
# Usage: bench/gpu/search_codec_rows.sh lut|kscale|union search|uniform CRUNCH MODEL.gguf DIR_WITH_TEXTS OUTDIR
set -euo pipefail
codec=$1 mode=$2 crunch=$3 model=$4 texts=$5 out=$6
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
case $codec:$mode in
  lut:search|lut:uniform|kscale:search|kscale:uniform|union:search|union:uniform) ;;
  *) echo "usage: $0 lut|kscale|union search|uniform CRUNCH MODEL DIR OUT" >&2; exit 2 ;;
esac
mkdir -p "$out"
# As measured: the ladder pruned only with PRUNE=1, one-rank moves unless JUMP is given (crunch's
# defaults since decision 150 are pruning on and --jump 3).
moves=$([ -n "${PRUNE:-}" ] && echo --prune-levels || echo --no-prune-levels)
table() { python3 "$(dirname "$0")/../search_table.py" --crunch "$crunch" --model "$model" \
  --calib "$texts/calib.txt" --eval "$texts/eval.txt" --offdomain "$texts/offdomain.txt" \
  --work "/tmp/search-$codec-$(echo "${UNIFORM:-none}" | tr : g)${TAG:+-$TAG}-table" --threads "${THREADS:-16}" --device cuda $moves --jump "${JUMP:-1}" "$@"; }
case $codec:$mode in
  lut:search)
    table --generations 30 --offspring 16 --selection 2x4,8x1 --plot "$out/search_lut_rd.svg" \
      --levels 2lut,2,3,3lut,3g64,3g32,4,4g64,4lut,4g32,5,6,8 | tee "$out/search-lut-table.txt" ;;
  lut:uniform)
    table --skip-search --lut-uniform 3,4 | tee "$out/lut-uniform-table.txt" ;;
  kscale:search)
    table --generations 30 --offspring 16 --selection 2x4,8x1 --plot "$out/search_kscale_rd.svg" \
      --levels 2g32s6,2g16s6,3g128s6,3g64s6,3g32s6,3g16s6,4g32s6,4g16s6,5g32s6,6g32s6,8 \
      | tee "$out/search-kscale-table.txt" ;;
  kscale:uniform)
    table --skip-search --kscale-uniform 3:16:6,3:32:6,3:64:6,2:16:6 | tee "$out/kscale-uniform-table.txt" ;;
  union:search)
    u=${UNIFORM:-3:0}
    # PRUNE=1: the ladder pruned to the uniform models' front first (decision 148).
    table --generations ${GENERATIONS:-50} --offspring 16 --selection 8x4,32x1 --uniform "$u" \
      --plot "$out/search_union_rd-${u/:/g}.svg" \
      --levels 2,2g32s6,2g64,2g16s6,2g32,3g0,3g256s6,3g128s6,3,3g64s6,3g64,3g32s6,3g16s6,3g32,4,4g64s6,4g64,4g32s6,4g32,5,6,8 \
      | tee "$out/search-union-table-${u/:/g}.txt" ;;
  union:uniform)
    table --skip-search --kscale-uniform 3:128:6,3:16:6 | tee "$out/union-uniform-table.txt" ;;
esac
