#!/usr/bin/env python3
"""Issue 19 on the GPU machine: which of the GGUF budget search's settings keep its advantage off
the calibration domain. For each lever (a set of extra `crunch compress` flags) and each target
size, the search runs at the protocol (128 x 512 calibration windows of calib.txt, seed 0 unless
the lever says otherwise, 30 generations, 16 offspring) and `crunch eval --base` scores the file
on both texts (65,536 tokens, ctx 2048). One JSON line per (lever, size); the searches of one
invocation share a variants cache (the importance is the same), so only the first pays for it.

  bench/gpu/search_levers.py --crunch CRUNCH --in IN --work W --sizes Q4_K_S=102039840,... \
      --levers "sel4=--selection 4x4,16x1;seed1=--seed 1" [--gpu 0]

IN holds base-f32.gguf, calib.txt, eval.txt, offdomain.txt. Results are cached per file in W, so a
rerun after a call's time limit skips what is done.
"""
import argparse
import json
import os
import shlex
import subprocess

SEARCH = ["--generations", "30", "--offspring", "16", "--selection", "2x4,8x1"]


def run_json(cmd, env):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crunch", required=True)
    ap.add_argument("--in", dest="inp", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--sizes", required=True, help="NAME=BYTES,...")
    ap.add_argument("--levers", required=True, help="NAME=FLAGS;... (FLAGS may be empty)")
    ap.add_argument("--gpu", default=None, help="CUDA_VISIBLE_DEVICES for every command")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=65536)
    a = ap.parse_args()
    env = dict(os.environ)
    if a.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = a.gpu
    os.makedirs(a.work, exist_ok=True)
    base = os.path.join(a.inp, "base-f32.gguf")
    th = ["--threads", str(a.threads)]
    for lever in a.levers.split(";"):
        name, _, flags = lever.partition("=")
        for size in a.sizes.split(","):
            preset, _, nbytes = size.partition("=")
            out = os.path.join(a.work, f"{name}-{preset}.gguf")
            rec_path = out + ".json"
            if not os.path.exists(rec_path):
                extra = shlex.split(flags)
                seed = [] if "--seed" in extra else ["--seed", "0"]
                # A lever's flag replaces the default of the same name (clap takes each once).
                search = [x for i in range(0, len(SEARCH), 2) if SEARCH[i] not in extra
                          for x in SEARCH[i:i + 2]]
                rec = run_json([a.crunch, *th, "compress", base, "--out", out, "--target-size",
                                nbytes, "--format", "gguf", "--calib",
                                os.path.join(a.inp, "calib.txt"), "--calib-samples", "128",
                                "--calib-len", "512", *seed, "--device", "cuda",
                                "--search-cache", os.path.join(a.work, "cache"), "--json",
                                *search, *extra], env)
                with open(rec_path, "w") as f:
                    json.dump(rec, f)
            with open(rec_path) as f:
                rec = json.load(f)
            row = {"lever": name, "flags": flags, "preset": preset, "target": int(nbytes),
                   "bytes": os.path.getsize(out),
                   "calibration_kl": rec["search"]["calibration_kl"],
                   "search_seconds": rec["search"]["search_seconds"]}
            for text in ("eval", "offdomain"):
                done = f"{out}-{text}-{a.max_tokens}.json"
                if not os.path.exists(done):
                    e = run_json([a.crunch, *th, "eval", out, "--base", base, "--device", "cuda",
                                  "--data", os.path.join(a.inp, f"{text}.txt"), "--ctx", "2048",
                                  "--max-tokens", str(a.max_tokens), "--json"], env)
                    with open(done, "w") as f:
                        json.dump({k: e[k] for k in ("kl", "ppl", "top1_agreement")}, f)
                with open(done) as f:
                    row[text] = json.load(f)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
