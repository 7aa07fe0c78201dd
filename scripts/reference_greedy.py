#!/usr/bin/env python3
"""Greedy continuations from Hugging Face transformers for crunch's tiny test models.

Usage: python3 scripts/reference_greedy.py MODELS_DIR OUT_DIR

MODELS_DIR is what `cargo run -p crunch-model --example make_tiny_models -- MODELS_DIR` writes
(the same models scripts/reference_logits.py uses). For each architecture the first 8 ids of
input.json are the prompt; 32 tokens are then chosen greedily (argmax of the last position's
logits, the whole sequence recomputed at every step: no cache, the plainest reading of greedy
decoding). OUT_DIR/<arch>_greedy.json records the prompt, the 32 ids and, per step, the gap
between the best and second-best logit relative to the largest |logit| (a step whose gap is
below crunch's logit tolerance could legitimately flip; the test reports it).
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

PROMPT = 8
NEW = 32


def main():
    models, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for arch in sorted(os.listdir(models)):
        d = os.path.join(models, arch)
        meta = json.load(open(os.path.join(d, "input.json")))
        model = AutoModelForCausalLM.from_pretrained(
            d, torch_dtype=torch.float32, attn_implementation="eager"
        ).eval()
        ids = list(meta["input_ids"][:PROMPT])
        gaps = []
        with torch.no_grad():
            for _ in range(NEW):
                logits = model(torch.tensor([ids])).logits[0, -1].double()
                top = torch.topk(logits, 2).values
                gaps.append(float((top[0] - top[1]) / logits.abs().max()))
                ids.append(int(torch.argmax(logits)))
        rec = {
            "arch": arch,
            "weights_fnv1a": meta["weights_fnv1a"],
            "prompt_ids": ids[:PROMPT],
            "generated_ids": ids[PROMPT:],
            "relative_gaps": gaps,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }
        with open(os.path.join(out, f"{arch}_greedy.json"), "w") as f:
            json.dump(rec, f)
        print(arch, ids[PROMPT:], f"smallest gap {min(gaps):.2e}")


if __name__ == "__main__":
    main()
