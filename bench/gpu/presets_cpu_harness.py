#!/usr/bin/env python3
"""Issue 13's harness point on one multi-GPU host: the GGUF budget search at the size of every
llama-quantize preset, then llama.cpp's **CPU** `llama-perplexity --kl-divergence` (the build
that ../shared/tools/build-llamacpp makes) on the searched files and on llama-quantize's, on both
texts, at the full protocol (65,536 tokens, ctx 2048).

The searches (bench/search_gguf.py --harness crunch: the search, crunch eval of every file on
both texts) run on the GPUs, one group of sizes per GPU, while a queue of llama-perplexity jobs
(WORKERS processes of PPL_THREADS threads, niced while searches run) takes every file as soon as
it exists: the base logits of both texts first, then llama-quantize's files, then each searched
file once its search record is written. Every result is a JSON file in the size's work folder,
named as bench/search_gguf.py names its cache, so a second run (after a call's time limit) skips
what is done, and `search_gguf.py --harness both` prints the joint table from the caches alone,
which this script does at the end. Results also stream to OUT/harness.jsonl.

  bench/gpu/presets_cpu_harness.py --crunch CRUNCH --llamacpp LLAMA_CPU_BIN --in IN --work W \
      --out OUT [--groups "Q2_K,Q3_K_S,Q4_K_S,Q6_K;Q3_K_M,Q4_K_M"] [--workers 4 --ppl-threads 8]

IN holds base-f32.gguf, calib.txt, eval.txt, offdomain.txt, llama-P.gguf for every preset.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from gguf_presets import llama_kld  # noqa: E402

SEARCH = "--generations 30 --offspring 16 --selection 2x4,8x1"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crunch", required=True)
    ap.add_argument("--llamacpp", required=True, help="llama.cpp's CPU bin folder")
    ap.add_argument("--in", dest="inp", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--groups", default="Q2_K,Q3_K_S,Q4_K_S,Q6_K;Q3_K_M,Q4_K_M",
                    help="sizes per GPU, groups separated by ';'")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--ppl-threads", type=int, default=8)
    ap.add_argument("--search-threads", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=65536)
    a = ap.parse_args()
    a.work = os.path.abspath(a.work)  # the base logits are linked into each size's folder
    t0 = time.time()
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.work, exist_ok=True)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join([a.llamacpp, "/usr/local/cuda/lib64",
                                       env.get("LD_LIBRARY_PATH", "")])
    env.pop("LLAMA_PPL_ARGS", None)  # the CPU build: no -ngl
    os.environ.update(env)
    texts = {"eval": os.path.join(a.inp, "eval.txt"),
             "offdomain": os.path.join(a.inp, "offdomain.txt")}
    kld = {"eval": os.path.join(a.work, "base.kld"),
           "offdomain": os.path.join(a.work, "base-offdomain.kld")}
    groups = [g.split(",") for g in a.groups.split(";")]
    works = [os.path.join(a.work, f"g{i}") for i in range(len(groups))]
    for w in works:
        os.makedirs(w, exist_ok=True)
        for name, path in kld.items():
            link = os.path.join(w, os.path.basename(path))
            if not os.path.lexists(link):
                os.symlink(path, link)
    log = open(os.path.join(a.out, "harness.jsonl"), "a")

    emit_lock = threading.Lock()

    def emit(rec):
        rec["t"] = round(time.time() - t0, 1)
        with emit_lock:
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)

    def search_gguf(g, w, harness):
        """bench/search_gguf.py over the sizes `g` in work folder `w`, KL by `harness`."""
        return [sys.executable, os.path.join(os.path.dirname(HERE), "search_gguf.py"),
                "--crunch", a.crunch, "--llamacpp", a.llamacpp,
                "--base", os.path.join(a.inp, "base-f32.gguf"), "--presets-dir", a.inp,
                "--calib", os.path.join(a.inp, "calib.txt"), "--eval", texts["eval"],
                "--offdomain", texts["offdomain"], "--work", w,
                "--threads", str(a.search_threads), "--device", "cuda", "--calib-samples", "128",
                "--calib-len", "512", "--sizes", ",".join(f"{p}=llama" for p in g),
                "--search", SEARCH, *harness]

    # The searches, one process per GPU (each also scores its files with crunch eval).
    searches = []
    for i, (g, w) in enumerate(zip(groups, works)):
        cmd = search_gguf(g, w, ["--harness", "crunch"])
        e = dict(env, CUDA_VISIBLE_DEVICES=str(i))
        out = open(os.path.join(a.out, f"search-g{i}.txt"), "a")
        searches.append(subprocess.Popen(cmd, env=e, stdout=out, stderr=subprocess.STDOUT))

    # The llama-perplexity queue. A job: (files it waits for, model — None for a copy of the
    # first file's result —, text, result json).
    jobs = []
    size_first = {}
    for g, w in zip(groups, works):
        for p in g:
            ref = os.path.join(a.inp, f"llama-{p}.gguf")
            for t in texts:
                jobs.append(([ref], ref, t, os.path.join(w, f"kl-llama-{p}.gguf-{t}.json")))
    for g, w in zip(groups, works):
        for p in g:
            ours = os.path.join(w, f"search-{p}.gguf")
            size = os.path.getsize(os.path.join(a.inp, f"llama-{p}.gguf"))
            # Presets of one size share one search (search_gguf.py copies the file): measure once.
            twin = size_first.setdefault((w, size), p)
            for t in texts:
                res = os.path.join(w, f"kl-search-{p}.gguf-{t}.json")
                if twin != p:
                    twin_res = os.path.join(w, f"kl-search-{twin}.gguf-{t}.json")
                    jobs.append(([twin_res], None, t, res))
                else:
                    jobs.append(([ours, ours + ".json"], ours, t, res))

    # Everything started from here (llama.cpp's runs) yields the cores to the searches above.
    os.nice(10)
    base_jobs = [(t, kld[t]) for t in texts if not os.path.exists(kld[t])]
    running = []  # (Popen-like, finish callback)

    def searching():
        return any(s.poll() is None for s in searches)

    def start_base(t, path):
        chunks = a.max_tokens // a.ctx
        cmd = [f"{a.llamacpp}/llama-perplexity", "-m", os.path.join(a.inp, "base-f32.gguf"),
               "-f", texts[t], "-c", str(a.ctx), "--chunks", str(chunks),
               "--kl-divergence-base", path + ".tmp", "-t", str(a.ppl_threads * 2)]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        st = time.time()

        def done(rc):
            if rc != 0:
                raise SystemExit(f"base logits of {t} failed ({rc})")
            os.replace(path + ".tmp", path)
            emit({"base": t, "seconds": round(time.time() - st, 1)})
        return p, done

    # Base logits: both texts side by side, twice the threads each.
    for t, path in base_jobs:
        running.append(start_base(t, path))
    while running:
        for r in list(running):
            rc = r[0].poll()
            if rc is not None:
                r[1](rc)
                running.remove(r)
        time.sleep(2)

    lock = threading.Lock()
    pending = [j for j in jobs if not os.path.exists(j[3])]
    busy = [0]  # jobs being run: a copy waits on one

    def ready(job):
        return all(os.path.exists(f) for f in job[0])

    def worker():
        while True:
            with lock:
                pick = next((j for j in pending if ready(j)), None)
                if pick is not None:
                    pending.remove(pick)
                    busy[0] += 1
                elif not pending:
                    return
                elif not searching() and busy[0] == 0:
                    # Nothing can become ready: a search failed.
                    left = list(pending)
                    pending.clear()
                    for j in left:
                        emit({"missing": j[3]})
                    return
            if pick is None:
                time.sleep(5)
                continue
            try:
                run_job(*pick)
            finally:
                with lock:
                    busy[0] -= 1

    def run_job(ready_files, model, t, res):
        if model is None:  # a copy of the twin size's measurement
            shutil.copyfile(ready_files[0], res)
            with open(res) as f:
                emit({"model": os.path.basename(res), "text": t,
                      "copied_from": ready_files[0], **json.load(f)})
            return
        try:
            r = llama_kld(a.llamacpp, model, kld[t], a.ctx, a.ppl_threads)
        except BaseException as e:  # noqa: BLE001 - recorded, the other jobs go on
            emit({"model": os.path.basename(model), "text": t, "error": str(e)})
            return
        with open(res + ".tmp", "w") as f:
            json.dump(r, f)
        os.replace(res + ".tmp", res)
        emit({"model": os.path.basename(model), "bytes": os.path.getsize(model), "text": t,
              **r})

    threads = [threading.Thread(target=worker) for _ in range(a.workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for s in searches:
        s.wait()
    emit({"searches_rc": [s.returncode for s in searches]})
    # The joint table from the caches (nothing is run again).
    for i, (g, w) in enumerate(zip(groups, works)):
        cmd = search_gguf(g, w, ["--harness", "both", "--llama-files", "crunch,llama"])
        with open(os.path.join(a.out, f"table-g{i}.txt"), "w") as f:
            subprocess.run(cmd, env=dict(env, CUDA_VISIBLE_DEVICES=str(i)), stdout=f,
                           stderr=subprocess.STDOUT)
    for w in works:
        for f in glob.glob(os.path.join(w, "*.json")):
            shutil.copy(f, os.path.join(a.out, os.path.basename(w) + "-" + os.path.basename(f)))
    emit({"done": True, "seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
