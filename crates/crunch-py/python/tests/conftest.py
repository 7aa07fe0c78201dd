"""Fixtures: tiny models written by crunch's own test-model writer, a calibration text, the
crunch binary the results are compared with (CRUNCH_BIN) and the demo model SmolLM2
(CRUNCH_SMOLLM2_GGUF, set by scripts/test through scripts/fetch-smollm2)."""

import json
import os
import subprocess

import pytest

import crunch

TEXT = (
    "The quick brown fox jumps over the lazy dog. A stitch in time saves nine. "
    "Every cloud has a silver lining, and all that glitters is not gold. "
) * 30


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny") / "llama"
    crunch._crunch._tiny_model(str(d), "llama", 0)
    return d


@pytest.fixture(scope="session")
def text(tmp_path_factory):
    p = tmp_path_factory.mktemp("text") / "calib.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def smollm2():
    p = os.environ.get("CRUNCH_SMOLLM2_GGUF")
    if not p or not os.path.exists(p):
        pytest.skip("CRUNCH_SMOLLM2_GGUF not set (scripts/test sets it)")
    return p


def cli(*args):
    """Runs the crunch binary with --json and returns its record."""
    exe = os.environ.get("CRUNCH_BIN")
    if not exe or not os.path.exists(exe):
        pytest.skip("CRUNCH_BIN not set (scripts/check-python sets it)")
    out = subprocess.run(
        [exe, *map(str, args), "--json"], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])
