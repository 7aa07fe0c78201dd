#!/usr/bin/env python3
"""Check crunch's exported layouts against Hugging Face transformers.

    python3 scripts/check_export.py EXPORT_DIR REFERENCE_JSON [EXPORT_DIR REFERENCE_JSON ...]

EXPORT_DIR is a model written by `crunch quantize --format compressed-tensors|gptq|gptq-v2`;
REFERENCE_JSON holds the logits crunch computes for the same quantized model (its own format)
on fixed token ids, made by

    cargo run --release -p crunch-export --example reference_logits -- CRUNCH_DIR IDS_JSON OUT

For each pair the script computes the export's logits on the reference's ids in float32 on the
CPU (eager attention, as scripts/reference_logits.py) and prints one JSON line with the relative error max|a - b| / max|b| (target: < 1e-3,
`--tol`). It exits 1 if any pair misses the target or fails to load.

compressed-tensors ("quant_method": "compressed-tensors"): the directory is loaded with
`AutoModelForCausalLM.from_pretrained(dir, dtype=torch.float32)`, so transformers' own
integration and the `compressed-tensors` package unpack `weight_packed`, `weight_scale` and
`weight_zero_point`. Nothing here touches the packed tensors. The line reports which classes
the quantized Linear layers are after loading and after the forward pass (compressed-tensors
decompresses them on the first forward).

GPTQ ("quant_method": "gptq"): transformers loads GPTQ checkpoints only through gptqmodel /
optimum, which cannot be installed on the GPU machine. So this script is the GPTQ loader: it
dequantizes `qweight`, `qzeros`, `scales` and `g_idx` itself following AutoGPTQ's unpacking
convention (2/4/8 bits: 32/bits fields per int32, lowest bits first; 3 bits: 32 fields in 3
words with fields 10 and 21 split across words; v1 `checkpoint_format: "gptq"` zero points
stored minus one and read back as field + 1, v2 stored as they are), puts the dense weights into
the unquantized transformers architecture and compares its logits. That checks the tensors'
layout and conventions, not a GPTQ kernel.
"""

import argparse
import collections
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM


