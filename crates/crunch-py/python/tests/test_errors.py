"""Each class of bad input raises its CrunchError subclass with crunch's message (never a
crash), and Ctrl-C interrupts a long call cleanly."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import crunch


def test_hierarchy():
    for e in (crunch.FormatError, crunch.RecipeError, crunch.InputError, crunch.OutputError):
        assert issubclass(e, crunch.CrunchError) and issubclass(e, Exception)


def test_format_errors(tmp_path):
    with pytest.raises(crunch.FormatError, match="does-not-exist"):
        crunch.info(tmp_path / "does-not-exist")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\xff" * 60)
    with pytest.raises(crunch.FormatError, match="junk.gguf"):
        crunch.info(junk)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(crunch.FormatError, match="config.json"):
        crunch.tensors(bad)


def test_format_error_truncated_model(tiny, tmp_path):
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_bytes((tiny / "config.json").read_bytes())
    data = (tiny / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(crunch.FormatError, match="model.safetensors"):
        crunch.weight(cut, "model.layers.0.self_attn.q_proj.weight")


def test_recipe_errors(tiny, tmp_path):
    with pytest.raises(crunch.RecipeError, match="bitz"):
        crunch.compress(tiny, tmp_path / "o", recipe={"stage": [{"method": "rtn", "bitz": 4}]})
    with pytest.raises(crunch.RecipeError, match="nonsense"):
        crunch.compress(tiny, tmp_path / "o", recipe={"stage": [{"method": "nonsense"}]})
    toml = tmp_path / "r.toml"
    toml.write_text("[[stage]]\nmethod = 'rtn'\nbits = 4\n[[stage]]\nmethod = 'rtn'\nbits = 8\n")
    with pytest.raises(crunch.RecipeError, match="stage 1"):
        crunch.compress(tiny, tmp_path / "o", recipe=toml)
    # A stage that does not fit a layer: 128-column groups in 64 columns.
    with pytest.raises(crunch.RecipeError, match="group size 128"):
        crunch.quantize(tiny, tmp_path / "o", method="rtn", bits=4)
    assert not (tmp_path / "o").exists()


def test_input_errors(tiny, text, tmp_path):
    with pytest.raises(crunch.InputError, match="--bogus"):
        crunch.quantize(tiny, tmp_path / "o", bogus=1)
    with pytest.raises(crunch.InputError, match="ctx"):
        crunch.evaluate(tiny, text, ctx=1)
    with pytest.raises(crunch.InputError, match="missing.txt"):
        crunch.evaluate(tiny, tmp_path / "missing.txt")
    with pytest.raises(crunch.InputError, match="bits"):
        crunch.quantize(tiny, tmp_path / "o", method="rtn", bits=11)
    with pytest.raises(crunch.InputError, match="calib"):
        crunch.quantize(tiny, tmp_path / "o", method="gptq", group_size=32)
    with pytest.raises(crunch.InputError, match="no tensor"):
        crunch.weight(tiny, "model.nothing.weight")
    with pytest.raises(crunch.InputError, match="hessian"):
        crunch.gptq(np.ones((8, 32), np.float32), np.eye(16, dtype=np.float32))
    with pytest.raises(crunch.InputError, match="bits"):
        crunch.gptq(np.ones((8, 32), np.float32), np.eye(32, dtype=np.float32), bits=9)
    with pytest.raises(crunch.InputError, match="2-D"):
        crunch.gptq(np.ones(32, np.float32), np.eye(32, dtype=np.float32))
    m = crunch.load(tiny)
    with pytest.raises(crunch.InputError, match="max-tokens"):
        m.generate("hi", max_tokens=0)


def test_output_errors(tiny, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep me")
    with pytest.raises(crunch.OutputError, match="mine"):
        crunch.quantize(tiny, mine, method="rtn", bits=4, group_size=32)
    with pytest.raises(crunch.OutputError):
        crunch.quantize(tiny, mine, method="rtn", bits=4, group_size=32, force=True)
    assert (mine / "precious.txt").read_text() == "keep me"
    with pytest.raises(crunch.OutputError):
        crunch.quantize(tiny, tiny, method="rtn", bits=4, group_size=32, force=True)


def test_gptq_non_finite_is_an_error_not_a_crash():
    h = np.eye(32, dtype=np.float32)
    h[3, 3] = np.nan
    with pytest.raises(crunch.CrunchError, match="(?i)finite"):
        crunch.gptq(np.ones((8, 32), np.float32), h, group_size=32)


def _interrupt_after(seconds):
    t = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    t.start()
    return t


def test_interrupt_long_call_removes_output(smollm2, tmp_path):
    """SIGINT during a long quantization: KeyboardInterrupt within seconds, no output left."""
    out = tmp_path / "q"
    t = _interrupt_after(1.5)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        crunch.quantize(smollm2, out, method="gptq", bits=4, calib="self:4x64")
    t.join()
    assert time.monotonic() - start < 60
    assert os.listdir(tmp_path) == []
    # The next call runs normally.
    assert crunch.info(smollm2)["layers"] == 30


def test_interrupt_tiny(tiny, tmp_path):
    """The same on a tiny model, without the demo model: a long evaluation is interrupted."""
    data = tmp_path / "long.txt"
    data.write_text("abcdefgh " * 400_000)
    t = _interrupt_after(1.0)
    with pytest.raises(KeyboardInterrupt):
        crunch.evaluate(tiny, data, ctx=64)
    t.join()
    assert crunch.info(tiny)["layers"] == 2
