#!/usr/bin/env python3
"""Writes a large BF16 safetensors file (default 4 GiB) for the bounded-memory check: the
BF16 MiniLM weights tiled to the requested size, as one tensor. Streams; needs no RAM to speak
of. Usage: big_file.py SRC_BF16.safetensors OUT.safetensors [GIB]"""
import json, os, struct, sys

src, out = sys.argv[1], sys.argv[2]
gib = float(sys.argv[3]) if len(sys.argv) > 3 else 4.0
with open(src, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    f.seek(8 + n)
    body = f.read()
body = body[: len(body) // 2 * 2]
elems = int(gib * (1 << 30)) // 2
header = json.dumps({"w": {"dtype": "BF16", "shape": [elems], "data_offsets": [0, 2 * elems]}}).encode()
header += b" " * ((8 - len(header) % 8) % 8)
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header)
    left = 2 * elems
    while left:
        piece = body[: min(left, len(body))]
        f.write(piece)
        left -= len(piece)
print(os.path.getsize(out))
