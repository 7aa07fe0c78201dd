#!/usr/bin/env python3
"""Evaluation speed of `crunch eval` on CPU against the machine's float32 GEMM ceiling.

Usage: bench/eval_throughput.py [--threads 2] [--ctx 2048] [--max-tokens 16384] [--data FILE]

Prints one JSON line: tokens/s, the forward pass's FLOPs per window (linear layers incl. the
output head, plus causal attention: QKᵀ and PV over the visible keys only), the achieved
GFLOP/s, the GEMM ceiling measured by bench/src/bin/gemm.rs with the same thread count, their
ratio, and the peak resident memory of the eval process (getrusage of children).
"""
import argparse
import json
import os
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, env):
    return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=16384)
    ap.add_argument("--data", default=os.path.join(ROOT, "../shared/data/wikitext-2-raw/wiki.test.raw"))
    ap.add_argument("--gemm-n", type=int, default=2048)
    ap.add_argument("--bin", help="folder with prebuilt crunch and gemm (skips cargo build)")
    ap.add_argument("--model", help="the GGUF (default: scripts/fetch-smollm2)")
    a = ap.parse_args()
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    if a.bin is None:
        run(["cargo", "build", "--release", "--locked", "-q", "-p", "crunch-cli", "-p", "crunch-bench"], env)
    bin_dir = a.bin or os.path.join(ROOT, "target/release")
    gguf = a.model or run([os.path.join(ROOT, "scripts/fetch-smollm2")], env).stdout.strip()
    crunch = os.path.join(bin_dir, "crunch")
    info = json.loads(run([crunch, "info", gguf, "--json"], env).stdout)
    gemm = json.loads(run([os.path.join(bin_dir, "gemm"), str(a.gemm_n), "5"], env).stdout)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = run([crunch, "--threads", str(a.threads), "eval", gguf, "--data", a.data,
             "--ctx", str(a.ctx), "--max-tokens", str(a.max_tokens), "--json"], env)
    ev = json.loads(p.stdout)
    # Peak RSS of the largest child so far: the eval, as it is far larger than info or gemm.
    rss_kb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)

    h, i, L = info["hidden_size"], info["intermediate_size"], info["layers"]
    hd, nh, nkv, V = info["head_dim"], info["heads"], info["kv_heads"], info["vocab_size"]
    T = a.ctx
    linear_params = L * (h * nh * hd * 2 + h * nkv * hd * 2 + 3 * h * i) + V * h
    linear_flops = 2 * linear_params * T
    attn_flops = L * 2 * 2 * nh * hd * (T * (T + 1) // 2)
    flops_per_window = linear_flops + attn_flops
    achieved = flops_per_window * ev["windows"] / ev["seconds"] / 1e9
    print(json.dumps({
        "bench": "eval_throughput",
        "model": os.path.basename(gguf),
        "threads": a.threads,
        "ctx": T,
        "tokens_evaluated": ev["tokens_evaluated"],
        "tokens_per_second": ev["tokens_per_second"],
        "ppl": ev["ppl"],
        "flops_per_window": flops_per_window,
        "linear_flops_per_window": linear_flops,
        "attention_flops_per_window": attn_flops,
        "achieved_gflops": achieved,
        "gemm_gflops": gemm["gflops"],
        "gemm_n": a.gemm_n,
        "fraction_of_gemm": achieved / gemm["gflops"],
        "peak_rss_mb": rss_kb / 1024,
    }))


if __name__ == "__main__":
    sys.exit(main())
