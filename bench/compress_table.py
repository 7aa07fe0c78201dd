#!/usr/bin/env python3
"""Issue 5's table, by the benchmark protocol: pruning (magnitude, Wanda, SparseGPT at 50%
unstructured and 2:4), low rank (plain vs whitened SVD at --keep 0.8), and EoRA rank 32 on top of
GPTQ 3-bit g128, each made from SmolLM2-135M-Instruct (calibration: 128 windows of 512 tokens of
the last 40% of wiki.test.raw, seed 0) and evaluated on the first 60% (--ctx 2048
--max-tokens 65536) against the uncompressed model. One JSON line per run, then a Markdown table.

Usage: bench/compress_table.py --crunch target/release/crunch --model MODEL.gguf --calib calib.txt
       --eval eval.txt --work DIR [--threads N] [--device cuda] [--only NAME,...]
"""
import argparse
import json
import os

from quantize_table import markdown, measure, run_json

RUNS = {
    "magnitude 50%": ["prune", "--method", "magnitude", "--sparsity", "0.5"],
    "wanda 50%": ["prune", "--method", "wanda", "--sparsity", "0.5"],
    "sparsegpt 50%": ["prune", "--method", "sparsegpt", "--sparsity", "0.5"],
    "wanda 2:4": ["prune", "--method", "wanda", "--pattern", "2:4"],
    "sparsegpt 2:4": ["prune", "--method", "sparsegpt", "--pattern", "2:4"],
    "sparsegpt 2:4 + 4-bit g128": ["prune", "--method", "sparsegpt", "--pattern", "2:4", "--bits", "4"],
    "svd keep 0.8": ["lowrank", "--method", "svd", "--keep", "0.8"],
    "whitened-svd keep 0.8": ["lowrank", "--method", "whitened-svd", "--keep", "0.8"],
    "gptq 3-bit g128": ["recipe", "[[stage]]\nmethod = \"gptq\"\nbits = 3\ngroup_size = 128\n"],
    "gptq 3-bit g128 + eora 32": ["recipe", "[[stage]]\nmethod = \"gptq\"\nbits = 3\ngroup_size = 128\n"
                                  "[[stage]]\nmethod = \"eora\"\nrank = 32\n"],
}


def main():
    ap = argparse.ArgumentParser()
    for k in ["crunch", "model", "calib", "eval", "work"]:
        ap.add_argument("--" + k, required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=",".join(RUNS))
    ap.add_argument("--base-ppl", type=float, help="skip the base evaluation and use this perplexity "
                    "(from an earlier run of the same protocol)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    th = ["--threads", str(a.threads)]
    ev = ["--device", a.device, "--data", a.eval, "--ctx", "2048", "--max-tokens", "65536", "--json"]
    base = ({"ppl": a.base_ppl, "reused": True} if a.base_ppl
            else run_json([a.crunch, *th, "eval", a.model, *ev]))
    base["run"] = "base"
    print(json.dumps(base), flush=True)
    calib = ["--calib", a.calib, "--calib-samples", "128", "--calib-len", "512", "--seed", "0"]
    rows = []
    for name in a.only.split(","):
        spec = RUNS[name]
        out = os.path.join(a.work, name.replace(" ", "_").replace(":", "-").replace("%", "pct").replace("+", "plus"))
        if spec[0] == "recipe":
            path = out + ".toml"
            with open(path, "w") as f:
                f.write(spec[1])
            cmd = ["compress", a.model, "--recipe", path]
        else:
            cmd = [spec[0], a.model, *spec[1:]]
        m = measure(a.crunch, th, [*cmd, *calib, "--device", a.device], out, a.model, ev, base["ppl"])
        row = {"run": name, "compress_seconds": m.pop("seconds"), **m}
        rows.append(row)
        print(json.dumps(row), flush=True)
    base_row = ["base", *["—"] * 4, f"{base['ppl']:.3f}", "0", "0", "100%", "—"]
    markdown(["run", "bits/weight", "zeros", "params kept", "size (MB)", "PPL", "ΔPPL", "KL", "top-1 agree",
              "seconds"],
             [base_row] + [[r["run"], f"{r['bits_per_weight']:.3f}", f"{100 * r['sparsity']:.1f}%",
                            f"{100 * r['params_kept']:.1f}%", f"{r['size_on_disk'] / 1e6:.1f}", f"{r['ppl']:.3f}",
                            f"{r['ppl_increase']:+.3f}", f"{r['kl']:.4f}", f"{100 * r['top1_agreement']:.2f}%",
                            f"{r['compress_seconds']:.1f}"] for r in rows])


if __name__ == "__main__":
    main()
