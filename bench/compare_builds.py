#!/usr/bin/env python3
"""Two crunch binaries side by side on the same runs: do they compute the same model? For each run
(by default RTN 4-bit g128, the quantization table's GPTQ 4-bit and 3-bit g128 rows and SparseGPT
50%), both binaries compress SmolLM2 with the same flags, then every tensor of the two
model.safetensors is compared byte for byte (by name, so a change of file layout shows as such), and each output is
evaluated by its own binary (`crunch eval --json`) and the perplexities compared to 4 decimals.
Issue 12's check that the one-pipeline refactor changed no numbers.

Prints one JSON line per run, then a Markdown table; exits non-zero if any tensor or PPL differs.

Usage: bench/compare_builds.py --old OLD_CRUNCH --new NEW_CRUNCH --model MODEL.gguf
       --calib calib.txt --eval eval.txt --work DIR [--calib-samples N] [--max-tokens N]
       [--threads N] [--device cpu|cuda] [--only NAME,...]
"""
import argparse
import hashlib
import json
import os
import struct
import sys

from quantize_table import run_json

RUNS = {
    "rtn 4-bit g128": ["quantize", "--method", "rtn", "--bits", "4", "--group-size", "128"],
    "gptq 4-bit g128": ["quantize", "--method", "gptq", "--bits", "4", "--group-size", "128"],
    "gptq 3-bit g128": ["quantize", "--method", "gptq", "--bits", "3", "--group-size", "128"],
    "sparsegpt 50%": ["prune", "--method", "sparsegpt", "--sparsity", "0.5"],
}


def tensors(path):
    """name -> (dtype, shape, sha256 of the bytes) for every tensor of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            f.seek(base + start)
            out[name] = (info["dtype"], info["shape"], hashlib.sha256(f.read(end - start)).hexdigest())
        return out


def file_sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    for k in ["old", "new", "model", "calib", "eval", "work"]:
        ap.add_argument("--" + k, required=True)
    ap.add_argument("--calib-samples", type=int, default=128)
    ap.add_argument("--calib-len", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=65536)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=",".join(RUNS))
    a = ap.parse_args()
    th = ["--threads", str(a.threads)]
    calib = ["--calib", a.calib, "--calib-samples", str(a.calib_samples), "--calib-len", str(a.calib_len),
             "--seed", "0", "--device", a.device]
    ev = ["--data", a.eval, "--ctx", str(a.ctx), "--max-tokens", str(a.max_tokens), "--device", a.device, "--json"]
    rows, failed = [], False
    for name in a.only.split(","):
        args = RUNS[name]
        row = {"run": name, "calib_samples": a.calib_samples, "max_tokens": a.max_tokens}
        outs = {}
        for which in ["old", "new"]:
            crunch = getattr(a, which)
            out = os.path.join(a.work, f"{name.replace(' ', '-').replace('%', 'pct')}-{which}")
            c = run_json([crunch, *th, args[0], a.model, "--out", out, "--force", *args[1:], *calib, "--json"])
            e = run_json([crunch, *th, "eval", out, *ev])
            outs[which] = out
            row[f"{which}_seconds"] = c["wall_seconds"]
            row[f"{which}_ppl"] = e["ppl"]
            row[f"{which}_bits_per_weight"] = c["bits_per_weight"]
        old, new = (tensors(os.path.join(outs[w], "model.safetensors")) for w in ["old", "new"])
        row["tensors"] = len(new)
        row["same_tensor_names"] = sorted(old) == sorted(new)
        row["tensors_differing"] = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
        shas = [file_sha(os.path.join(outs[w], "model.safetensors")) for w in ["old", "new"]]
        row["model_safetensors_identical"] = shas[0] == shas[1]
        row["ppl_equal_4dp"] = round(row["old_ppl"], 4) == round(row["new_ppl"], 4)
        ok = row["same_tensor_names"] and not row["tensors_differing"] and row["ppl_equal_4dp"]
        failed |= not ok
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| run | tensors | identical | model.safetensors identical | PPL old | PPL new | bits/weight | s old | s new |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        same = "all" if r["same_tensor_names"] and not r["tensors_differing"] else f"{len(r['tensors_differing'])} differ"
        print(f"| {r['run']} | {r['tensors']} | {same} | {r['model_safetensors_identical']} | {r['old_ppl']:.4f} | "
              f"{r['new_ppl']:.4f} | {r['new_bits_per_weight']:.3f} | {r['old_seconds']:.0f} | {r['new_seconds']:.0f} |")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
