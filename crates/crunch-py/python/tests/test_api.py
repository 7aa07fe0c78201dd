"""The API on tiny models (made in code) and on the demo model: each call against the crunch
binary's --json output for the same arguments."""

import filecmp
import os

import numpy as np
import pytest

import crunch
from conftest import TEXT, cli

Q = "model.layers.0.self_attn.q_proj"


def test_info(tiny):
    i = crunch.info(tiny)
    assert i["architecture"] == cli("info", tiny)["architecture"]
    assert i["layers"] == 2 and i["parameters"] > 0


def test_evaluate_matches_cli(tiny, text):
    r = crunch.evaluate(tiny, text, ctx=64)
    c = cli("eval", tiny, "--data", text, "--ctx", 64)
    assert abs(r.nll - c["nll"]) <= 1e-9
    assert r.ppl == pytest.approx(c["ppl"], rel=1e-12)
    assert r.tokens == c["tokens_scored"] and r.kl is None
    assert "nll=" in repr(r)


def test_quantize_and_compare(tiny, text, tmp_path):
    out = tmp_path / "q4"
    s = crunch.quantize(tiny, out, method="gptq", bits=4, group_size=32, calib=text,
                        calib_samples=4, calib_len=32)
    assert s["layers_compressed"] == 14 and 4 < s["bits_per_weight"] < 5
    assert (out / "recipe.toml").exists()
    r = crunch.evaluate(out, text, ctx=64, base=tiny)
    assert r.kl is not None and r.kl >= 0 and 0 <= r.top1 <= 1
    c = cli("eval", out, "--data", text, "--ctx", 64, "--base", tiny)
    assert abs(r.nll - c["nll"]) <= 1e-9 and abs(r.kl - c["kl"]) <= 1e-9


def test_prune_lowrank_compress(tiny, text, tmp_path):
    p = crunch.prune(tiny, tmp_path / "p", method="magnitude", sparsity=0.5)
    assert p["sparsity"] == pytest.approx(0.5, abs=0.01)
    lr = crunch.lowrank(tiny, tmp_path / "lr", keep=0.5, method="svd")
    assert lr["params_kept"] <= 0.51
    recipe = {"stage": [{"method": "rtn", "bits": 8, "group_size": 32}]}
    a = crunch.compress(tiny, tmp_path / "a", recipe=recipe)
    assert a["layers_compressed"] == 14
    # The recipe written beside the output reproduces it byte for byte.
    crunch.compress(tiny, tmp_path / "b", recipe=tmp_path / "a" / "recipe.toml")
    cmp = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only


def test_compress_target_size(tiny, text, tmp_path):
    s = crunch.compress(tiny, tmp_path / "t", target_bpw=5, calib=text, calib_samples=8,
                        calib_len=32, levels="4,8", level_group_size=32, generations=2,
                        offspring=4, selection="2x2,4x1", kl_windows=4,
                        search_cache=tmp_path / "cache")
    assert s["layers_compressed"] == 14 and "search" in s


def test_pack_unpack(tiny, tmp_path):
    r = crunch.pack(tiny / "model.safetensors", tmp_path / "m.crpk")
    assert os.path.exists(tmp_path / "m.crpk") and r is not None
    crunch.unpack(tmp_path / "m.crpk", tmp_path / "m.safetensors")
    assert filecmp.cmp(tiny / "model.safetensors", tmp_path / "m.safetensors", shallow=False)


def test_tensors_and_weights(tiny, text, tmp_path):
    t = crunch.tensors(tiny)
    assert t[Q + ".weight"] == (64, 64)
    w = crunch.weight(tiny, Q + ".weight")
    assert w.dtype == np.float32 and w.shape == (64, 64) and w.flags["C_CONTIGUOUS"]
    out = tmp_path / "rtn"
    crunch.quantize(tiny, out, method="rtn", bits=4, group_size=32)
    q = crunch.quantized_layer(out, Q)
    assert q["codes"].dtype == np.uint8 and q["codes"].shape == (64, 64)
    assert q["scales"].shape == (64, 2) and q["bits"] == 4 and q["group_size"] == 32
    # What the model runs with is the dequantized layer.
    assert np.array_equal(crunch.weight(out, Q + ".weight"), q["weight"])
    assert np.abs(q["weight"] - w).max() < 0.1


@pytest.mark.parametrize("opts", [
    dict(bits=4, group_size=32),
    dict(bits=3, group_size=0, sym=True),
    dict(bits=4, group_size=32, act_order=False, mse=False, damp=0.05),
])
def test_gptq_matches_cli_bit_for_bit(tiny, text, tmp_path, opts):
    """crunch.gptq on the layer's weight and calibration Hessian gives the codes, scales and
    zero points `crunch quantize --method gptq` stored for that layer."""
    calib = dict(calib=text, calib_samples=4, calib_len=32, seed=3)
    out = tmp_path / "g"
    flags = dict(opts)
    if flags.pop("group_size") == 0:
        flags["group_size"] = "channel"
    else:
        flags["group_size"] = opts["group_size"]
    crunch.quantize(tiny, out, method="gptq", **flags, **calib)
    stored = crunch.quantized_layer(out, Q)
    h = crunch.hessians(tiny, text, 4, 32, 3, layers=[Q])[Q]
    assert h.shape == (64, 64) and np.allclose(h, h.T)
    got = crunch.gptq(crunch.weight(tiny, Q + ".weight"), h, **opts)
    for k in ("codes", "scales", "zeros", "weight"):
        assert np.array_equal(got[k], stored[k]), k


def test_weight_as_torch(tiny):
    torch = pytest.importorskip("torch")
    t = crunch.weight(tiny, Q + ".weight", torch=True)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and tuple(t.shape) == (64, 64)


def test_generate_tiny(tiny):
    m = crunch.load(tiny)
    g = m.generate("The quick", max_tokens=8)
    assert isinstance(g, str) and g.record["generated_tokens"] >= 1
    assert g == m.generate("The quick", max_tokens=8)  # greedy: the same text


def test_smollm2_generate_and_eval_match_cli(smollm2, tmp_path):
    g = crunch.load(smollm2).generate("The capital of France is", max_tokens=12)
    c = cli("generate", smollm2, "--prompt", "The capital of France is", "--max-tokens", 12)
    assert g == c["text"] and "Paris" in g
    data = tmp_path / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    r = crunch.evaluate(smollm2, data, ctx=128, max_tokens=512)
    e = cli("eval", smollm2, "--data", data, "--ctx", 128, "--max-tokens", 512)
    assert abs(r.nll - e["nll"]) <= 1e-9 and r.tokens == e["tokens_scored"]
    assert crunch.info(smollm2)["architecture"] == "llama"


def test_help():
    assert "--group-size" in crunch.cli_help("quantize")
