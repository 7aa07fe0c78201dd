#!/usr/bin/env python3
"""The Python package against the CLI (issue 18): prints JSON lines.

- ``import``: the cumulative import time of ``crunch`` (``python -X importtime``, best of 5);
- ``eval``: ``crunch.evaluate(MODEL, DATA, ...)`` in a fresh interpreter and ``crunch eval
  MODEL --data DATA ... --json`` with the same arguments: both NLLs and their difference.

Run with the interpreter the wheel is installed in, e.g.
    .cache/py-venv/bin/python bench/python_api.py --model "$(scripts/fetch-smollm2)" \
        --data wiki.test.raw --ctx 2048 --max-tokens 16384 --crunch target/release/crunch
"""

import argparse
import json
import re
import subprocess
import sys


def import_seconds() -> float:
    best = float("inf")
    for _ in range(5):
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import crunch"],
            capture_output=True, text=True, check=True,
        ).stderr
        # "import time: self [us] | cumulative | imported package"
        for line in err.splitlines():
            m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| crunch$", line)
            if m:
                best = min(best, int(m.group(1)) / 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=16384)
    ap.add_argument("--crunch", default="target/release/crunch")
    a = ap.parse_args()

    print(json.dumps({"bench": "import", "seconds": import_seconds()}), flush=True)

    code = (
        "import crunch, json; "
        f"r = crunch.evaluate({a.model!r}, {a.data!r}, ctx={a.ctx}, max_tokens={a.max_tokens}); "
        "print(r); print(json.dumps(r.record))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    py = json.loads(out.stdout.strip().splitlines()[-1])
    cli = subprocess.run(
        [a.crunch, "eval", a.model, "--data", a.data, "--ctx", str(a.ctx),
         "--max-tokens", str(a.max_tokens), "--json"],
        capture_output=True, text=True, check=True,
    )
    c = json.loads(cli.stdout.strip().splitlines()[-1])
    print(json.dumps({
        "bench": "eval", "model": a.model, "ctx": a.ctx, "max_tokens": a.max_tokens,
        "python_nll": py["nll"], "cli_nll": c["nll"], "abs_diff": abs(py["nll"] - c["nll"]),
        "python_seconds": py["seconds"], "cli_seconds": c["seconds"],
        "tokens": py["tokens_scored"], "printed": out.stdout.strip().splitlines()[0],
    }), flush=True)


if __name__ == "__main__":
    main()
