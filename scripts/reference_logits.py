#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers for crunch's tiny test models.

Usage: python3 scripts/reference_logits.py MODELS_DIR OUT_DIR [ARCH ...]

MODELS_DIR holds one folder per architecture as written by
`cargo run -p crunch-model --example make_tiny_models -- MODELS_DIR` (config.json,
model.safetensors, input.json). For each, transformers (float32, eager attention, CPU) computes
the logits of input.json's ids; OUT_DIR/<arch>.json records ids, logits and versions. These
files are committed under tests/fixtures/reference/ and checked by crunch-model's tests.
With ARCH names, only those models are run (the others' fixtures stay as they are).

Mixture-of-experts models: transformers 5 loads the per-expert tensors crunch writes (the
checkpoints' naming, `mlp.experts.E.gate_proj` / `block_sparse_moe.experts.E.w1`) through its
own conversion into fused expert parameters; the eager "experts implementation" is asked for
so the reference is the plain loop over experts.
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM


def main():
    models, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    only = set(sys.argv[3:])
    for arch in sorted(os.listdir(models)):
        if only and arch not in only:
            continue
        d = os.path.join(models, arch)
        meta = json.load(open(os.path.join(d, "input.json")))
        cfg = json.load(open(os.path.join(d, "config.json")))
        extra = {}
        if any(k in cfg for k in ("num_experts", "num_local_experts")):
            extra["experts_implementation"] = "eager"
        model = AutoModelForCausalLM.from_pretrained(
            d, dtype=torch.float32, attn_implementation="eager", **extra
        ).eval()
        ids = torch.tensor([meta["input_ids"]])
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        rec = {
            "arch": arch,
            "weights_fnv1a": meta["weights_fnv1a"],
            "input_ids": meta["input_ids"],
            "shape": list(logits.shape),
            "logits": [float(x) for x in logits.flatten().tolist()],
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }
        with open(os.path.join(out, f"{arch}.json"), "w") as f:
            json.dump(rec, f)
        print(arch, tuple(logits.shape), float(logits.abs().max()))


if __name__ == "__main__":
    main()
