#!/usr/bin/env python3
"""`crunch generate` against llama.cpp's `llama-bench`, side by side in one run.

For each encoding of SmolLM2-135M-Instruct (Q4_0, Q8_0 and Q4_K_M, made from the cached Q4_1
GGUF with `llama-quantize --allow-requantize`; Q4_1 itself; and crunch's own formats given with
--crunch-model), both programs measure, with the same thread count:

- prefill (pp512): 512 prompt tokens in one go — llama-bench `-p 512`; crunch generate with a
  512-token prompt and one generated token (`prefill_tokens_per_second`);
- decode (tg128): 128 tokens one at a time from an empty context — llama-bench `-n 128`;
  crunch generate with a 1-token prompt, 129 new tokens, `--ignore-eos`
  (`decode_tokens_per_second` over the 128 decode steps).

llama-bench repeats each test --reps times and reports the mean; crunch is run --reps times and
the mean is reported the same way. The two programs alternate per model, so that load from other
processes on a shared machine falls on both. Peak RSS of the decode run is compared with the
budget of issue 15: packed weight bytes × 1.15 + KV cache + 150 MB.

Prints one JSON line per measurement, then a Markdown table with ratios (crunch / llama.cpp).

Usage: bench/generate_vs_llama.py [--crunch target/release/crunch] [--threads 2] [--reps 3]
       [--llama-bin ~/.cache/llamacpp/build/bin] [--work .cache/bench-generate]
       [--types Q4_0,Q8_0,Q4_K_M,Q4_1] [--crunch-model NAME=PATH ...]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-4000:])
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return p.stdout


def smollm2():
    return run([os.path.join(REPO, "scripts", "fetch-smollm2")]).strip()


def requantize(bin_dir, src, work, qtype):
    """The SmolLM2 GGUF in `qtype`, made once with llama-quantize."""
    out = os.path.join(work, f"SmolLM2-135M-Instruct.{qtype}.gguf")
    if qtype == "Q4_1":
        return src
    if not os.path.exists(out):
        tmp = out + ".tmp"
        run([os.path.join(bin_dir, "llama-quantize"), "--allow-requantize", src, tmp, qtype])
        os.replace(tmp, out)
    return out


def llama_bench(bin_dir, model, threads, reps):
    out = run([os.path.join(bin_dir, "llama-bench"), "-m", model, "-t", str(threads),
               "-p", "512", "-n", "128", "-r", str(reps), "-o", "jsonl"])
    res = {}
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        test = "pp512" if r["n_prompt"] == 512 and r["n_gen"] == 0 else "tg128"
        res[test] = {"mean": r["avg_ts"], "stdev": r["stddev_ts"],
                     "build": r.get("build_commit"), "backend": r.get("backends")}
    return res


def crunch_generate(crunch, model, threads, prompt, max_tokens):
    cmd = [crunch, "generate", model, "--prompt", prompt, "--max-tokens", str(max_tokens),
           "--temperature", "0", "--ignore-eos", "--threads", str(threads), "--json"]
    return json.loads(run(cmd).strip().splitlines()[-1])


def prompt_of(crunch, model, threads, tokens):
    """A prompt of exactly `tokens` tokens (" the" is one token in SmolLM2's vocabulary;
    the count is checked against crunch's own tokenizer and adjusted)."""
    words = tokens
    for _ in range(4):
        text = "The" + " the" * (words - 1)
        got = crunch_generate(crunch, model, threads, text, 1)["prompt_tokens"]
        if got == tokens:
            return text
        words += tokens - got
    raise SystemExit(f"could not make a {tokens}-token prompt")


def crunch_bench(crunch, model, threads, reps, long_prompt):
    pp, tg, rss = [], [], []
    rec = None
    for _ in range(reps):
        r = crunch_generate(crunch, model, threads, long_prompt, 1)
        assert r["prompt_tokens"] == 512, r["prompt_tokens"]
        pp.append(r["prefill_tokens_per_second"])
        rec = crunch_generate(crunch, model, threads, "The", 129)
        assert rec["decode_steps"] == 128, rec["decode_steps"]
        tg.append(rec["decode_tokens_per_second"])
        rss.append(rec["peak_rss_bytes"])
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
    return {
        "pp512": {"mean": statistics.mean(pp), "stdev": sd(pp)},
        "tg128": {"mean": statistics.mean(tg), "stdev": sd(tg)},
        "peak_rss_bytes": max(rss),
        "weight_bytes": rec["weight_bytes"],
        "kv_cache_bytes": rec["kv_cache_bytes"],
        "kernels": rec["kernels"],
        "threads": rec["threads"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crunch", default=os.path.join(REPO, "target", "release", "crunch"))
    ap.add_argument("--llama-bin", default=os.path.expanduser("~/.cache/llamacpp/build/bin"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(REPO, ".cache", "bench-generate"))
    ap.add_argument("--types", default="Q4_0,Q8_0,Q4_K_M,Q4_1")
    ap.add_argument("--crunch-model", action="append", default=[], metavar="NAME=PATH",
                    help="also measure a crunch-format model (crunch only; compared with Q4_0)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    src = smollm2()
    t0 = time.time()
    rows = []
    long_prompt = None
    results = {}
    for qtype in [t for t in a.types.split(",") if t]:
        model = requantize(a.llama_bin, src, a.work, qtype)
        if long_prompt is None:
            long_prompt = prompt_of(a.crunch, model, a.threads, 512)
        ll = llama_bench(a.llama_bin, model, a.threads, a.reps)
        cr = crunch_bench(a.crunch, model, a.threads, a.reps, long_prompt)
        results[qtype] = (cr, ll)
        rec = {"model": qtype, "file": model, "file_bytes": os.path.getsize(model),
               "threads": a.threads, "reps": a.reps, "crunch": cr, "llama_cpp": ll}
        print(json.dumps(rec), flush=True)
        rows.append((qtype, cr, ll))
    for spec in a.crunch_model:
        name, path = spec.split("=", 1)
        cr = crunch_bench(a.crunch, path, a.threads, a.reps, long_prompt)
        ll = results.get("Q4_0", (None, None))[1]
        print(json.dumps({"model": name, "file": path, "threads": a.threads, "reps": a.reps,
                          "crunch": cr, "llama_cpp_q4_0": ll}), flush=True)
        rows.append((name + " (vs llama.cpp Q4_0)", cr, ll))

    mb = 1e6
    print("\n| model | crunch pp512 t/s | llama.cpp pp512 t/s | ratio | crunch tg128 t/s "
          "| llama.cpp tg128 t/s | ratio | peak RSS MB | weights MB | KV MB | budget MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, cr, ll in rows:
        budget = cr["weight_bytes"] * 1.15 + cr["kv_cache_bytes"] + 150e6
        cells = [name]
        for test in ["pp512", "tg128"]:
            c = cr[test]
            cells.append(f"{c['mean']:.1f} ± {c['stdev']:.1f}")
            if ll and test in ll:
                l = ll[test]
                cells.append(f"{l['mean']:.1f} ± {l['stdev']:.1f}")
                cells.append(f"{c['mean'] / l['mean']:.2f}×")
            else:
                cells += ["–", "–"]
        cells += [f"{cr['peak_rss_bytes'] / mb:.0f}", f"{cr['weight_bytes'] / mb:.1f}",
                  f"{cr['kv_cache_bytes'] / mb:.1f}", f"{budget / mb:.0f}"]
        print("| " + " | ".join(cells) + " |")
    print(f"\n{time.time() - t0:.0f} s in all", file=sys.stderr)


if __name__ == "__main__":
    main()
