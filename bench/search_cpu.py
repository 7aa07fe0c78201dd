#!/usr/bin/env python3
"""Issue 14's CPU search time: the budget search with the CPU setting (decision 124) against the
default setting, from the same cached variants, at the same target. Each search is timed (wall and
CPU seconds of the crunch process) and its written model evaluated with `crunch eval --base` on
the evaluation text and the off-domain text.

First a separate command makes the variants (`--generations 0 --fill-rounds 0`: the variants and
the seeds only), so every timed search reads them from the cache, as issue 14's "with cached
variants" asks. Prints one JSON line per run, then a Markdown table.

Usage: bench/search_cpu.py --crunch target/release/crunch --model MODEL.gguf --calib calib.txt
       --eval eval.txt --offdomain offdomain.txt --work DIR [--threads 2] [--device cpu]
       [--target-bpw 3.594] [--level-method gptq] [--settings cpu,default]
       [--calib-samples 128 --calib-len 512] [--ctx 2048 --max-tokens 65536]
"""
import argparse
import json
import os
import resource
import subprocess
import time

# The CPU setting (decision 124): at most 20 generations of 8 offspring, one window for all and
# 4 for the best 2, fitness on each window's first 256 tokens, 4 held windows, an early stop after
# 8 generations without a better elite, no fill pass.
SETTINGS = {
    "default": [],
    "cpu": ["--generations", "20", "--offspring", "8", "--selection", "1x2,4x1", "--kl-windows", "4",
            "--fitness-len", "256", "--patience", "8", "--fill-rounds", "0"],
}


def run_timed(cmd):
    """(parsed --json output, wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(p.stdout), wall, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crunch", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--offdomain", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--target-bpw", default="3.594")
    ap.add_argument("--level-method", default="gptq")
    ap.add_argument("--settings", default="cpu,default")
    ap.add_argument("--calib-samples", default="128")
    ap.add_argument("--calib-len", default="512")
    ap.add_argument("--ctx", default="2048")
    ap.add_argument("--max-tokens", default="65536")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    cache = os.path.join(a.work, "cache")
    base = [a.crunch, "--threads", a.threads, "compress", a.model, "--target-bpw", a.target_bpw,
            "--level-method", a.level_method, "--calib", a.calib, "--calib-samples", a.calib_samples,
            "--calib-len", a.calib_len, "--seed", "0", "--device", a.device, "--search-cache", cache,
            "--force", "--json"]
    made, wall, cpu = run_timed(base + ["--out", os.path.join(a.work, "variants"),
                                        "--generations", "0", "--fill-rounds", "0", "--kl-windows", "1"])
    print(json.dumps({"run": "variants", "wall_s": wall, "cpu_s": cpu,
                      "variants_made": made["search"]["variants_made"]}), flush=True)

    def evaluate(out, text):
        e, _, _ = run_timed([a.crunch, "--threads", a.threads, "eval", out, "--base", a.model,
                             "--device", a.device, "--data", text, "--ctx", a.ctx,
                             "--max-tokens", a.max_tokens, "--json"])
        return {"kl": e["kl"], "ppl": e["ppl"], "top1_agreement": e["top1_agreement"]}

    rows = []
    for name in a.settings.split(","):
        out = os.path.join(a.work, f"searched-{name}")
        s, wall, cpu = run_timed(base + ["--out", out] + SETTINGS[name])
        r = s["search"]
        row = {"setting": name, "flags": " ".join(SETTINGS[name]), "wall_s": wall, "cpu_s": cpu,
               "search_seconds": r["search_seconds"], "variants_cached": r["variants_cached"],
               "variants_made": r["variants_made"], "generations": r["generations"],
               "evaluations": r["evaluations"], "calibration_kl": r["calibration_kl"],
               "calibration_kl_windows": r["calibration_kl_windows"],
               "linear_bpw": r["linear_bpw"], "timing": r["timing"],
               "eval": evaluate(out, a.eval), "offdomain": evaluate(out, a.offdomain)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| setting | linear bpw | generations | evaluations | search wall s | CPU s | KL eval | KL off-domain |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['linear_bpw']:.3f} | {r['generations']} | {r['evaluations']} | "
              f"{r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['eval']['kl']:.4f} | {r['offdomain']['kl']:.4f} |")


if __name__ == "__main__":
    main()
