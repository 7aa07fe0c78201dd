#!/usr/bin/env python3
"""Reference scores of the real SmolLM2-135M-Instruct GGUF from Hugging Face transformers.

Usage: python3 scripts/reference_smollm2.py MODEL.gguf TEXT OUT.json [--ctx 512]

transformers dequantizes the GGUF itself (its own Q4_1/Q8_0 code, its own q/k un-permutation)
and builds its own tokenizer from the GGUF metadata, so everything here is independent of
crunch. It scores the first window of TEXT (no special tokens, no BOS) in float32 and records
the token ids, the NLL of every predicted position, and the top-5 logits of each position.
Needs the `gguf` package (carried as a wheel to the GPU machine, which has no network).
"""
import argparse
import json
import os

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("texts", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ctx", type=int, default=512)
    a = ap.parse_args()
    d, f = os.path.split(os.path.abspath(a.gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    records = []
    for path in a.texts:
        text = open(path, encoding="utf-8").read()
        ids = tok(text, add_special_tokens=False)["input_ids"][: a.ctx]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(ids[1:])
        nll = -logp[:-1].gather(1, target[:, None])[:, 0]
        top = logits.topk(5, dim=-1)
        records.append({
            "text": os.path.basename(path),
            "input_ids": ids,
            "nll": nll.tolist(),
            "mean_nll": float(nll.mean()),
            "top1_accuracy": float((logits[:-1].argmax(-1) == target).double().mean()),
            "top5_ids": top.indices.tolist(),
            "top5_logits": top.values.tolist(),
        })
        print(path, len(ids), float(nll.mean()))
    json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
               "ctx": a.ctx, "records": records}, open(a.out, "w"))


if __name__ == "__main__":
    main()