def unpack_gptq(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Unpacks int32 [words, m] along dim 0 into [words * 32 / bits, m] unsigned fields."""
    p = packed.to(torch.int64) & 0xFFFFFFFF
    m = p.shape[1]
    if bits in (2, 4, 8):
        shifts = torch.arange(0, 32, bits, dtype=torch.int64).view(1, -1, 1)
        return ((p.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1, m)
    if bits != 3:
        raise ValueError(f"GPTQ bits {bits} not in 2, 3, 4, 8")
    p = p.view(-1, 3, m)
    w0, w1, w2 = p[:, 0], p[:, 1], p[:, 2]
    fields = [(w0 >> (3 * k)) & 7 for k in range(10)]
    fields.append(((w0 >> 30) & 0x3) | ((w1 << 2) & 0x4))
    fields += [(w1 >> (3 * k + 1)) & 7 for k in range(10)]
    fields.append(((w1 >> 31) & 0x1) | ((w2 << 1) & 0x6))
    fields += [(w2 >> (3 * k + 2)) & 7 for k in range(10)]
    return torch.stack(fields, dim=1).reshape(-1, m)


def gptq_dense_state(export_dir: str, qcfg: dict) -> tuple[dict, int]:
    """The checkpoint with every GPTQ layer replaced by its dequantized float32 `.weight`,
    and how many layers that was."""
    bits = int(qcfg["bits"])
    fmt = qcfg.get("checkpoint_format", qcfg.get("format", "gptq"))
    if fmt not in ("gptq", "gptq_v2"):
        raise ValueError(f"checkpoint_format {fmt!r}")
    state = load_file(os.path.join(export_dir, "model.safetensors"))
    prefixes = [k[: -len(".qweight")] for k in state if k.endswith(".qweight")]
    for p in prefixes:
        qweight = state.pop(p + ".qweight")
        qzeros = state.pop(p + ".qzeros")
        scales = state.pop(p + ".scales").to(torch.float32)  # [groups, out]
        g_idx = state.pop(p + ".g_idx").to(torch.int64)  # [in]
        codes = unpack_gptq(qweight, bits)  # [in, out]
        zeros = unpack_gptq(qzeros.t().contiguous(), bits).t()  # [groups, out]
        if fmt == "gptq":
            zeros = zeros + 1  # v1 stores zero - 1
        w_t = (codes - zeros[g_idx]).to(torch.float32) * scales[g_idx]  # [in, out]
        state[p + ".weight"] = w_t.t().contiguous()
    return state, len(prefixes)


def linear_summary(model) -> dict:
    """Class, quantization status and parameter names of the block projections, counted."""
    counts = collections.Counter()
    for name, m in model.named_modules():
        if name.endswith("_proj") or name == "lm_head":
            cls = f"{type(m).__module__}.{type(m).__name__}"
            status = getattr(m, "quantization_status", None)
            status = getattr(status, "value", status)
            params = ",".join(sorted(n for n, _ in m.named_parameters(recurse=False)))
            counts[f"{cls} status={status} params=[{params}]"] += 1
    return dict(counts)


def check(export_dir: str, reference: str, tol: float) -> dict:
    with open(os.path.join(export_dir, "config.json")) as f:
        qcfg = json.load(f).get("quantization_config") or {}
    with open(reference) as f:
        ref = json.load(f)
    ids = torch.tensor([ref["ids"]], dtype=torch.long)
    want = torch.tensor(ref["logits"], dtype=torch.float32)
    method = qcfg.get("quant_method")
    out = {"export": export_dir, "reference": reference, "quant_method": method}
    if method == "compressed-tensors":
        model, info = AutoModelForCausalLM.from_pretrained(
            export_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
        )
        out["loading_info"] = {k: sorted(map(str, v)) for k, v in info.items() if v}
        out["linears_after_load"] = linear_summary(model)
        model.eval()
        with torch.no_grad():
            got = model(ids).logits[0].float()
        out["linears_after_forward"] = linear_summary(model)
    elif method == "gptq":
        state, n = gptq_dense_state(export_dir, qcfg)
        config = AutoConfig.from_pretrained(export_dir)
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # load the plain architecture
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = set()
        if getattr(config, "tie_word_embeddings", False):
            tied = {"lm_head.weight"}
        if set(missing) - tied or unexpected:
            raise RuntimeError(f"missing {missing}, unexpected {unexpected}")
        if tied:
            model.tie_weights()
        out["gptq"] = {
            "layers_dequantized": n,
            "bits": qcfg.get("bits"),
            "group_size": qcfg.get("group_size"),
            "sym": qcfg.get("sym"),
            "desc_act": qcfg.get("desc_act"),
            "checkpoint_format": qcfg.get("checkpoint_format"),
        }
        model.eval()
        with torch.no_grad():
            got = model(ids).logits[0].float()
    else:
        raise ValueError(f"{export_dir}: quant_method {method!r} is neither compressed-tensors nor gptq")
    if got.shape != want.shape:
        raise ValueError(f"logits shape {tuple(got.shape)} vs reference {tuple(want.shape)}")
    max_abs = (got - want).abs().max().item()
    rel = max_abs / want.abs().max().item()
    out.update(
        tokens=len(ref["ids"]),
        max_abs_err=max_abs,
        rel_err=rel,
        tol=tol,
        argmax_agree=float((got.argmax(-1) == want.argmax(-1)).float().mean()),
        ok=rel < tol,
    )
    return out


def print_versions():
    """One JSON line with the versions of the consumers the checks run."""
    try:
        import compressed_tensors

        ct_version = compressed_tensors.__version__
    except ImportError:
        ct_version = None
    print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                      "compressed_tensors": ct_version}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", nargs="+", metavar="EXPORT_DIR REFERENCE_JSON")
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()
    if len(args.pairs) % 2:
        ap.error("give EXPORT_DIR REFERENCE_JSON pairs")
    print_versions()
    failed = 0
    for export_dir, reference in zip(args.pairs[::2], args.pairs[1::2]):
        try:
            result = check(export_dir, reference, args.tol)
        except Exception as e:  # report and go on to the next pair
            result = {"export": export_dir, "ok": False, "error": f"{type(e).__name__}: {e}"}
        failed += not result["ok"]
        print(json.dumps(result), flush=True)
    total = len(args.pairs) // 2
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
