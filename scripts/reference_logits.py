#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers for crunch's tiny test models.

Usage: python3 scripts/reference_logits.py MODELS_DIR OUT_DIR

MODELS_DIR holds one folder per architecture as written by
`cargo run -p crunch-model --example make_tiny_models -- MODELS_DIR` (config.json,
model.safetensors, input.json). For each, transformers (float32, eager attention, CPU) computes
the logits of input.json's ids; OUT_DIR/<arch>.json records ids, logits and versions. These
files are committed under tests/fixtures/reference/ and checked by crunch-model's tests.
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
    for arch in sorted(os.listdir(models)):
        d = os.path.join(models, arch)
        meta = json.load(open(os.path.join(d, "input.json")))
        model = AutoModelForCausalLM.from_pretrained(
            d, torch_dtype=torch.float32, attn_implementation="eager"
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
