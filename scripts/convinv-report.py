#!/usr/bin/env python3
"""How invertible a WaveGlow checkpoint's 1x1 convolutions are (MODEL-SPEC
12.3): per flow k, log|det W_k|, the smallest and largest singular values and
the condition number, read straight from the safetensors file (NumPy only).
A tool for developers; nothing in the build or the tests needs it.

    python3 scripts/convinv-report.py RUN/step-*.safetensors
"""
import json
import struct
import sys

import numpy as np


def convinv_matrices(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, t in header.items():
            if name.startswith("convinv.") and name.endswith(".conv.weight"):
                b, e = t["data_offsets"]
                f.seek(base + b)
                c = t["shape"][0]
                out[int(name.split(".")[1])] = np.frombuffer(f.read(e - b), "<f4").reshape(c, c).astype(np.float64)
        step = json.loads(header.get("__metadata__", {}).get("config", "{}")).get("step", "?")
    return step, [out[k] for k in sorted(out)]


def main(paths):
    print("file\tstep\tflow\tlog|det W|\tsigma_min\tsigma_max\tcondition")
    for p in paths:
        step, ws = convinv_matrices(p)
        for k, w in enumerate(ws):
            s = np.linalg.svd(w, compute_uv=False)
            print(f"{p}\t{step}\t{k}\t{np.linalg.slogdet(w)[1]:.4f}\t{s.min():.4f}\t{s.max():.4f}\t{s.max() / s.min():.3f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
