#!/usr/bin/env python3
"""Checks crunch's GGUF output against gguf-py (the `gguf` package on PyPI), an independent
reader and decoder: gguf-py must parse crunch's whole-model file and its dequantization of every
tensor, in every type crunch writes or reads, must equal crunch's bit for bit.

Usage: check_gguf_py.py DIR   (DIR as written by `cargo run -p crunch-export --example
gguf_check_files -- DIR`: model.gguf, blocks.gguf, expected.gguf)
"""
import sys
from collections import defaultdict

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main(d):
    expected = {t.name: np.asarray(t.data, dtype=np.float32).reshape(-1)
                for t in GGUFReader(f"{d}/expected.gguf").tensors}
    failures, per_type = [], defaultdict(int)
    for prefix in ("model", "blocks"):
        reader = GGUFReader(f"{d}/{prefix}.gguf")
        if prefix == "model":
            arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
            tokens = len(reader.fields["tokenizer.ggml.tokens"].data)
            assert arch == "llama" and tokens == 256, (arch, tokens)
        for t in reader.tensors:
            ours = expected[f"{prefix}/{t.name}"]
            theirs = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
            name = t.tensor_type.name
            if theirs.shape != ours.shape or not np.array_equal(
                    theirs.view(np.uint32), ours.view(np.uint32)):
                bad = int(np.sum(theirs.view(np.uint32) != ours.view(np.uint32))) \
                    if theirs.shape == ours.shape else -1
                failures.append(f"{prefix}/{t.name} ({name}): {bad} values differ")
            per_type[name] += 1
    for name in sorted(per_type):
        print(f"gguf-py {name}: {per_type[name]} tensor(s) bit-identical" if not any(
            f"({name})" in f for f in failures) else f"gguf-py {name}: MISMATCH")
    for f in failures:
        print("MISMATCH", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
