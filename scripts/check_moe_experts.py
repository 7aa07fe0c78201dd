#!/usr/bin/env python3
"""Check the experts of a mixture-of-experts compressed-tensors export as transformers loads them.

    python3 scripts/check_moe_experts.py EXPORT_DIR [EXPORT_DIR ...]

EXPORT_DIR is a Qwen3-MoE or Mixtral model written by `crunch quantize --format
compressed-tensors` (symmetric 4- or 8-bit experts, as crunch's writer requires for MoE).
transformers (5.x) reads the per-expert `experts.E.{gate,up,down}_proj.weight_packed` (Mixtral:
`w1`, `w3`, `w2`), decompresses them through compressed-tensors and stacks them into fused
parameters (`gate_up_proj [E, 2I, H]`, `down_proj [E, H, I]`). This script compares every
stacked expert matrix with the codes × scales read straight from the file following the
pack-quantized description (int32 words, `32 / bits` codes per word, lowest bits first, code −
2^(bits−1) for symmetric weights, one scale per group of columns), so a wrong expert order, a
gate/up swap or a misread packing shows as an error of order 1. transformers keeps the
decompressed experts in the scales' dtype (float16), so the expected difference is float16
rounding: max|Δ| / max|w| per matrix below 2⁻¹⁰ (`--tol`).

`scripts/check_export.py` compares the logits of the same export with crunch's.
Prints one JSON line per export; exits 1 if any misses the tolerance.
"""

import argparse
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def dequantize(state: dict, prefix: str, bits: int) -> torch.Tensor:
    packed = state[prefix + ".weight_packed"].to(torch.int64) & 0xFFFFFFFF
    rows = packed.shape[0]
    shifts = torch.arange(0, 32, bits, dtype=torch.int64)
    codes = ((packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)).reshape(rows, -1)
    cols = int(state[prefix + ".weight_shape"][1])
    codes = codes[:, :cols].to(torch.float32) - (1 << (bits - 1))
    scale = state[prefix + ".weight_scale"].to(torch.float32)
    group = -(-cols // scale.shape[1])
    return codes * scale.repeat_interleave(group, dim=1)[:, :cols]


def check(export_dir: str, tol: float) -> dict:
    config = json.load(open(f"{export_dir}/config.json"))
    weights = config["quantization_config"]["config_groups"]["group_0"]["weights"]
    bits = int(weights["num_bits"])
    if not weights["symmetric"]:
        raise ValueError("asymmetric experts (crunch refuses those for MoE exports)")
    model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32)
    state = load_file(f"{export_dir}/model.safetensors")
    mixtral = config["model_type"] == "mixtral"
    parts = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    worst, matrices, dtype = 0.0, 0, None
    for li, layer in enumerate(model.model.layers):
        experts = getattr(layer.mlp, "experts", None)
        if experts is None or not hasattr(experts, "gate_up_proj"):
            continue  # a dense MLP
        dtype = str(experts.gate_up_proj.dtype)
        base = f"model.layers.{li}." + ("block_sparse_moe" if mixtral else "mlp") + ".experts"
        for e in range(experts.gate_up_proj.shape[0]):
            gate, up, down = (dequantize(state, f"{base}.{e}.{p}", bits) for p in parts)
            pairs = [
                (experts.gate_up_proj[e], torch.cat([gate, up])),
                (experts.down_proj[e], down),
            ]
            for loaded, want in pairs:
                err = (loaded.float() - want).abs().max() / want.abs().max()
                worst = max(worst, err.item())
                matrices += 1
    return {
        "export": export_dir,
        "model_type": config["model_type"],
        "bits": bits,
        "loaded_experts_dtype": dtype,
        "stacked_matrices": matrices,
        "max_rel_diff": worst,
        "tol": tol,
        "ok": matrices > 0 and worst < tol,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("exports", nargs="+")
    ap.add_argument("--tol", type=float, default=2.0**-10)
    args = ap.parse_args()
    failed = 0
    for d in args.exports:
        try:
            line = check(d, args.tol)
        except Exception as e:  # noqa: BLE001 - reported, counted as a failure
            line = {"export": d, "error": repr(e), "ok": False}
        print(json.dumps(line), flush=True)
        failed += not line["ok"]
    print(f"{len(args.exports) - failed} passed, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
