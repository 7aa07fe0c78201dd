#!/usr/bin/env python3
"""Issue 19: calibration options measured on both evaluation texts, so that crunch's defaults are
chosen by what holds away from the calibration domain. Each run quantizes SmolLM2 once (calibrated
on WikiText by the protocol unless the option changes the calibration data) and evaluates the one
output against the base on WikiText (eval.txt) and on the off-domain text (offdomain.txt, from
bench/offdomain.py), --ctx 2048 --max-tokens 65536. One JSON line per run, then a Markdown table.

Usage: bench/calib_options.py --crunch CRUNCH --model MODEL.gguf --texts DIR --work DIR
       [--device cuda] [--threads N] [--only NAME,...]
DIR holds calib.txt, eval.txt and offdomain.txt (bench/protocol.py, bench/offdomain.py).
"""
import argparse
import json
import os

from quantize_table import markdown, run_json

PROTOCOL = ["--calib-samples", "128", "--calib-len", "512"]
# name -> (flags after `quantize MODEL`, calibration flags; None = the protocol's WikiText split)
RUNS = {
    "rtn 4-bit g128 (no calibration)": (["--method", "rtn", "--bits", "4", "--group-size", "128"], []),
    "gptq 4-bit g128 (defaults: damp 0.01)": (["--method", "gptq", "--bits", "4", "--group-size", "128"], None),
    "gptq 4-bit g128 damp 0.1": (["--method", "gptq", "--bits", "4", "--group-size", "128", "--damp", "0.1"], None),
    "gptq 4-bit g128 damp 1.0": (["--method", "gptq", "--bits", "4", "--group-size", "128", "--damp", "1.0"], None),
    "gptq 4-bit g128 act-order": (["--method", "gptq", "--bits", "4", "--group-size", "128", "--act-order"], None),
    "gptq 4-bit g128 mse": (["--method", "gptq", "--bits", "4", "--group-size", "128", "--mse"], None),
    "gptq 4-bit g128 act-order mse": (["--method", "gptq", "--bits", "4", "--group-size", "128", "--act-order",
                                       "--mse"], None),
    "gptq 4-bit g128 512 windows": (["--method", "gptq", "--bits", "4", "--group-size", "128"],
                                    ["--calib-samples", "512", "--calib-len", "512"]),
    "gptq 4-bit g128 32 x 2048 windows": (["--method", "gptq", "--bits", "4", "--group-size", "128"],
                                          ["--calib-samples", "32", "--calib-len", "2048"]),
    "gptq 4-bit g128 self:128x512": (["--method", "gptq", "--bits", "4", "--group-size", "128"], "self"),
    "rtn 3-bit g128 (no calibration)": (["--method", "rtn", "--bits", "3", "--group-size", "128"], []),
    "gptq 3-bit g128 (defaults)": (["--method", "gptq", "--bits", "3", "--group-size", "128"], None),
    "gptq 3-bit g128 damp 1.0": (["--method", "gptq", "--bits", "3", "--group-size", "128", "--damp", "1.0"], None),
    "gptq 3-bit g128 act-order mse": (["--method", "gptq", "--bits", "3", "--group-size", "128", "--act-order",
                                       "--mse"], None),
}


def main():
    ap = argparse.ArgumentParser()
    for k in ["crunch", "model", "texts", "work"]:
        ap.add_argument("--" + k, required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=",".join(RUNS))
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    th = ["--threads", str(a.threads)]
    texts = {"wiki": os.path.join(a.texts, "eval.txt"), "off": os.path.join(a.texts, "offdomain.txt")}
    ev = ["--device", a.device, "--ctx", "2048", "--max-tokens", "65536", "--json"]
    base = {t: run_json([a.crunch, *th, "eval", a.model, "--data", p, *ev])["ppl"] for t, p in texts.items()}
    print(json.dumps({"run": "base", **{f"ppl_{t}": v for t, v in base.items()}}), flush=True)
    rows = []
    for name in a.only.split(","):
        flags, calib = RUNS[name]
        if calib is None:
            calib = ["--calib", os.path.join(a.texts, "calib.txt"), *PROTOCOL]
        elif calib == "self":
            calib = ["--calib", "self:128x512"]
        elif calib:
            calib = ["--calib", os.path.join(a.texts, "calib.txt"), *calib]
        out = os.path.join(a.work, name.replace(" ", "_").replace(":", "-").replace("(", "").replace(")", ""))
        c = run_json([a.crunch, *th, "quantize", a.model, *flags, *calib, "--seed", "0", "--device", a.device,
                      "--out", out, "--force", "--json"])
        row = {"run": name, "bits_per_weight": c["bits_per_weight"], "seconds": c.get("compress_seconds", c.get("quantize_seconds"))}
        for t, p in texts.items():
            e = run_json([a.crunch, *th, "eval", out, "--base", a.model, "--data", p, *ev])
            row.update({f"ppl_{t}": e["ppl"], f"kl_{t}": e["kl"], f"top1_{t}": e["top1_agreement"]})
        rows.append(row)
        print(json.dumps(row), flush=True)
    markdown(["run", "bits/weight", "PPL wiki", "KL wiki", "top-1 wiki", "PPL off-domain", "KL off-domain",
              "top-1 off-domain", "seconds"],
             [["base", "—", f"{base['wiki']:.4f}", "0", "100%", f"{base['off']:.4f}", "0", "100%", "—"]] +
             [[r["run"], f"{r['bits_per_weight']:.3f}", f"{r['ppl_wiki']:.4f}", f"{r['kl_wiki']:.4f}",
               f"{100 * r['top1_wiki']:.2f}%", f"{r['ppl_off']:.4f}", f"{r['kl_off']:.4f}",
               f"{100 * r['top1_off']:.2f}%", f"{r['seconds']:.1f}"] for r in rows])


if __name__ == "__main__":
    main()
