#!/usr/bin/env python3
"""Issue 14: the budget search (EvoPress) against uniform GPTQ at the same bits per weight, on
SmolLM2 by the benchmark protocol. For each uniform configuration (GPTQ 3-bit g128 = 3.16 linear
bpw, the nearest to 3.0; GPTQ 3-bit g32 = 3.59, the nearest to 3.5), `crunch compress
--target-bpw` with the uniform's exact bits per weight searches the levels (GPTQ) per
layer; both are evaluated with `crunch eval --base` on the evaluation text and the off-domain text.
Prints one JSON line per run, then a Markdown table with the KL ratio searched / uniform.

With `--lut-uniform 3` (decision 143) it also makes and evaluates the uniform lookup-table
models named (BITS, or BITS:GROUP for one codebook per GROUP columns; `crunch quantize --method
lut`), each compared with both uniform GPTQ models, so a reader sees how much of a search's gain
over uniform GPTQ is the codec (uniform LUT) and how much the search (`--levels` with LUT
levels, e.g. `2lut,2,3,3lut,3g64,3g32,4,4g64,4lut,4g32,5,6,8`).

Usage: bench/search_table.py --crunch target/release/crunch --model MODEL.gguf --calib calib.txt
       --eval eval.txt --offdomain offdomain.txt --work DIR [--device cuda] [--threads N]
       [--generations 50 --offspring 16 --selection 2x4,8x1] [--plot docs/search_rd.svg]
       [--levels LADDER] [--lut-uniform 3,4] [--uniform 3:128,3:32]
       [--kscale-uniform 3:16:6,3:32:6]

`--kscale-uniform` (decision 145) adds uniform GPTQ models with coded group scales
(`crunch quantize --scale-bits`), printed and compared with the uniform GPTQ rows as the LUT ones.
"""
import argparse
import json
import math
import os

from quantize_table import markdown, protocol_args, run_json

# The uniform configurations compared against by default (BITS:GROUP; group 0 = one scale per
# output channel, GPTQ's own default, 3.01–3.03 bpw at 3 bits on SmolLM2).
UNIFORM = "3:128,3:32"


def uniform_configs(spec):
    """`3:128,3:0` → [(name, bits, group)]."""
    out = []
    for part in filter(None, spec.split(",")):
        bits, _, group = part.partition(":")
        group = int(group or 0)
        per = "per channel" if group == 0 else f"g{group}"
        out.append((f"gptq {bits}-bit {per}", int(bits), group))
    return out


