#!/usr/bin/env python3
"""The benchmark protocol's data split (DEVELOPERS.md): calibrate on the last 40% of the lines of
wiki.test.raw, evaluate on the first 60%. Writes OUT_DIR/calib.txt and OUT_DIR/eval.txt and
prints their paths as JSON.

Usage: bench/protocol.py [WIKI_TEST_RAW] [OUT_DIR]
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def split(src, out):
    with open(src, encoding="utf-8") as f:
        lines = f.readlines()
    cut = int(len(lines) * 0.6)
    os.makedirs(out, exist_ok=True)
    paths = {"eval": os.path.join(out, "eval.txt"), "calib": os.path.join(out, "calib.txt")}
    with open(paths["eval"], "w", encoding="utf-8") as f:
        f.writelines(lines[:cut])
    with open(paths["calib"], "w", encoding="utf-8") as f:
        f.writelines(lines[cut:])
    return paths


if __name__ == "__main__":
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "../shared/data/wikitext-2-raw/wiki.test.raw")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, ".cache/bench")
    print(json.dumps(split(src, out)))
