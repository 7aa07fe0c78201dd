#!/usr/bin/env python3
"""crunch's GGUF presets against llama-quantize's, on one base model.

For each preset: llama-quantize (with an imatrix) writes its file; `crunch quantize --format
gguf --mix PRESET --plan` lays out crunch's. Every tensor's type must agree, and the file
sizes are compared (JSON line per preset). With --quality, crunch also writes its file
(importance-weighted rounding; importance E[x²] collected by crunch from --calib, 128 × 512
tokens, seed 0, once for all presets) and both files are evaluated
against the base: `crunch eval --base` (KL, perplexity, top-1 agreement) and llama.cpp's own
`llama-perplexity --kl-divergence` on the same text; then a Markdown table.

Run it with a Python that has gguf-py (scripts/check-gguf-py installs .cache/gguf-venv):

  .cache/gguf-venv/bin/python bench/gguf_presets.py --crunch target/release/crunch \
      --llamacpp ~/.cache/llamacpp/build/bin --base base-f32.gguf --imatrix imatrix.gguf \
      --calib calib.txt --eval eval.txt --work DIR [--quality] [--max-tokens 16384] \
      [--offdomain offdomain.txt] [--no-crunch-eval]

--methods rtn,gptq also writes crunch's GPTQ file of each preset (`--method gptq`, calibrated
on --calib with --gptq-samples windows of 512 tokens, seed 0; the embeddings and output rounded
with the same saved importance as RTN) as crunch-gptq-PRESET.gguf and measures it the same way.

--offdomain adds llama-perplexity's KL on a second text (issue 19's off-domain text, made by
bench/offdomain.py); --no-crunch-eval measures with llama.cpp's harness only (crunch eval of a
135M model over 65,536 tokens takes minutes on a 2-core machine). Files already in --work
(llama-PRESET.gguf, crunch-PRESET.gguf, *.kld) are reused, so an interrupted run resumes.
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time

from quantize_table import markdown

PRESETS = ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
           "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


def run(cmd, **kw):
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}")
    return p, time.time() - t


def run_json(cmd):
    p, secs = run(cmd)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = secs
    return out


def types_of(path):
    from gguf import GGUFReader  # only here: the harness helpers need no gguf package

    r = GGUFReader(path)
    return {t.name: t.tensor_type.name for t in r.tensors}


def ppl_extra():
    """Extra llama-perplexity arguments from $LLAMA_PPL_ARGS (e.g. "-ngl 99" for a CUDA build)."""
    return shlex.split(os.environ.get("LLAMA_PPL_ARGS", ""))


def base_logits(a, text, path):
    """llama-perplexity's saved base logits for `text` (ctx a.ctx, a.max_tokens tokens)."""
    if not os.path.exists(path):
        chunks = a.max_tokens // a.ctx
        run([f"{a.llamacpp}/llama-perplexity", "-m", a.base, "-f", text, "-c", str(a.ctx),
             "--chunks", str(chunks), "--kl-divergence-base", path, "-t", str(a.threads),
             *ppl_extra()])
    return path


