#!/usr/bin/env python3
"""Check crunch's compressed-tensors sparse-24-bitmask export against compressed-tensors itself.

    python3 scripts/check_sparse24.py EXPORT_DIR CRUNCH_DIR [--tol 1e-5]

EXPORT_DIR holds 2:4-pruned layers in compressed-tensors' sparse-24-bitmask layout and
CRUNCH_DIR the same layers in crunch's own format (`P.nm_values` F16 + `P.nm_indices`, 2-bit
in-group positions packed least significant first; see crates/crunch-formats/src/recipe.rs).
Both come from one pruning, e.g. the tiny pair written by

    cargo run -p crunch-export --example sparse24_pair -- OUT_DIR

(OUT_DIR/compressed-tensors and OUT_DIR/crunch) or by running the same deterministic pruning
with both output formats.

Three checks, one JSON line each, then a summary; exit status 1 if any fails:
1. `decompress`: every `P.compressed` / `P.bitmask` / `P.shape` triple decompressed with
   compressed-tensors' own `sparse24_bitmask_decompress` equals crunch's dense weight decoded
   from CRUNCH_DIR, exactly (both hold the same f16 values);
2. `load`: `AutoModelForCausalLM.from_pretrained(EXPORT_DIR, dtype=float32)` (transformers'
   compressed-tensors integration) yields, after one forward pass, the same dense weights;
3. `logits`: that model's logits against the plain architecture loaded with crunch's dense
   weights, relative error max|a - b| / max|b| below --tol.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from check_export import print_versions

IDS = [1, 5, 9, 17, 33, 65, 2, 127, 64, 3, 8, 100]


def ct_decompress():
    """compressed-tensors' own decompression function, wherever this version keeps it."""
    try:
        from compressed_tensors.compressors.sparse_compressors.sparse_24_bitmask import (
            sparse24_bitmask_decompress,
        )
    except ImportError:
        from compressed_tensors.compressors import sparse24_bitmask_decompress
    return sparse24_bitmask_decompress


def crunch_nm_dense(values: torch.Tensor, indices: torch.Tensor, rows: int, cols: int,
                    n: int, m: int) -> torch.Tensor:
    """Decodes crunch's N:M layout: n values per group of m columns, and their positions as a
    little-endian bit stream of ceil(log2 m)-bit fields."""
    bits = max(1, (m - 1).bit_length())
    slots = rows * cols // m * n
    stream = np.unpackbits(indices.numpy().astype(np.uint8), bitorder="little")
    fields = stream[: slots * bits].reshape(slots, bits).astype(np.int64)
    pos = (fields << np.arange(bits, dtype=np.int64)).sum(axis=1)
    groups = np.arange(slots) // n
    flat = torch.zeros(rows * cols, dtype=torch.float32)
    flat[torch.from_numpy(groups * m + pos)] = values.to(torch.float32).flatten()
    return flat.reshape(rows, cols)


def crunch_dense(crunch_dir: str) -> dict:
    with open(os.path.join(crunch_dir, "crunch.json")) as f:
        recipe = json.load(f)
    state = load_file(os.path.join(crunch_dir, "model.safetensors"))
    out = {}
    for name, layer in recipe["layers"].items():
        if layer.get("sparsity") != "2:4" or f"{name}.nm_values" not in state:
            continue
        out[name] = crunch_nm_dense(state[f"{name}.nm_values"], state[f"{name}.nm_indices"],
                                    layer["rows"], layer["cols"], 2, 4)
    return out


def check(export_dir: str, crunch_dir: str, tol: float) -> list:
    results = []
    want = crunch_dense(crunch_dir)
    state = load_file(os.path.join(export_dir, "model.safetensors"))
    decompress = ct_decompress()
    prefixes = sorted(k[: -len(".bitmask")] for k in state if k.endswith(".bitmask"))
    bad = []
    for p in prefixes:
        shape = state[p + ".shape"].flatten().tolist()
        dense = decompress(state[p + ".compressed"], state[p + ".bitmask"], shape).float()
        if p not in want or dense.shape != want[p].shape or not torch.equal(dense, want[p]):
            bad.append(p)
    results.append({"check": "decompress", "layers": len(prefixes), "mismatched": bad,
                    "ok": bool(prefixes) and not bad and set(prefixes) == set(want)})

    model, info = AutoModelForCausalLM.from_pretrained(
        export_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    model.eval()
    ids = torch.tensor([IDS], dtype=torch.long)
    with torch.no_grad():
        got = model(ids).logits[0].float()
    modules = dict(model.named_modules())
    bad = [p for p in prefixes
           if not hasattr(modules.get(p), "weight")
           or not torch.equal(modules[p].weight.detach().float(), want[p])]
    results.append({"check": "load", "loading_info": {k: sorted(map(str, v))
                                                      for k, v in info.items() if v},
                    "mismatched": bad, "ok": not bad})

    config = AutoConfig.from_pretrained(export_dir)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the plain architecture
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                             attn_implementation="eager")
    dense_state = {k: v for k, v in state.items()
                   if not k.endswith((".compressed", ".bitmask", ".shape"))}
    dense_state.update({p + ".weight": w for p, w in want.items()})
    missing, unexpected = plain.load_state_dict(dense_state, strict=False)
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    plain.eval()
    with torch.no_grad():
        ref = plain(ids).logits[0].float()
    rel = ((got - ref).abs().max() / ref.abs().max()).item()
    results.append({"check": "logits", "rel_err": rel, "tol": tol, "missing": missing,
                    "unexpected": unexpected, "ok": rel < tol and not missing and not unexpected})
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export_dir")
    ap.add_argument("crunch_dir")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    print_versions()
    try:
        results = check(args.export_dir, args.crunch_dir, args.tol)
    except Exception as e:  # report instead of a traceback
        results = [{"check": "run", "ok": False, "error": f"{type(e).__name__}: {e}"}]
    for r in results:
        print(json.dumps(r), flush=True)
    failed = sum(not r["ok"] for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
