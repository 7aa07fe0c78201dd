#!/usr/bin/env python3
"""crunch's CPU runtime against llama.cpp's `llama-bench`, side by side in one script run.

For each model (by default the three `llama-quantize` presets of SmolLM2-135M-Instruct,
`<presets>/llama-{Q4_0,Q8_0,Q4_K_M}.gguf`), each thread count and each test, both programs
measure in turn:

- pp512: 512 prompt tokens in one prefill — llama-bench `-p 512 -n 0`; crunch: a 512-token
  prompt and one new token (`prefill_tokens_per_second`);
- tg128: 128 tokens one at a time after a one-token prompt — llama-bench `-p 0 -n 128`;
  crunch: 129 new tokens with `--ignore-eos` (`decode_tokens_per_second`, 128 steps).

crunch runs either as the command line (`--crunch target/release/crunch`, `crunch generate
--json`, which also reports peak RSS) or as the engine's bench loop without the CLI
(`--crunch target/release/examples/decode_bench`, the same prefill/decode calls). Models in
crunch's own format (`--crunch-model NAME=PATH`, e.g. the int4 g128 directory written by
`crunch quantize ... --method rtn --bits 4 --sym`, which runs as Q4_0 blocks) are measured by
crunch only and compared with llama.cpp's Q4_0 of the same round.

The whole sweep is repeated `--rounds` times, the two programs alternating (which goes first
flips every round), so that load from other processes falls on both and the rounds show the
spread. Every measurement is one JSON line with the load average before and after it; the
end is a Markdown table: per model, threads and test, the mean over rounds with the range,
and crunch / llama.cpp as the ratio of the means and the range of the per-round ratios.

Usage: bench/generate_vs_llama.py [--crunch PATH] [--llama-bin DIR] [--threads 1,2]
       [--rounds 3] [--reps 2] [--tests pp512,tg128] [--presets DIR] [--types Q4_0,Q8_0,Q4_K_M]
       [--model NAME=PATH ...] [--crunch-model NAME=PATH ...]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = {"pp512": (512, 0), "tg128": (0, 128)}


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-4000:])
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return p.stdout


def load():
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def llama(bin_dir, model, threads, test, reps):
    p, n = TESTS[test]
    out = run([os.path.join(bin_dir, "llama-bench"), "-m", model, "-t", str(threads),
               "-p", str(p), "-n", str(n), "-r", str(reps), "-o", "jsonl"])
    for line in out.splitlines():
        if line.strip().startswith("{"):
            r = json.loads(line)
            return {"tokens_per_second": r["avg_ts"], "stdev": r["stddev_ts"],
                    "samples": r.get("samples_ts"), "build": r.get("build_commit")}
    raise SystemExit(f"no result from llama-bench for {model}")


class Crunch:
    def __init__(self, path):
        self.path = path
        self.bench = os.path.basename(path).startswith("decode_bench")
        self.prompt = None

    def generate(self, model, threads, prompt, max_tokens):
        cmd = [self.path, "generate", model, "--prompt", prompt, "--max-tokens",
               str(max_tokens), "--temperature", "0", "--ignore-eos", "--threads",
               str(threads), "--json"]
        return json.loads(run(cmd).strip().splitlines()[-1])

    def long_prompt(self, model, threads):
        """A prompt of exactly 512 tokens (" the" is one token in SmolLM2's vocabulary; the
        count is checked against crunch's tokenizer and adjusted)."""
        if self.prompt is None:
            words = 512
            for _ in range(4):
                text = "The" + " the" * (words - 1)
                got = self.generate(model, threads, text, 1)["prompt_tokens"]
                if got == 512:
                    self.prompt = text
                    break
                words += 512 - got
            else:
                raise SystemExit("could not make a 512-token prompt")
        return self.prompt

    def measure(self, model, threads, test, reps):
        if self.bench:
            env = dict(os.environ, ONLY=test[:2])
            out = run([self.path, model, str(threads), str(reps)], env=env)
            ts = [json.loads(l)["tokens_per_second"] for l in out.splitlines()
                  if l.startswith("{") and json.loads(l)["test"] == test]
            return {"tokens_per_second": statistics.mean(ts), "samples": ts}
        ts, rec = [], None
        for _ in range(reps):
            if test == "pp512":
                rec = self.generate(model, threads, self.long_prompt(model, threads), 1)
                assert rec["prompt_tokens"] == 512, rec["prompt_tokens"]
                ts.append(rec["prefill_tokens_per_second"])
            else:
                rec = self.generate(model, threads, "The", 129)
                assert rec["decode_steps"] == 128, rec["decode_steps"]
                ts.append(rec["decode_tokens_per_second"])
        keep = ["peak_rss_bytes", "weight_bytes", "kv_cache_bytes", "kernels", "threads"]
        return {"tokens_per_second": statistics.mean(ts), "samples": ts,
                **{k: rec[k] for k in keep if k in rec}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crunch", default=os.path.join(REPO, "target", "release", "crunch"))
    ap.add_argument("--llama-bin", default=os.path.expanduser("~/.cache/llamacpp/build/bin"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2, help="repetitions per program and round")
    ap.add_argument("--tests", default="pp512,tg128")
    ap.add_argument("--presets", default="/work/main/.cache/kq/presets")
    ap.add_argument("--types", default="Q4_0,Q8_0,Q4_K_M")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                    help="a GGUF both programs run (replaces the presets)")
    ap.add_argument("--crunch-model", action="append", default=[], metavar="NAME=PATH",
                    help="a crunch-format model (crunch only; compared with llama.cpp's Q4_0)")
    a = ap.parse_args()
    models = [m.split("=", 1) for m in a.model] or [
        (t, os.path.join(a.presets, f"llama-{t}.gguf")) for t in a.types.split(",") if t]
    own = [m.split("=", 1) for m in a.crunch_model]
    threads = [int(t) for t in a.threads.split(",")]
    tests = [t for t in a.tests.split(",") if t]
    crunch = Crunch(a.crunch)
    t0 = time.time()
    print(json.dumps({"start": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                      "load": load(), "crunch": a.crunch, "cpus": os.cpu_count()}), flush=True)
    # (model, threads, test) -> {"crunch": [per round], "llama": [per round]}
    res = {}
    for rnd in range(a.rounds):
        for name, path in models + own:
            for t in threads:
                for test in tests:
                    mine = name in dict(own)
                    order = ["crunch"] if mine else (
                        ["llama", "crunch"] if rnd % 2 == 0 else ["crunch", "llama"])
                    for prog in order:
                        before = load()
                        if prog == "llama":
                            r = llama(a.llama_bin, path, t, test, a.reps)
                        else:
                            r = crunch.measure(path, t, test, a.reps)
                        rec = {"round": rnd, "model": name, "program": prog, "threads": t,
                               "test": test, **r, "load_before": before, "load_after": load()}
                        print(json.dumps(rec), flush=True)
                        res.setdefault((name, t, test), {"crunch": [], "llama": []})[
                            prog].append(r["tokens_per_second"])
    for name, _ in own:
        for key, v in res.items():
            if key[0] == name:
                v["llama"] = res.get(("Q4_0", key[1], key[2]), {}).get("llama", [])

    def span(v):
        return f"{statistics.mean(v):.1f} ({min(v):.1f}–{max(v):.1f})"

    print(f"\n{a.rounds} rounds × {a.reps} repetitions; mean over rounds (range); "
          f"load average at the end {load()}")
    print("\n| model | threads | test | crunch t/s | llama.cpp t/s | crunch / llama.cpp "
          "| per-round ratios |")
    print("|---|---:|---|---|---|---:|---|")
    for (name, t, test), v in res.items():
        c, l = v["crunch"], v["llama"]
        label = name + (" (vs llama.cpp Q4_0)" if name in dict(own) else "")
        if not l:
            print(f"| {label} | {t} | {test} | {span(c)} | – | – | – |")
            continue
        per = [x / y for x, y in zip(c, l)]
        print(f"| {label} | {t} | {test} | {span(c)} | {span(l)} | "
              f"{statistics.mean(c) / statistics.mean(l):.2f}× | "
              f"{min(per):.2f}–{max(per):.2f}× |")
    print(f"\n{time.time() - t0:.0f} s in all", file=sys.stderr)


if __name__ == "__main__":
    main()
