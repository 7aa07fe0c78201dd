#!/usr/bin/env bash
# Decision 153's KV-cache screens (s35): static codebooks and a calibrated KLT for kivi2-class
# caches, and where in depth kivi2's KL comes from. A measurement harness, not a crunch feature:
# it applies s35-kv-screen.patch (environment-variable hooks in the KV store and the model's
# cache) to a scratch worktree, builds it, dumps pre-RoPE keys and values of the calibration
# text, fits the codebooks / bases with numpy, and evaluates one or two windows of eval.txt.
# s35 ran these commands by hand (BENCHMARKS.md); this script collects them and was not run
# end to end.
# Usage: bench/kv_screen/run.sh MODEL_DIR OUT   (MODEL_DIR: the SmolLM2 GGUF, calib.txt, eval.txt)
set -euo pipefail
in=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel)
wt=$out/worktree
mkdir -p "$out/dump" "$out/s"
[ -d "$wt" ] || git -C "$repo" worktree add -q --detach "$wt"
git -C "$wt" apply "$here/s35-kv-screen.patch"
(cd "$wt" && cargo build --release --locked -p crunch-cli)
crunch=$wt/target/release/crunch
m=$in/SmolLM2-135M-Instruct.Q4_1.gguf
CRUNCH_KV_DUMP=$out/dump "$crunch" --threads 2 eval "$m" --data "$in/calib.txt" --ctx 512 \
  --max-tokens 16384 --kv-cache f16 --json > /dev/null
python3 "$here/kmeans.py" "$out/dump" "$out/cqA.bin" 2 6 2 6 512 8192 15  # 3 bits per channel
python3 "$here/kmeans.py" "$out/dump" "$out/cqB.bin" 4 8 4 8 512 8192 12  # 2 bits per channel
python3 "$here/klt.py" "$out/dump" "$out/klt_2u.bin" 3 3 0 2   # KLT, every component 2 bits
python3 "$here/klt.py" "$out/dump" "$out/id_2u.bin" 3 3 1 2    # identity, the same
python3 "$here/klt.py" "$out/dump" "$out/klt_3_25.bin" 3 2.5   # KLT, variance-greedy bits
python3 "$here/klt.py" "$out/dump" "$out/id_3_25.bin" 3 2.5 1
python3 "$here/klt.py" "$out/dump" "$out/id_8.bin" 9 9 1 8     # control: 8 bits, KL ~ 0
ev() { "$crunch" --threads 2 eval "$m" --data "$in/eval.txt" --ctx 2048 --max-tokens "$1" --json --kv-cache "$2"; }
for b in id_8 id_2u klt_2u id_3_25 klt_3_25; do CRUNCH_KV_KLT=$out/$b.bin ev 2048 f32,f16 > "$out/s/$b.jsonl"; done
for o in both k v; do CRUNCH_KV_ONLY=$o CRUNCH_KV_CQ=$out/cqA.bin ev 2048 f32,f16 > "$out/s/cqA_$o.jsonl"; done
CRUNCH_KV_CQ=$out/cqB.bin ev 4096 f32,f16 > "$out/s/cqB_2w.jsonl"
CRUNCH_KV_CQ=$out/cqA.bin ev 4096 f32,f16 > "$out/s/cqA_2w.jsonl"
ev 2048 f32,kivi2:vg64:s1:pre:h:lm:u > "$out/s/ref1.jsonl"
ev 4096 f32,kivi2:vg64:s1:pre:h:lm:u,kivi2:vg64:s1:pre:r24:h:lm:u > "$out/s/ref_2w.jsonl"
for r in 0-4 5-9 10-14 15-19 20-24 25-29; do
  CRUNCH_KV_LAYER_MODES="$r=kivi2:vg64:s1:pre:h:lm:u" ev 2048 f32,f16 > "$out/s/layers_$r.jsonl"
done
git -C "$repo" worktree remove --force "$wt"
