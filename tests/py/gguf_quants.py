#!/usr/bin/env python3
"""Reference (de)quantization with the gguf Python package, for tests/quant_python.rs.

usage:
  gguf_quants.py dequantize TYPE IN_BYTES OUT_F32     raw blocks -> little-endian f32
  gguf_quants.py quantize   TYPE N_COLS IN_F32 OUT_BYTES   f32 rows -> raw blocks

The gguf package (0.19) has no Q8_1 or Q8_K dequantizer (they are activation-only formats);
for those two this script dequantizes with numpy from ggml's block layout (x = d * q).
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants


def dequant_q8_1(raw: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 36)
    d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
    q = b[:, 4:].copy().view(np.int8).astype(np.float32)
    return (q * d).reshape(-1)


def dequant_q8_k(raw: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 292)
    d = b[:, 0:4].copy().view(np.float32)
    q = b[:, 4:260].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(-1)


def main() -> None:
    mode, tname = sys.argv[1], sys.argv[2]
    if mode == "dequantize":
        raw = np.fromfile(sys.argv[3], dtype=np.uint8)
        if tname == "Q8_1":
            out = dequant_q8_1(raw)
        elif tname == "Q8_K":
            out = dequant_q8_k(raw)
        else:
            out = quants.dequantize(raw, T[tname])
        np.asarray(out, dtype=np.float32).reshape(-1).astype("<f4").tofile(sys.argv[4])
    elif mode == "quantize":
        n_cols = int(sys.argv[3])
        x = np.fromfile(sys.argv[4], dtype="<f4").reshape(-1, n_cols)
        q = quants.quantize(x, T[tname])
        np.ascontiguousarray(q).view(np.uint8).reshape(-1).tofile(sys.argv[5])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
