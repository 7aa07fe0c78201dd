#!/usr/bin/env python3
"""Issue 13: a compressed-tensors export of a real model must load in its consumer and compute what
crunch computes. For each pair (EXPORT_DIR, CRUNCH_JSON) the export is loaded by transformers (its
compressed-tensors integration unpacks the weights; nothing here reads the packed tensors), the text is
tokenized by the export's own tokenizer (no special tokens), cut into non-overlapping windows of --ctx
tokens up to --max-tokens, and the mean NLL of every predicted position is computed in float32 on the
GPU. CRUNCH_JSON is `crunch eval CRUNCH_DIR --data TEXT --ctx C --max-tokens N --json` of the same
quantization written in crunch's own format (same settings, same seed, so the same codes); the two
mean NLLs must agree within --tol (1e-4, absolute, in nats). One JSON line per pair; exit 1 on any miss.

Usage: python3 scripts/check_ct_smollm2.py --text TEXT --ctx 512 --max-tokens 8192 EXPORT JSON [EXPORT JSON ...]
"""
import argparse
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def nll(model, ids, ctx, device):
    total, count = 0.0, 0
    for start in range(0, len(ids) - ctx + 1, ctx):
        x = torch.tensor([ids[start:start + ctx]], device=device)
        with torch.no_grad():
            logits = model(x).logits.float()[0]
        lp = torch.log_softmax(logits[:-1].double(), dim=-1)
        total += -lp.gather(1, x[0, 1:].unsqueeze(1)).sum().item()
        count += ctx - 1
    return total / count, count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", required=True)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("pairs", nargs="+")
    a = ap.parse_args()
    if len(a.pairs) % 2:
        sys.exit("pairs: EXPORT_DIR CRUNCH_JSON ...")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    text = open(a.text, encoding="utf-8").read()
    bad = 0
    for export, ref in zip(a.pairs[::2], a.pairs[1::2]):
        want = json.load(open(ref))
        row = {"export": export, "crunch_nll": want["nll"]}
        try:
            tok = AutoTokenizer.from_pretrained(export)
            ids = tok(text, add_special_tokens=False)["input_ids"][: a.max_tokens]
            model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).to(device).eval()
            qcfg = getattr(model.config, "quantization_config", None)
            row["quantization_config"] = type(qcfg).__name__ if qcfg is not None else None
            got, scored = nll(model, ids, a.ctx, device)
            row.update(transformers_nll=got, tokens_scored=scored, crunch_tokens_scored=want.get("tokens_scored"),
                       abs_diff=abs(got - want["nll"]))
            row["ok"] = row["abs_diff"] <= a.tol and scored == want.get("tokens_scored")
        except Exception as e:  # a file its consumer rejects is exactly what this script exists to catch
            row.update(ok=False, error=f"{type(e).__name__}: {e}"[:500])
        bad += not row["ok"]
        print(json.dumps(row), flush=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
