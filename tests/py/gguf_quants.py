#!/usr/bin/env python3
"""Reference (de)quantization with the gguf Python package, for tests/quant_python.rs.

usage:
  gguf_quants.py dequantize TYPE IN_BYTES OUT_F32     raw blocks -> little-endian f32
  gguf_quants.py quantize   TYPE N_COLS IN_F32 OUT_BYTES   f32 rows -> raw blocks
  gguf_quants.py real GGUF OUT_DIR ROWS   for the first tensor of each quantized type in GGUF:
      OUT_DIR/TYPE.raw (its first ROWS rows as stored), OUT_DIR/TYPE.f32 (dequantized by the
      package), and a line "TYPE NAME N_COLS N_ROWS" per tensor in OUT_DIR/manifest.txt

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


def tensor_infos(path: str):
    """(name, ggml type id, dims, absolute data offset) of every tensor in a GGUF v2/v3 file.

    A minimal header walk: the package's GGUFReader also works but takes a minute here, as it
    builds numpy views of every metadata item (262k tokenizer strings).
    """
    import struct

    with open(path, "rb") as f:
        buf = f.read(64 << 20)
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("Q")
        s = buf[pos:pos + n].decode("utf-8", "replace")
        pos += n
        return s

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip_value(vt):
        nonlocal pos
        if vt == 8:
            string()
        elif vt == 9:
            et, n = take("I"), take("Q")
            if et in sizes:
                pos += sizes[et] * n
            else:
                for _ in range(n):
                    skip_value(et)
        else:
            pos += sizes[vt]

    assert take("I") == 0x46554747, "not a GGUF file"
    take("I")
    n_tensors, n_kv = take("Q"), take("Q")
    alignment = 32
    for _ in range(n_kv):
        key, vt = string(), take("I")
        if key == "general.alignment" and vt == 4:
            alignment = take("I")
        else:
            skip_value(vt)
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("Q") for _ in range(take("I"))]
        ty, off = take("I"), take("Q")
        infos.append((name, ty, dims, off))
    data = (pos + alignment - 1) // alignment * alignment
    return [(n, t, d, data + o) for (n, t, d, o) in infos]


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
    elif mode == "real":
        from gguf.constants import GGML_QUANT_SIZES

        out_dir, rows = sys.argv[3], int(sys.argv[4])
        seen = set()
        lines = []
        for name, ty_id, dims, off in tensor_infos(tname):
            ty = T(ty_id)
            if ty.name in seen or ty == T.F32 or len(dims) != 2:
                continue
            seen.add(ty.name)
            n_cols, n_rows = int(dims[0]), min(rows, int(dims[1]))
            bs, ts = GGML_QUANT_SIZES[ty]
            raw = np.fromfile(tname, dtype=np.uint8, count=n_rows * n_cols // bs * ts, offset=off)
            raw.tofile(f"{out_dir}/{ty.name}.raw")
            deq = quants.dequantize(raw, ty) if ty != T.F16 else raw.view(np.float16).astype(np.float32)
            np.asarray(deq, dtype="<f4").reshape(-1).tofile(f"{out_dir}/{ty.name}.f32")
            lines.append(f"{ty.name} {name} {n_cols} {n_rows}")
        with open(f"{out_dir}/manifest.txt", "w") as f:
            f.write("\n".join(lines) + "\n")
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
