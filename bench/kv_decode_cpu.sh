#!/usr/bin/env bash
# Decode speed on the CPU with each --kv-cache mode: `crunch generate --device cpu` of N greedy
# tokens (default 256) for every binary given, alternating, REPS rounds (default 2). One JSON
# line per run on stdout: binary, mode, round, decode tokens/s, and a hash of the token ids
# (equal hashes: the binaries decoded the same tokens).
# Usage: bench/kv_decode_cpu.sh MODEL "MODE MODE…" CRUNCH [CRUNCH…]
#   e.g. bench/kv_decode_cpu.sh /tmp/smol_g128 "f32 q8 kivi2" old/crunch new/crunch
set -euo pipefail
model=$1 modes=$2
shift 2
prompt="The three most important inventions of the twentieth century are"
for r in $(seq 1 "${REPS:-2}"); do
  for mode in $modes; do
    for bin in "$@"; do
      "$bin" generate "$model" --prompt "$prompt" --max-tokens "${N:-256}" --ignore-eos \
        --device cpu --kv-cache "$mode" --json 2>/dev/null |
        python3 -c 'import json,sys,hashlib; r=json.load(sys.stdin); print(json.dumps({"bench":"kv_decode_cpu","binary":sys.argv[1],"kv_cache":sys.argv[2],"round":int(sys.argv[3]),"tokens":len(r["token_ids"]),"decode_tok_s":round(r["decode_tokens_per_second"],2),"ids_sha":hashlib.sha256(str(r["token_ids"]).encode()).hexdigest()[:12]}))' \
          "$bin" "$mode" "$r"
    done
  done
done
