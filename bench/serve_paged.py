#!/usr/bin/env python3
"""`crunch serve` with a paged key/value pool (decision 141) under concurrent clients.

Usage: python3 bench/serve_paged.py MODEL [--crunch target/release/crunch] [--device cpu]
       [--clients 1,4,16] [--max-tokens 64] [--kv-pages N] [--check] [--port 18441]
       [--extra "--threads 2"]

For each client count: starts the server (stopping it afterwards by its process id), sends
that many greedy (temperature 0) /v1/completions requests at once, each its own prompt, and
polls /health meanwhile. Prints one JSON line per count: aggregate completion tokens/s over
the wall time of the burst, the most sequences active at once, the most pages in use, the
preemptions, and `contiguous_fit`: how many requests per-request stores of prompt + max_tokens
positions would fit in the same memory as the pool. With --check, every completion's text must
equal `crunch generate`'s for the same prompt run alone (greedy); a mismatch exits 1.
Only Python's standard library is used (threads and http.client).
"""
import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"
PROMPTS = [
    "The history of the printing press begins",
    "Photosynthesis is the process by which",
    "A good recipe for bread needs",
    "The main causes of the French Revolution were",
    "In computer science, a hash table is",
    "The tallest mountains on Earth are",
    "To learn a new language quickly, you should",
    "The solar system consists of",
]


def prompt(i):
    return f"{PROMPTS[i % len(PROMPTS)]} (case {i})"


def call(port, method, path, body=None, timeout=900):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, json.loads(data)


def start(args, port):
    cmd = [args.crunch, "serve", args.model, "--port", str(port), "--device", args.device,
           "--max-batch", "32"] + args.extra.split()
    if args.kv_pages:
        cmd += ["--kv-pages", str(args.kv_pages)]
    log = open(f"/tmp/serve_paged_{port}.log", "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=log)
    for _ in range(600):
        try:
            if call(port, "GET", "/health", timeout=2)[0] == 200:
                return p
        except OSError:
            time.sleep(0.5)
        if p.poll() is not None:
            break
    p.send_signal(signal.SIGINT)
    sys.exit(f"the server did not start: see /tmp/serve_paged_{port}.log")


ALONE = {}


def alone(args, text):
    """`crunch generate`'s greedy text for one prompt (run once per prompt: each client count
    reuses the texts of the prompts an earlier count already ran)."""
    if text in ALONE:
        return ALONE[text]
    out = subprocess.run(
        [args.crunch, "generate", args.model, "--prompt", text, "--max-tokens",
         str(args.max_tokens), "--temperature", "0", "--device", args.device, "--json"]
        + args.extra.split(), capture_output=True, text=True, check=True)
    ALONE[text] = json.loads(out.stdout.strip().splitlines()[-1])["text"]
    return ALONE[text]


def burst(args, clients, port):
    p = start(args, port)
    try:
        results = [None] * clients
        peak = {"active": 0, "pages": 0}
        done = threading.Event()

        def one(i):
            body = {"prompt": prompt(i), "max_tokens": args.max_tokens, "temperature": 0}
            results[i] = call(port, "POST", "/v1/completions", body)

        def poll():
            while not done.is_set():
                _, h = call(port, "GET", "/health")
                peak["active"] = max(peak["active"], h["active"])
                if h.get("kv_pages"):
                    peak["pages"] = max(peak["pages"], h["kv_pages"]["in_use"])
                time.sleep(0.05)

        watcher = threading.Thread(target=poll)
        watcher.start()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        done.set()
        watcher.join()
        _, health = call(port, "GET", "/health")
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)
    bad = [r for r in results if r[0] != 200]
    if bad:
        sys.exit(f"{len(bad)} requests failed: {bad[0]}")
    tokens = sum(r[1]["usage"]["completion_tokens"] for r in results)
    prompt_tokens = max(r[1]["usage"]["prompt_tokens"] for r in results)
    pool = health.get("kv_pages") or {}
    rec = {
        "device": args.device, "clients": clients, "max_tokens": args.max_tokens,
        "completion_tokens": tokens, "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1), "peak_active": peak["active"],
        "peak_pages": peak["pages"], "pages": pool.get("pages"),
        "page_size": pool.get("page_size"), "preemptions": health.get("preemptions"),
    }
    if pool:
        rec["contiguous_fit"] = pool["pages"] * pool["page_size"] // (prompt_tokens + args.max_tokens)
    texts = [r[1]["choices"][0]["text"] for r in results]
    return rec, texts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--crunch", default="target/release/crunch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--kv-pages", type=int, default=0)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--port", type=int, default=18441)
    ap.add_argument("--extra", default="", help="more arguments for serve and generate")
    args = ap.parse_args()
    failed = 0
    for n in [int(c) for c in args.clients.split(",")]:
        rec, texts = burst(args, n, args.port)
        if args.check:
            want = [alone(args, prompt(i)) for i in range(n)]
            rec["same_as_alone"] = sum(a == b for a, b in zip(texts, want))
            failed += rec["same_as_alone"] != n
            for i, (a, b) in enumerate(zip(texts, want)):
                if a != b:
                    common = len(os.path.commonprefix([a, b]))
                    print(f"client {i}: served and alone agree for {common} characters, then "
                          f"served {a[common:][:80]!r}, alone {b[common:][:80]!r}", file=sys.stderr)
        print(json.dumps(rec), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
