#!/usr/bin/env python3
"""Issue 14's CPU search time: the budget search with the CPU setting (decision 124) against the
default setting, from the same cached variants, at the same target. Each search is timed (wall and
CPU seconds of the crunch process) and its written model evaluated with `crunch eval --base` on
the evaluation text and the off-domain text.

First a separate command makes the variants (`--generations 0 --fill-rounds 0`: the variants and
the seeds only), once per ladder the settings use, so every timed search reads them from the cache,
as issue 14's "with cached variants" asks. The default setting's ladder (decision 150) holds
coded-scale levels, which GPTQ alone makes: with `--level-method rtn` run `--settings cpu`. Prints one JSON line per run, then a Markdown table.

Usage: bench/search_cpu.py --crunch target/release/crunch --model MODEL.gguf --calib calib.txt
       --eval eval.txt --offdomain offdomain.txt --work DIR [--threads 2] [--device cpu]
       [--target-bpw 3.594] [--level-method gptq] [--settings cpu,default]
       [--ctx 2048 --max-tokens 65536]
Calibration: the protocol's 128 windows of 512 tokens, seed 0.
"""
import argparse
import json
import os
import resource

from quantize_table import markdown, protocol_args, run_json

# The CPU setting (decision 124; its ladder and moves pinned to those measured in s27, before
# decision 150 changed the defaults): at most 20 generations of 8 offspring, one window for all and
# 4 for the best 2, fitness on each window's first 256 tokens, 4 held windows, an early stop after
# 8 generations without a better elite, no fill pass.
SETTINGS = {
    "default": [],
    "cpu": ["--levels", "2,3,3g64,3g32,4,4g64,4g32,5,6,8", "--no-prune-levels", "--jump", "1",
            "--generations", "20", "--offspring", "8", "--selection", "1x2,4x1", "--kl-windows", "4",
            "--fitness-len", "256", "--patience", "8", "--fill-rounds", "0"],
}


def timed(cmd):
    """`run_json`, with the child's CPU seconds (user + system) added as `cpu_seconds`."""
    usage = lambda: resource.getrusage(resource.RUSAGE_CHILDREN)
    before = usage()
    out = run_json(cmd)
    after = usage()
    out["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out


def main():
    ap = argparse.ArgumentParser()
    protocol_args(ap)
    for flag, default in [("--offdomain", None), ("--target-bpw", "3.594"), ("--level-method", "gptq"),
                          ("--settings", "cpu,default")]:
        ap.add_argument(flag, default=default, required=default is None)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    th = ["--threads", str(a.threads)]
    base = [a.crunch, *th, "compress", a.model, "--target-bpw", a.target_bpw, "--level-method",
            a.level_method, "--calib", a.calib, "--calib-samples", "128", "--calib-len", "512",
            "--seed", "0", "--device", a.device, "--search-cache", os.path.join(a.work, "cache"),
            "--force", "--json"]
    # One variants pass per ladder the settings use (the CPU setting pins its own; the default
    # setting takes crunch's default ladder, decision 150, whose coded-scale levels need gptq).
    ladders = []
    for name in a.settings.split(","):
        f = SETTINGS[name]
        lad = f[f.index("--levels") + 1] if "--levels" in f else None
        if lad not in ladders:
            ladders.append(lad)
    for lad in ladders:
        made = timed(base + (["--levels", lad] if lad else []) +
                     ["--out", os.path.join(a.work, "variants"), "--generations", "0",
                      "--fill-rounds", "0", "--kl-windows", "1"])
        print(json.dumps({"run": "variants", "levels": lad or "default", "wall_s": made["wall_seconds"],
                          "cpu_s": made["cpu_seconds"], "variants_made": made["search"]["variants_made"]}),
              flush=True)

    def evaluate(out, text):
        e = run_json([a.crunch, *th, "eval", out, "--base", a.model, "--device", a.device, "--data", text,
                      "--ctx", str(a.ctx), "--max-tokens", str(a.max_tokens), "--json"])
        return {"kl": e["kl"], "ppl": e["ppl"], "top1_agreement": e["top1_agreement"]}

    rows = []
    for name in a.settings.split(","):
        out = os.path.join(a.work, f"searched-{name}")
        s = timed(base + ["--out", out] + SETTINGS[name])
        r = s["search"]
        row = {"setting": name, "flags": " ".join(SETTINGS[name]), "wall_s": s["wall_seconds"],
               "cpu_s": s["cpu_seconds"], **{k: r[k] for k in
               ["search_seconds", "variants_cached", "variants_made", "generations", "evaluations",
                "calibration_kl", "calibration_kl_windows", "linear_bpw", "timing"]},
               "eval": evaluate(out, a.eval), "offdomain": evaluate(out, a.offdomain)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    markdown(["setting", "linear bpw", "generations", "evaluations", "wall s", "CPU s", "KL eval",
              "KL off-domain"],
             [[r["setting"], f"{r['linear_bpw']:.3f}", str(r["generations"]), str(r["evaluations"]), f"{r['wall_s']:.0f}",
               f"{r['cpu_s']:.0f}", f"{r['eval']['kl']:.4f}", f"{r['offdomain']['kl']:.4f}"] for r in rows])


if __name__ == "__main__":
    main()
