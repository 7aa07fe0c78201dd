#!/usr/bin/env python3
"""Reference logits of a real GGUF model from Hugging Face transformers, for
`bench/src/bin/real_logits.rs` to compare crunch against (benchmarks only).

    python3 scripts/reference_gguf_logits.py MODEL.gguf TEXT N_TOKENS OUT_DIR

transformers loads the GGUF itself (`from_pretrained(dir, gguf_file=...)`: its own
dequantization through the `gguf` package, its own config mapping, Gemma's norms shifted back
by 1) and its tokenizer from the file's metadata; the first N_TOKENS tokens of TEXT (with the
tokenizer's BOS) are run in float32 with eager attention on the CPU. OUT_DIR gets `ids.json`
(ids, versions, shape) and `logits.f32` (row-major little-endian float32, N_TOKENS × vocab).
Needs torch, transformers, gguf and accelerate.
"""
import json
import os
import sys
import time

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    gguf, text, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    os.makedirs(out, exist_ok=True)
    d, f = os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)
    start = time.time()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=f, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids = tok(open(text).read()[: 40 * n], return_tensors="pt").input_ids[:, :n]
    if ids.shape[1] < n:
        sys.exit(f"{text}: only {ids.shape[1]} tokens in the first {40 * n} characters")
    with torch.no_grad():
        logits = model(ids).logits[0].float().numpy()
    logits.astype("<f4").tofile(os.path.join(out, "logits.f32"))
    meta = {
        "model": f,
        "text": os.path.basename(text),
        "input_ids": ids[0].tolist(),
        "shape": list(logits.shape),
        "config": {
            k: getattr(model.config, k, None)
            for k in ("model_type", "layer_types", "sliding_window", "query_pre_attn_scalar")
        },
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seconds": time.time() - start,
    }
    with open(os.path.join(out, "ids.json"), "w") as fh:
        json.dump(meta, fh)
    print(json.dumps({k: meta[k] for k in ("model", "shape", "transformers", "seconds")}))


if __name__ == "__main__":
    main()