def main():
    ap = argparse.ArgumentParser()
    protocol_args(ap)
    ap.add_argument("--offdomain", required=True)
    ap.add_argument("--generations", default="50")
    ap.add_argument("--offspring", default="16")
    ap.add_argument("--selection", default="2x4,8x1")
    ap.add_argument("--levels", default="2,3,3g64,3g32,4,4g64,4g32,5,6,8")
    ap.add_argument("--plot", help="rate-distortion figure of the first search (.svg/.png)")
    ap.add_argument("--uniform", default=UNIFORM,
                    help="uniform GPTQ baselines, BITS:GROUP comma-separated (group 0: per channel); "
                         "the search runs at each one's exact bits per weight")
    ap.add_argument("--prune-levels", action="store_true",
                    help="pass --prune-levels to the search (decision 148; crunch's default since decision 150)")
    ap.add_argument("--no-prune-levels", action="store_true",
                    help="pass --no-prune-levels: the ladder as given, as searched before decision 150")
    ap.add_argument("--jump",
                    help="pass --jump to the search: the most ranks a mutation raises a layer by "
                         "(decision 149; crunch's default: 3, decision 150)")
    ap.add_argument("--skip-search", action="store_true",
                    help="only the --lut-uniform models (a second command, to stay under 8 minutes)")
    ap.add_argument("--lut-uniform", default="",
                    help="uniform lookup-table models to add: BITS or BITS:GROUP, comma-separated")
    ap.add_argument("--kscale-uniform", default="",
                    help="uniform GPTQ models with coded group scales (decision 145) to add: "
                         "BITS:GROUP:SCALEBITS, comma-separated (e.g. 3:16:6,3:32:6)")
    a = ap.parse_args()
    th = ["--threads", str(a.threads)]
    calib = ["--calib", a.calib, "--calib-samples", "128", "--calib-len", "512", "--seed", "0",
             "--device", a.device]

    def evaluate(out, text):
        e = run_json([a.crunch, *th, "eval", out, "--base", a.model, "--device", a.device, "--data", text,
                      "--ctx", str(a.ctx), "--max-tokens", str(a.max_tokens), "--json"])
        return {"kl": e["kl"], "ppl": e["ppl"], "top1_agreement": e["top1_agreement"]}

    rows = []
    for i, (name, bits, group) in enumerate([] if a.skip_search else uniform_configs(a.uniform)):
        out_u = os.path.join(a.work, f"uniform-{bits}b-g{group}")
        u = run_json([a.crunch, *th, "quantize", a.model, "--method", "gptq", "--bits", str(bits),
                      "--group-size", str(group), *calib, "--out", out_u, "--force", "--json"])
        bpw = u["bits_per_weight"]
        out_s = os.path.join(a.work, f"searched-{bpw:.3f}")
        # Rounded *up* to the printed precision: rounded to nearest, 3.1608073 became 3.160807,
        # a budget 0.0000003 bpw below the uniform model's own, which then was no seed.
        target = f"{math.ceil(bpw * 1e6) / 1e6:.6f}"
        cmd = [a.crunch, *th, "compress", a.model, "--target-bpw", target, "--levels", a.levels,
               "--generations", a.generations, "--offspring", a.offspring, "--selection", a.selection,
               *calib, "--out", out_s, "--force", "--json"]
        if a.plot and i == 0:
            cmd += ["--plot", a.plot]
        if a.prune_levels:
            cmd += ["--prune-levels"]
        if a.no_prune_levels:
            cmd += ["--no-prune-levels"]
        if a.jump:
            cmd += ["--jump", a.jump]
        s = run_json(cmd)
        for run, out, c in [(name, out_u, u), (f"searched @ {bpw:.3f}", out_s, s)]:
            row = {"run": run, "bits_per_weight": c["bits_per_weight"], "size_on_disk": c["size_on_disk"],
                   "seconds": c["wall_seconds"], "eval": evaluate(out, a.eval),
                   "offdomain": evaluate(out, a.offdomain)}
            if "search" in c:
                row["search"] = {k: c["search"][k] for k in
                                 ["calibration_kl", "levels", "generations", "evaluations", "search_seconds",
                                  "variants_made", "variants_cached", "pruned_levels", "jump"] if k in c["search"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    lut_rows = []
    for spec in filter(None, a.lut_uniform.split(",")):
        bits, _, group = spec.partition(":")
        group = group or "0"
        out = os.path.join(a.work, f"uniform-lut-{bits}b-g{group}")
        c = run_json([a.crunch, *th, "quantize", a.model, "--method", "lut", "--bits", bits,
                      "--group-size", group, *calib, "--out", out, "--force", "--json"])
        per = "per row" if group == "0" else f"g{group}"
        row = {"run": f"uniform LUT {bits}-bit {per}", "bits_per_weight": c["bits_per_weight"],
               "size_on_disk": c["size_on_disk"], "seconds": c["wall_seconds"],
               "eval": evaluate(out, a.eval), "offdomain": evaluate(out, a.offdomain)}
        lut_rows.append(row)
        print(json.dumps(row), flush=True)
    for spec in filter(None, a.kscale_uniform.split(",")):
        bits, group, k = spec.split(":")
        out = os.path.join(a.work, f"uniform-{bits}b-g{group}s{k}")
        c = run_json([a.crunch, *th, "quantize", a.model, "--method", "gptq", "--bits", bits,
                      "--group-size", group, "--scale-bits", k, *calib, "--out", out, "--force", "--json"])
        row = {"run": f"gptq {bits}-bit g{group} s{k}", "bits_per_weight": c["bits_per_weight"],
               "size_on_disk": c["size_on_disk"], "seconds": c["wall_seconds"],
               "eval": evaluate(out, a.eval), "offdomain": evaluate(out, a.offdomain)}
        lut_rows.append(row)
        print(json.dumps(row), flush=True)
    rows_all = rows + lut_rows
    markdown(["run", "bits/weight", "size (MB)", "KL eval", "KL off-domain", "PPL eval", "s"],
             [[r["run"], f"{r['bits_per_weight']:.3f}", f"{r['size_on_disk'] / 1e6:.1f}", f"{r['eval']['kl']:.4f}",
               f"{r['offdomain']['kl']:.4f}", f"{r['eval']['ppl']:.3f}", f"{r['seconds']:.0f}"] for r in rows_all])
    for i in range(0, len(rows), 2):
        u, s = rows[i], rows[i + 1]
        print(f"\n{s['run']} vs {u['run']}: KL eval {s['eval']['kl'] / u['eval']['kl']:.3f}×, "
              f"off-domain {s['offdomain']['kl'] / u['offdomain']['kl']:.3f}× (target ≤ 0.75×)")
    # The codec alone: each uniform LUT model against each uniform GPTQ one (their bits differ:
    # both are printed).
    for l in lut_rows:
        for u in rows[0::2]:
            print(f"{l['run']} ({l['bits_per_weight']:.3f} bpw) vs {u['run']} ({u['bits_per_weight']:.3f} "
                  f"bpw): KL eval {l['eval']['kl'] / u['eval']['kl']:.3f}×, off-domain "
                  f"{l['offdomain']['kl'] / u['offdomain']['kl']:.3f}×")


if __name__ == "__main__":
    main()