def llama_kld(llamacpp, model, base_kld, ctx, threads):
    p, secs = run([f"{llamacpp}/llama-perplexity", "-m", model, "--kl-divergence-base", base_kld,
                   "--kl-divergence", "-c", str(ctx), "-t", str(threads), *ppl_extra()])
    text = p.stdout + p.stderr
    grab = lambda pat: float(re.search(pat, text).group(1))
    return {"kl": grab(r"Mean\s+KLD:\s+([-\d.]+)"), "ppl": grab(r"Mean PPL\(Q\)\s*:\s*([\d.]+)"),
            "top1_agreement": grab(r"Same top p:\s+([\d.]+)") / 100, "seconds": secs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crunch", required=True)
    ap.add_argument("--llamacpp", required=True)
    ap.add_argument("--base", required=True, help="the unquantized model (F32 GGUF) both tools start from")
    ap.add_argument("--imatrix", required=True, help="llama-imatrix output for llama-quantize")
    ap.add_argument("--calib", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=65536)
    ap.add_argument("--offdomain", help="a second evaluation text (llama-perplexity KL only)")
    ap.add_argument("--no-crunch-eval", action="store_true")
    ap.add_argument("--methods", default="rtn", help="crunch's methods: rtn, gptq or rtn,gptq")
    ap.add_argument("--gptq-samples", type=int, default=128)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    th = ["--threads", str(a.threads)]
    rows = []
    base_kld = os.path.join(a.work, "base.kld")
    off_kld = os.path.join(a.work, "base-offdomain.kld")
    if a.quality:
        base_logits(a, a.eval, base_kld)
    crunch_imatrix = os.path.join(a.work, "crunch-imatrix.gguf")
    if a.quality and not os.path.exists(crunch_imatrix):
        # crunch's importance (E[x²] over --calib, 128 windows of 512 tokens, seed 0), collected
        # once and reused by every preset (as llama.cpp's imatrix is).
        imp = run_json([a.crunch, *th, "quantize", a.base, "--format", "gguf", "--calib", a.calib,
                        "--calib-samples", "128", "--calib-len", "512", "--seed", "0",
                        "--save-imatrix", crunch_imatrix, "--plan", "--out", os.path.join(a.work, "unused.gguf")])
        print(json.dumps({"crunch_importance_seconds": imp["importance_seconds"]}), flush=True)
    for preset in a.presets.split(","):
        ref = os.path.join(a.work, f"llama-{preset}.gguf")
        if not os.path.exists(ref):
            _, secs = run([f"{a.llamacpp}/llama-quantize", "--imatrix", a.imatrix, a.base, ref, preset,
                           str(a.threads)])
        plan = run_json([a.crunch, *th, "quantize", a.base, "--format", "gguf", "--mix", preset,
                         "--imatrix", a.imatrix, "--out", os.path.join(a.work, "unused.gguf"), "--plan"])
        theirs = types_of(ref)
        ours = {t["name"]: t["type"] for t in plan["tensors"]}
        mismatches = [f"{n}: llama.cpp {theirs.get(n)} crunch {ours.get(n)}"
                      for n in sorted(set(theirs) | set(ours)) if theirs.get(n) != ours.get(n)]
        row = {"preset": preset, "tensors": len(theirs), "type_mismatches": mismatches,
               "llama_bytes": os.path.getsize(ref), "crunch_bytes": plan["size_on_disk"],
               "size_ratio": plan["size_on_disk"] / os.path.getsize(ref),
               "linear_bits_per_weight": plan["linear_bits_per_weight"]}
        if a.quality:
            files = [("llama", ref)]
            for method in a.methods.split(","):
                who = "crunch" if method == "rtn" else f"crunch_{method}"
                out = os.path.join(a.work, f"crunch-{preset}.gguf" if method == "rtn"
                                   else f"crunch-{method}-{preset}.gguf")
                if not os.path.exists(out):
                    extra = [] if method == "rtn" else [
                        "--method", method, "--calib", a.calib, "--calib-samples", str(a.gptq_samples),
                        "--calib-len", "512", "--seed", "0"]
                    q = run_json([a.crunch, *th, "quantize", a.base, "--format", "gguf", "--mix", preset,
                                  "--out", out, "--imatrix", crunch_imatrix, *extra, "--json"])
                    row[f"{who}_quantize_seconds"] = q["total_seconds"]
                row[f"{who}_file_bytes"] = os.path.getsize(out)
                files.insert(len(files) - 1, (who, out))
            ev = ["--data", a.eval, "--ctx", str(a.ctx), "--max-tokens", str(a.max_tokens), "--json"]
            for who, path in files:
                if not a.no_crunch_eval:
                    e = run_json([a.crunch, *th, "eval", path, "--base", a.base, *ev])
                    row[f"{who}_crunch_eval"] = {k: e[k] for k in ("ppl", "kl", "top1_agreement")}
                row[f"{who}_llama_kld"] = llama_kld(a.llamacpp, path, base_kld, a.ctx, a.threads)
                print(json.dumps({"preset": preset, who: row[f"{who}_llama_kld"]}), flush=True)
            if a.offdomain:
                base_logits(a, a.offdomain, off_kld)
                for who, path in files:
                    row[f"{who}_llama_kld_offdomain"] = llama_kld(a.llamacpp, path, off_kld, a.ctx,
                                                                  a.threads)
        rows.append(row)
        print(json.dumps(row), flush=True)
    markdown(["preset", "tensors", "type mismatches", "llama-quantize bytes", "crunch bytes", "ratio"],
             [[r["preset"], str(r["tensors"]), str(len(r["type_mismatches"])), f"{r['llama_bytes']:,}",
               f"{r['crunch_bytes']:,}", f"{r['size_ratio']:.5f}"] for r in rows])
    if a.quality and "gptq" in a.methods.split(","):
        print("\n| preset | text | crunch RTN KL | crunch GPTQ KL | llama.cpp KL | RTN / llama | GPTQ / llama |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            for text, suffix in (("evaluation", ""), ("off-domain", "_offdomain")):
                k = [r.get(f"{w}_llama_kld{suffix}") for w in ("crunch", "crunch_gptq", "llama")]
                if all(k):
                    c, g, l = (v["kl"] for v in k)
                    print(f"| {r['preset']} | {text} | {c:.4f} | {g:.4f} | {l:.4f} | {c / l:.3f} | {g / l:.3f} |")
    if a.quality and "rtn" in a.methods.split(","):
        print("\n| preset | linear bpw | crunch KL (llama-perplexity) | llama.cpp KL (llama-perplexity) | ratio | "
              "crunch top-1 | llama.cpp top-1 | crunch KL off-domain | llama.cpp KL off-domain | ratio |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            ck, lk = r["crunch_llama_kld"], r["llama_llama_kld"]
            co, lo = r.get("crunch_llama_kld_offdomain"), r.get("llama_llama_kld_offdomain")
            off = (f"{co['kl']:.4f} | {lo['kl']:.4f} | {co['kl'] / lo['kl']:.3f}" if co and lo else "– | – | –")
            print(f"| {r['preset']} | {r['linear_bits_per_weight']:.3f} | {ck['kl']:.4f} | {lk['kl']:.4f} | "
                  f"{ck['kl'] / lk['kl']:.3f} | {100 * ck['top1_agreement']:.2f}% | "
                  f"{100 * lk['top1_agreement']:.2f}% | {off} |")
    if a.quality and not a.no_crunch_eval and "rtn" in a.methods.split(","):
        print("\n| preset | linear bpw | crunch KL (crunch eval) | llama.cpp KL (crunch eval) | ratio | "
              "crunch KL (llama-perplexity) | llama.cpp KL (llama-perplexity) | ratio | crunch top-1 | llama.cpp top-1 |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            c, l = r["crunch_crunch_eval"], r["llama_crunch_eval"]
            ck, lk = r["crunch_llama_kld"], r["llama_llama_kld"]
            print(f"| {r['preset']} | {r['linear_bits_per_weight']:.3f} | {c['kl']:.4f} | {l['kl']:.4f} | "
                  f"{c['kl'] / l['kl']:.3f} | {ck['kl']:.4f} | {lk['kl']:.4f} | {ck['kl'] / lk['kl']:.3f} | "
                  f"{100 * c['top1_agreement']:.2f}% | {100 * l['top1_agreement']:.2f}% |")


if __name__ == "__main__":
    main()
