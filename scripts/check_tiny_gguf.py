#!/usr/bin/env python3
"""Checks the tiny GGUF files crunch's tests load against an independent reader of llama.cpp's
conventions: transformers' own GGUF loading (gguf-py underneath), which maps llama.cpp's names
back to Hugging Face's, undoes the q/k permutation and Gemma's 1 + w norms, and unstacks
`ffn_*_exps` experts. Every tensor it reads must equal the safetensors model's.

    cargo run -p crunch-model --example make_tiny_models -- /tmp/tiny
    python3 scripts/check_tiny_gguf.py /tmp/tiny gemma3 phi3 qwen3_moe qwen3 llama

Prints one line per model (tensors compared, largest difference, tensors on either side the
other lacks) and exits 1 if any tensor differs by more than 1e-6 or fails to load.
"""
import sys

import torch
from transformers import AutoModelForCausalLM
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint


def main():
    root, bad = sys.argv[1], 0
    for arch in sys.argv[2:]:
        d = f"{root}/{arch}"
        extra = {"experts_implementation": "eager"} if "moe" in arch or arch == "mixtral" else {}
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, **extra)
        sd = model.state_dict()
        try:
            got = load_gguf_checkpoint(f"{d}/tiny.gguf", return_tensors=True, model_to_load=model)
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"{arch}: transformers cannot read it: {type(e).__name__}: {str(e)[:200]}")
            bad += 1
            continue
        worst, extra_names = 0.0, []
        for name, t in got["tensors"].items():
            if name not in sd:
                extra_names.append(name)
                continue
            worst = max(worst, float((t.float() - sd[name]).abs().max()))
        unread = [n for n in sd if n not in got["tensors"]]
        print(f"{arch}: {len(got['tensors'])} tensors, max |diff| {worst:.3g}, "
              f"unknown to the model {extra_names}, not in the GGUF (as transformers reads it) {unread}")
        bad += worst > 1e-6 or bool(extra_names)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
