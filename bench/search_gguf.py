#!/usr/bin/env python3
"""The GGUF budget search (issue 14) against llama-quantize + imatrix at the same file sizes.

For each size (default: the exact byte sizes of llama.cpp's Q2_K, Q3_K_M and Q4_K_M files of
SmolLM2, 88.2, 93.5 and 105.5 MB): `crunch compress BASE --target-size S --format gguf` searches a GGUF
type per block linear layer (importance-weighted encodings, the other tensors typed as the
preset of that size) and writes the file; llama.cpp's `llama-perplexity --kl-divergence` then
measures it, llama.cpp's preset file of that size and crunch's own file with the preset's types
(`crunch quantize --mix PRESET`, RTN + importance from the same calibration: the search's seed)
against the base's logits, on the
evaluation text and (with --offdomain) the off-domain text. With --target-kl, one more search
for the smallest file whose calibration KL meets it. JSON lines, then a Markdown table.

  .cache/gguf-venv/bin/python bench/search_gguf.py --crunch target/release/crunch \
      --llamacpp ~/.cache/llamacpp/build/bin --base base-f32.gguf --presets-dir DIR \
      --calib calib.txt --eval eval.txt [--offdomain offdomain.txt] --work W \
      [--max-tokens 8192] [--calib-samples 32 --calib-len 512] [--device cuda] \
      [--search "--generations 50 --offspring 16 --selection 2x4,8x1"] [--target-kl 0.05]

--presets-dir holds llama-Q2_K.gguf, llama-Q3_K_M.gguf, llama-Q4_K_M.gguf (llama-quantize
--imatrix outputs, e.g. from bench/gguf_presets.py). Base logits (W/base.kld,
W/base-offdomain.kld) and searched files already in --work are reused; the variant cache is
W/cache, so the second and later sizes reuse the encodings.
"""
import argparse
import json
import os
import shlex
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_presets import base_logits, llama_kld, run_json  # noqa: E402

