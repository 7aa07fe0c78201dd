#!/usr/bin/env python3
"""crunch's GGUF encoders against llama.cpp's on the same weights and the same importance.

For each type T, both tools quantize every matrix of the base model to T (llama-quantize
--pure, crunch `--tensor-type '*=T'`; both fall back the same way where T's blocks do not fit
a row) using the same llama-imatrix file; then, over the tensors stored as T, the
importance-weighted squared error Σ imp[col]·(w − ŵ)² relative to Σ imp[col]·w² is measured
(and the plain squared error relative to Σ w²), decoding both files with gguf-py.
One JSON line per type, then a Markdown table.

  .cache/gguf-venv/bin/python bench/gguf_codec_mse.py --crunch target/release/crunch \
      --llamacpp ~/.cache/llamacpp/build/bin --base base-f32.gguf --imatrix imatrix.gguf --work DIR
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]


def run(cmd):
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return time.time() - t


def tensors(path):
    return {t.name: t for t in GGUFReader(path).tensors}


def values(t):
    """A matrix as [rows, cols] (gguf-py's shape is ggml's ne: columns first)."""
    cols = int(t.shape[0])
    return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1, cols)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crunch", required=True)
    ap.add_argument("--llamacpp", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--imatrix", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    base = tensors(a.base)
    imat = tensors(a.imatrix)
    importance = {}
    for name, t in imat.items():
        if name.endswith(".in_sum2"):
            n = name[: -len(".in_sum2")]
            importance[n] = np.asarray(t.data, dtype=np.float64).reshape(-1) / float(
                np.asarray(imat[n + ".counts"].data).reshape(-1)[0])
    rows = []
    for ty in a.types.split(","):
        ours_path = os.path.join(a.work, f"crunch-pure-{ty}.gguf")
        theirs_path = os.path.join(a.work, f"llama-pure-{ty}.gguf")
        llama_s = run([f"{a.llamacpp}/llama-quantize", "--pure", "--imatrix", a.imatrix, a.base,
                       theirs_path, ty, str(a.threads)])
        crunch_s = run([a.crunch, "--threads", str(a.threads), "quantize", a.base, "--format", "gguf",
                        "--mix", "Q8_0", "--tensor-type", f"*={ty}", "--imatrix", a.imatrix,
                        "--out", ours_path, "--force", "--json"])
        ours, theirs = tensors(ours_path), tensors(theirs_path)
        acc = {k: 0.0 for k in ("w_c", "w_l", "w_ref", "p_c", "p_l", "p_ref")}
        n, mismatched = 0, []
        for name, t in theirs.items():
            if not name.startswith("blk.") or len(t.shape) < 2:
                continue
            if ours[name].tensor_type != t.tensor_type:
                mismatched.append(name)
                continue
            if t.tensor_type.name != ty:
                continue
            w = values(base[name]).astype(np.float64)
            imp = importance[name][None, :]
            for who, f in (("c", ours), ("l", theirs)):
                e = (values(f[name]).astype(np.float64) - w) ** 2
                acc["w_" + who] += float((imp * e).sum())
                acc["p_" + who] += float(e.sum())
            acc["w_ref"] += float((imp * w * w).sum())
            acc["p_ref"] += float((w * w).sum())
            n += 1
        row = {"type": ty, "tensors": n, "type_mismatches": mismatched,
               "crunch_weighted_rel_mse": acc["w_c"] / acc["w_ref"], "llama_weighted_rel_mse": acc["w_l"] / acc["w_ref"],
               "crunch_rel_mse": acc["p_c"] / acc["p_ref"], "llama_rel_mse": acc["p_l"] / acc["p_ref"],
               "crunch_seconds": crunch_s, "llama_quantize_seconds": llama_s}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| type | tensors | weighted rel. MSE crunch | llama.cpp | crunch / llama.cpp | plain rel. MSE crunch | llama.cpp | crunch / llama.cpp |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cw, lw, cp, lp = (r["crunch_weighted_rel_mse"], r["llama_weighted_rel_mse"], r["crunch_rel_mse"], r["llama_rel_mse"])
        print(f"| {r['type']} | {r['tensors']} | {cw:.3e} | {lw:.3e} | {cw / lw:.3f} | {cp:.3e} | {lp:.3e} | {cp / lp:.3f} |")


if __name__ == "__main__":
    main()
