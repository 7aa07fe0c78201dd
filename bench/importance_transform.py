#!/usr/bin/env python3
"""Rewrites an imatrix GGUF (llama-imatrix's or crunch's `--save-imatrix`) with each tensor's
per-column importance flattened, to test how strongly the rounding should follow the
calibration text (issue 19: the advantage must hold off the calibration domain).

  pow:A  w <- m * (w / m)**A, m the tensor's mean importance (A = 1: unchanged, 0: uniform)
  mix:L  w <- w + L * m      (a uniform floor of L times the mean)

The mean of every tensor is kept, so only the shape across columns changes.
Usage: importance_transform.py IN.gguf OUT.gguf MODE   (needs the `gguf` package)
"""
import sys

import gguf
import numpy as np


def transform(w, mode):
    kind, val = mode.split(":")
    val = float(val)
    m = float(w.mean())
    if m <= 0:
        return w
    if kind == "pow":
        out = m * np.power(np.maximum(w, 0) / m, val)
        return (out * (m / out.mean())).astype(np.float32)
    if kind == "mix":
        out = w + val * m
        return (out * (m / out.mean())).astype(np.float32)
    raise SystemExit(f"unknown mode {mode}: pow:A or mix:L")


def main():
    src, dst, mode = sys.argv[1:4]
    r = gguf.GGUFReader(src)
    counts = {t.name[: -len(".counts")]: np.array(t.data, dtype=np.float32) for t in r.tensors if t.name.endswith(".counts")}
    w = gguf.GGUFWriter(dst, arch=None)
    for name in ("imatrix.datasets",):
        f = r.fields.get(name)
        if f is not None:
            w.add_array(name, [bytes(f.parts[i]).decode() for i in f.data])
    for name in ("imatrix.chunk_count", "imatrix.chunk_size"):
        f = r.fields.get(name)
        if f is not None:
            w.add_uint32(name, int(f.parts[f.data[0]][0]))
    w.add_string("general.type", "imatrix")
    for t in r.tensors:
        if not t.name.endswith(".in_sum2"):
            continue
        base = t.name[: -len(".in_sum2")]
        n = float(counts[base].reshape(-1)[0])
        mean_sq = np.array(t.data, dtype=np.float32).reshape(-1) / n
        out = transform(mean_sq, mode) * n
        w.add_tensor(t.name, out.reshape(1, -1).astype(np.float32))
        w.add_tensor(base + ".counts", counts[base].reshape(1, 1).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