# The target of each size: llama.cpp's file's own byte size ("llama"), so the searched file is
# never larger and the preset's own types (a seed of the search) fit.
SIZES = [("Q2_K", "llama"), ("Q3_K_M", "llama"), ("Q4_K_M", "llama")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crunch", required=True)
    ap.add_argument("--llamacpp", help="llama.cpp's bin folder (for --harness llama/both)")
    ap.add_argument("--base", required=True)
    ap.add_argument("--presets-dir", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--offdomain")
    ap.add_argument("--work", required=True)
    ap.add_argument("--sizes", default=",".join(f"{p}={s}" for p, s in SIZES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=65536)
    ap.add_argument("--calib-samples", type=int, default=128)
    ap.add_argument("--calib-len", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--search", default="", help="extra flags for the search")
    ap.add_argument("--imatrix", help="importance file for the searched and the preset-typed "
                                      "files (else E[x^2] collected on --calib)")
    ap.add_argument("--target-kl", type=float)
    ap.add_argument("--target-kl-search", default="",
                    help="flags for the --target-kl search in place of --search's (e.g. fewer "
                         "generations: it runs one search per bisection step)")
    ap.add_argument("--plot", help="rate-distortion figure of the last size (.svg/.png)")
    ap.add_argument("--harness", default="llama", choices=["llama", "crunch", "both"],
                    help="who measures KL: llama-perplexity --kl-divergence (base logits of "
                         "--max-tokens tokens), crunch eval --base (--device), or both")
    ap.add_argument("--llama-files", default="crunch,llama,rtn",
                    help="which files llama-perplexity measures with --harness both (crunch = the "
                         "searched file, llama = llama-quantize's, rtn = the preset-typed seed)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    a.base_kld = os.path.join(a.work, "base.kld")
    a.off_kld = os.path.join(a.work, "base-offdomain.kld")
    th = ["--threads", str(a.threads)]
    common = ["--format", "gguf", "--calib", a.calib, "--calib-samples", str(a.calib_samples),
              "--calib-len", str(a.calib_len), "--seed", "0", "--device", a.device,
              "--search-cache", os.path.join(a.work, "cache"), "--json"]
    if a.imatrix:
        common += ["--imatrix", a.imatrix]
    common_q = ["--format", "gguf", "--calib", a.calib, "--calib-samples", str(a.calib_samples),
                "--calib-len", str(a.calib_len), "--seed", "0", "--device", a.device, "--json"]
    if a.imatrix:
        common_q += ["--imatrix", a.imatrix]
    texts = [("eval", a.eval, a.base_kld)]
    if a.offdomain:
        texts.append(("offdomain", a.offdomain, a.off_kld))
    use_llama = a.harness in ("llama", "both")
    use_crunch = a.harness in ("crunch", "both")
    if use_llama:
        for _, text, kld in texts:
            base_logits(a, text, kld)

    def measure(row, prefix, path, name, text, kld):
        if use_llama and (a.harness == "llama" or prefix in a.llama_files.split(",")):
            # Kept per file and text, so that a rerun (or an earlier run's measurement of the
            # same file on the same base logits) is not measured again.
            done = os.path.join(a.work, f"kl-{os.path.basename(path)}-{name}.json")
            if not os.path.exists(done):
                with open(done, "w") as f:
                    json.dump(llama_kld(a.llamacpp, path, kld, a.ctx, a.threads), f)
            with open(done) as f:
                row[f"{prefix}_{name}"] = json.load(f)
        if use_crunch:
            done = os.path.join(a.work, f"ce-{os.path.basename(path)}-{name}-{a.max_tokens}.json")
            if not os.path.exists(done):
                e = run_json([a.crunch, *th, "eval", path, "--base", a.base, "--device", a.device,
                              "--data", text, "--ctx", str(a.ctx), "--max-tokens",
                              str(a.max_tokens), "--json"])
                with open(done, "w") as f:
                    json.dump({k: e[k] for k in ("kl", "ppl", "top1_agreement")}, f)
            with open(done) as f:
                row[f"{prefix}_{name}_crunch_eval"] = json.load(f)
            if f"{prefix}_{name}" not in row:
                row[f"{prefix}_{name}"] = row[f"{prefix}_{name}_crunch_eval"]
    rows = []
    searched = {}
    sizes = [s.split("=") for s in a.sizes.split(",")]
    for i, (preset, size) in enumerate(sizes):
        ours = os.path.join(a.work, f"search-{preset}.gguf")
        ref = os.path.join(a.presets_dir, f"llama-{preset}.gguf")
        if size == "llama":
            size = str(os.path.getsize(ref))
        row = {"preset": preset, "target": size, "llama_bytes": os.path.getsize(ref)}
        # crunch's own file with the preset's types (RTN + importance from the same
        # calibration): the search's seed, which it must beat.
        rtn = os.path.join(a.work, f"rtn-{preset}.gguf")
        if not os.path.exists(rtn):
            run_json([a.crunch, *th, "quantize", a.base, "--out", rtn, "--mix", preset, *common_q])
        row["rtn_bytes"] = os.path.getsize(rtn)
        rec_path = ours + ".json"
        if not os.path.exists(ours) and size in searched:
            # Two presets of one file size (SmolLM2's Q2_K and Q3_K_S): one search, the same file.
            shutil.copyfile(searched[size], ours)
            shutil.copyfile(searched[size] + ".json", rec_path)
        searched.setdefault(size, ours)
        if not os.path.exists(ours):
            extra = []
            if a.plot and i == len(sizes) - 1:
                extra = ["--plot", a.plot, "--compare",
                         *[os.path.join(a.presets_dir, f"llama-{p}.gguf") for p, _ in sizes]]
            rec = run_json([a.crunch, *th, "compress", a.base, "--out", ours, "--target-size", size,
                            *common, *shlex.split(a.search), *extra])
            with open(rec_path, "w") as f:
                json.dump(rec, f)
        with open(rec_path) as f:
            rec = json.load(f)
        s = rec["search"]
        row.update({"bytes": os.path.getsize(ours), "linear_bpw": rec["linear_bits_per_weight"],
                    "mix": s.get("mix"), "calibration_kl": s["calibration_kl"],
                    "search_seconds": s["search_seconds"], "variants_made": s["variants_made"],
                    "levels": s["levels"], "compare": s.get("compare")})
        row["seeds"] = s.get("seeds")
        # The fill pass's rounds (decision 122) and the self-sampled fitness windows, if any.
        row["fill"] = s.get("fill")
        row["fitness_self"] = s.get("fitness_self")
        for name, text, kld in texts:
            for who, path in (("crunch", ours), ("llama", ref), ("rtn", rtn)):
                measure(row, who, path, name, text, kld)
            row[f"ratio_{name}"] = row[f"crunch_{name}"]["kl"] / row[f"llama_{name}"]["kl"]
            # Against the seed in one harness: crunch eval's when both were run.
            ce = "_crunch_eval" if use_crunch else ""
            row[f"ratio_rtn_{name}"] = (row[f"crunch_{name}{ce}"]["kl"]
                                        / row[f"rtn_{name}{ce}"]["kl"])
            if use_crunch and use_llama:
                row[f"ratio_{name}_crunch_eval"] = (row[f"crunch_{name}_crunch_eval"]["kl"]
                                                    / row[f"llama_{name}_crunch_eval"]["kl"])
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.target_kl is not None:
        out = os.path.join(a.work, f"search-kl{a.target_kl}.gguf")
        if not os.path.exists(out):
            rec = run_json([a.crunch, *th, "compress", a.base, "--out", out, "--target-kl",
                            str(a.target_kl), *common,
                            *shlex.split(a.target_kl_search or a.search)])
            with open(out + ".json", "w") as f:
                json.dump(rec, f)
        with open(out + ".json") as f:
            rec = json.load(f)
        row = {"target_kl": a.target_kl, "bytes": os.path.getsize(out),
               "linear_bpw": rec["linear_bits_per_weight"],
               "calibration_kl": rec["search"]["calibration_kl"],
               "front": rec["search"]["searched"], "uniform": rec["search"]["uniform"]}
        for name, text, kld in texts:
            measure(row, "crunch", out, name, text, kld)
        print(json.dumps(row), flush=True)
    print("\n| size (preset) | searched bytes | llama bytes | linear bpw | text | searched KL |"
          " preset-typed RTN KL | llama KL | searched / llama | searched / RTN | search s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for name, _, _ in texts:
            print(f"| {r['preset']} | {r['bytes']:,} | {r['llama_bytes']:,} | "
                  f"{r['linear_bpw']:.3f} | {name} | {r[f'crunch_{name}']['kl']:.5f} | "
                  f"{r[f'rtn_{name}']['kl']:.5f} | {r[f'llama_{name}']['kl']:.5f} | "
                  f"{r[f'ratio_{name}']:.3f} | {r[f'ratio_rtn_{name}']:.3f} | "
                  f"{r['search_seconds']:.0f} |")


if __name__ == "__main__":
    main()
