#!/usr/bin/env python3
"""Compiles crunch's CUDA kernel sources with NVRTC on a machine without a GPU, to catch source
errors before a run on the GPU machine (which compiles them at start-up).

    python3 scripts/nvrtc_check.py crates/crunch-runtime/src/cuda/kernels.cu [...]

Needs the `cuda-bindings` and `nvidia-cuda-nvrtc` PyPI packages (a CUDA build of torch brings
both; set LD_LIBRARY_PATH to the directory holding libnvrtc.so.13). Exits 1 on any error.
"""
import sys

from cuda.bindings import nvrtc


def main():
    bad = 0
    for path in sys.argv[1:]:
        src = open(path, "rb").read()
        err, prog = nvrtc.nvrtcCreateProgram(src, path.encode(), 0, [], [])
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
        (err,) = nvrtc.nvrtcCompileProgram(prog, 1, [b"--gpu-architecture=compute_90"])
        _, n = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * n
        nvrtc.nvrtcGetProgramLog(prog, log)
        ok = err == nvrtc.nvrtcResult.NVRTC_SUCCESS
        bad += not ok
        print(f"{path}: {'ok' if ok else 'FAILED'}", log.decode(errors="replace").strip())
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
