#!/usr/bin/env python3
"""The quantization table of issue 4, by the benchmark protocol: RTN and GPTQ at 4-bit g128
(asymmetric and symmetric), 3-bit g128, 3-bit g64 and 2-bit g64 (asymmetric), each quantized from
SmolLM2-135M-Instruct (calibration: 128 windows of 512 tokens from the last 40% of wiki.test.raw,
seed 0) and evaluated on the first 60% (--ctx 2048 --max-tokens 65536) against the unquantized
model. Prints one JSON line per run, then a Markdown table.

Usage: bench/quantize_table.py --crunch target/release/crunch --model MODEL.gguf --calib calib.txt
       --eval eval.txt --work DIR [--threads N] [--device cuda] [--configs 4:128:asym,...]
"""
import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = ["4:128:asym", "4:128:sym", "3:128:asym", "3:64:asym", "2:64:asym"]


def run_json(cmd):
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = time.time() - t
    return out


def markdown(columns, rows):
    """Prints a Markdown table: the column titles, then one list of cells per row."""
    print("\n| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


def protocol_args(ap):
    """The flags of the tables run by the benchmark protocol: the crunch binary, the model, the
    calibration and evaluation texts (bench/protocol.py), a work folder, where it runs, and the
    evaluation windows."""
    ap.add_argument("--crunch", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (a crunch built with --features cuda)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--max-tokens", type=int, default=65536)
    ap.add_argument("--ctx", type=int, default=2048)


def measure(crunch, threads, command, out, model, eval_flags, base_ppl):
    """Runs `crunch COMMAND... --out OUT --force --json`, evaluates OUT against MODEL, and returns
    what the tables report of the pair."""
    c = run_json([crunch, *threads, *command, "--out", out, "--force", "--json"])
    e = run_json([crunch, *threads, "eval", out, "--base", model, *eval_flags])
    return {"ppl": e["ppl"], "nll": e["nll"], "ppl_increase": e["ppl"] - base_ppl, "kl": e["kl"],
            "top1_agreement": e["top1_agreement"], "bits_per_weight": c["bits_per_weight"],
            "sparsity": c.get("sparsity"), "params_kept": c.get("params_kept"),
            "size_on_disk": c["size_on_disk"], "seconds": c.get("compress_seconds", c.get("quantize_seconds")),
            "eval_tokens_scored": e["tokens_scored"]}


def main():
    ap = argparse.ArgumentParser()
    protocol_args(ap)
    ap.add_argument("--methods", default="rtn,gptq")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--base-ppl", type=float, help="skip the base evaluation and use this perplexity "
                    "(from an earlier run of the same protocol)")
    a = ap.parse_args()
    th = ["--threads", str(a.threads)]
    ev = ["--device", a.device, "--data", a.eval, "--ctx", str(a.ctx), "--max-tokens", str(a.max_tokens), "--json"]
    base = ({"ppl": a.base_ppl, "reused": True} if a.base_ppl
            else run_json([a.crunch, *th, "eval", a.model, *ev]))
    base["run"] = "base"
    print(json.dumps(base), flush=True)
    rows = []
    for cfg in a.configs.split(","):
        bits, group, sym = cfg.split(":")
        for method in a.methods.split(","):
            out = os.path.join(a.work, f"{method}-{bits}b-g{group}-{sym}")
            cmd = ["quantize", a.model, "--method", method, "--bits", bits, "--group-size", group, f"--{sym}",
                   "--calib", a.calib, "--calib-samples", "128", "--calib-len", "512", "--seed", "0",
                   "--device", a.device]
            m = measure(a.crunch, th, cmd, out, a.model, ev, base["ppl"])
            row = {"run": f"{method} {bits}-bit g{group} {sym}", "method": method, "bits": int(bits),
                   "group_size": int(group), "symmetric": sym == "sym", "quantize_seconds": m.pop("seconds"), **m}
            rows.append(row)
            print(json.dumps(row), flush=True)
    base_row = ["base (Q4_1 GGUF, dequantized)", *["—"] * 5, f"{base['ppl']:.3f}", "0", "0", "100%", "—"]
    markdown(["method", "bits", "group", "grid", "bits/weight", "size on disk (MB)", "PPL", "ΔPPL", "KL",
              "top-1 agree", "quantize s"],
             [base_row] + [[r["method"], str(r["bits"]), str(r["group_size"]), "sym" if r["symmetric"] else "asym",
                            f"{r['bits_per_weight']:.3f}", f"{r['size_on_disk'] / 1e6:.1f}", f"{r['ppl']:.3f}",
                            f"{r['ppl_increase']:+.3f}", f"{r['kl']:.4f}", f"{100 * r['top1_agreement']:.2f}%",
                            f"{r['quantize_seconds']:.1f}"] for r in rows])


if __name__ == "__main__":
    main()
