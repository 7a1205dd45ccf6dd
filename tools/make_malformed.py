#!/usr/bin/env python3
"""Generates tests/data/malformed/: small hand-made GGUF files, one per malformed-file class.

File-format-level files are packed byte by byte with struct (so they can be wrong in any way);
model-level files are written by the independent gguf Python package (PyPI gguf) from a tiny
valid llama model, with one hyperparameter or token id made invalid.

Usage: python3 tools/make_malformed.py [OUT_DIR]   (default tests/data/malformed)
Deterministic: rerunning produces identical files.
"""

import os
import struct
import sys

import numpy as np

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "malformed")

# GGUF value type ids
U32, I32, F32T, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
GGML_F32 = 0


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def gstr(b):
    if isinstance(b, str):
        b = b.encode()
    return u64(len(b)) + b


def kv(key, ty, payload):
    return gstr(key) + u32(ty) + payload


def kv_str(key, val):
    return kv(key, STRING, gstr(val))


def kv_u32(key, val):
    return kv(key, U32, u32(val))


def tinfo(name, dims, ty, off):
    return gstr(name) + u32(len(dims)) + b"".join(u64(d) for d in dims) + u32(ty) + u64(off)


def pack(kvs, tinfos, data, version=3, n_kv=None, n_t=None, align=32, magic=b"GGUF"):
    head = (magic + u32(version)
            + u64(len(tinfos) if n_t is None else n_t)
            + u64(len(kvs) if n_kv is None else n_kv)
            + b"".join(kvs) + b"".join(tinfos))
    return head + b"\0" * ((-len(head)) % align) + data


# The format-level base: 2 kvs, 2 F32 tensors: token_embd [8, 4] at 0, output_norm [8] at 128.
BASE_KVS = [kv_str("general.architecture", "llama"), kv_u32("llama.context_length", 128)]
BASE_TENSORS = [("token_embd.weight", [8, 4], 0), ("output_norm.weight", [8], 128)]
BASE_DATA = np.arange(40, dtype=np.float32).tobytes()


def base_tinfos(overrides=None):
    out = []
    for i, (name, dims, off) in enumerate(BASE_TENSORS):
        name, dims, ty, off = (overrides or {}).get(i, (name, dims, GGML_F32, off))
        out.append(tinfo(name, dims, ty, off))
    return out


def base(**kw):
    return pack(BASE_KVS, base_tinfos(), BASE_DATA, **kw)


def format_level():
    files = {}
    good = base()
    files["bad_magic"] = base(magic=b"GGML")
    files["bad_version"] = base(version=4)
    files["version_1"] = base(version=1)
    files["empty"] = b""
    files["truncated_header"] = good[:12]
    # Inside the first key's bytes (after its 8-byte length at offset 24).
    files["truncated_in_key"] = good[:40]
    # Inside the tensor info table: just after the kvs, in the first tensor name.
    kv_end = 24 + sum(len(k) for k in BASE_KVS)
    files["truncated_in_tensor_info"] = good[:kv_end + 12]
    # Inside the tensor data: the last tensor's data is cut short.
    files["truncated_data"] = good[:-10]
    files["huge_kv_count"] = base(n_kv=1 << 62)
    files["huge_tensor_count"] = base(n_t=(1 << 64) - 1)
    files["huge_string_length"] = pack(
        [u64(1 << 63) + b"general.architecture"] + BASE_KVS[1:], base_tinfos(), BASE_DATA)
    files["huge_array_length"] = pack(
        BASE_KVS + [kv("tokenizer.ggml.scores", ARRAY, u32(F32T) + u64(1 << 60))],
        base_tinfos(), BASE_DATA)
    files["unknown_value_type"] = pack(
        BASE_KVS + [kv("general.weird", 42, u32(7))], base_tinfos(), BASE_DATA)
    files["unknown_array_type"] = pack(
        BASE_KVS + [kv("general.weird", ARRAY, u32(77) + u64(1) + u32(0))],
        base_tinfos(), BASE_DATA)
    files["unknown_tensor_type"] = pack(
        BASE_KVS, base_tinfos({0: ("token_embd.weight", [8, 4], 99, 0)}), BASE_DATA)
    files["n_dims_5"] = pack(
        BASE_KVS, base_tinfos({0: ("token_embd.weight", [8, 4, 1, 1, 1], GGML_F32, 0)}),
        BASE_DATA)
    files["dims_overflow"] = pack(
        BASE_KVS,
        base_tinfos({0: ("token_embd.weight", [1 << 32, 1 << 32, 1 << 32], GGML_F32, 0)}),
        BASE_DATA)
    files["offset_past_end"] = pack(
        BASE_KVS, base_tinfos({1: ("output_norm.weight", [8], GGML_F32, 1 << 20)}), BASE_DATA)
    files["misaligned_offset"] = pack(
        BASE_KVS, base_tinfos({1: ("output_norm.weight", [8], GGML_F32, 132)}), BASE_DATA)
    files["overlapping_tensors"] = pack(
        BASE_KVS, base_tinfos({0: ("token_embd.weight", [8, 5], GGML_F32, 0)}), BASE_DATA)
    files["duplicate_key"] = pack(
        BASE_KVS + [kv_u32("llama.context_length", 256)], base_tinfos(), BASE_DATA)
    files["duplicate_tensor"] = pack(
        BASE_KVS, base_tinfos({1: ("token_embd.weight", [8], GGML_F32, 128)}), BASE_DATA)
    files["invalid_utf8_key"] = pack(
        BASE_KVS + [kv(b"general.\xff\xfename", STRING, gstr("x"))], base_tinfos(), BASE_DATA)
    files["invalid_utf8_tensor_name"] = pack(
        BASE_KVS, base_tinfos({1: (b"output_norm\xc3(", [8], GGML_F32, 128)}), BASE_DATA)
    files["bad_alignment"] = pack(
        BASE_KVS + [kv_u32("general.alignment", 3)], base_tinfos(), BASE_DATA)
    files["zero_alignment"] = pack(
        BASE_KVS + [kv_u32("general.alignment", 0)], base_tinfos(), BASE_DATA)
    files["bad_bool"] = pack(
        BASE_KVS + [kv("general.flag", BOOL, b"\x07")], base_tinfos(), BASE_DATA)
    nested = u32(ARRAY) + u64(1)
    files["deeply_nested_array"] = pack(
        BASE_KVS + [kv("general.nest", ARRAY, nested * 64 + u32(U32) + u64(0))],
        base_tinfos(), BASE_DATA)
    return files


# Model-level: a tiny valid llama (SentencePiece vocab of 16, 1 layer, n_embd 16).
N_EMBD, N_HEAD, N_FF, N_VOCAB = 16, 2, 32, 16
TOKENS = ["<unk>", "<s>", "</s>", "\u2581", "h", "i", "\u2581h", "\u2581hi",
          "a", "b", "c", "d", "e", "\u2581a", "\u2581b", "."]


def write_model(path, arch="llama", head_count=N_HEAD, head_count_kv=N_HEAD, block_count=1,
                n_embd=N_EMBD, bos=1, eos=2):
    import gguf  # the independent writer

    rng = np.random.default_rng(1234)
    w = gguf.GGUFWriter(path, arch)
    w.add_name("malformed-corpus tiny llama")
    w.add_uint32(f"{arch}.context_length", 64)
    w.add_uint32(f"{arch}.embedding_length", n_embd)
    w.add_uint32(f"{arch}.feed_forward_length", N_FF)
    w.add_uint32(f"{arch}.block_count", block_count)
    w.add_uint32(f"{arch}.attention.head_count", head_count)
    w.add_uint32(f"{arch}.attention.head_count_kv", head_count_kv)
    w.add_uint32(f"{arch}.rope.dimension_count", N_EMBD // N_HEAD)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(TOKENS)
    w.add_token_scores([float(-i) for i in range(N_VOCAB)])
    w.add_token_types([2, 3, 3] + [1] * (N_VOCAB - 3))
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_unk_token_id(0)

    def t(name, *shape):  # numpy shape: rows first (reverse of ggml dims)
        w.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    t("token_embd.weight", N_VOCAB, N_EMBD)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    t("output.weight", N_VOCAB, N_EMBD)
    # Always exactly one layer of tensors, whatever block_count claims.
    p = "blk.0."
    w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    t(p + "attn_q.weight", N_EMBD, N_EMBD)
    t(p + "attn_k.weight", N_EMBD, N_EMBD)
    t(p + "attn_v.weight", N_EMBD, N_EMBD)
    t(p + "attn_output.weight", N_EMBD, N_EMBD)
    w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    t(p + "ffn_gate.weight", N_FF, N_EMBD)
    t(p + "ffn_up.weight", N_FF, N_EMBD)
    t(p + "ffn_down.weight", N_EMBD, N_FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


MODEL_LEVEL = {
    "valid_tiny_llama": {},
    "model_zero_heads": {"head_count": 0, "head_count_kv": 0},
    "model_heads_not_dividing": {"head_count": 3, "head_count_kv": 3},
    "model_block_count_beyond_tensors": {"block_count": 4},
    "model_bos_outside_vocab": {"bos": 5000},
    "model_eos_outside_vocab": {"eos": 16},
    "model_unknown_architecture": {"arch": "unknownarch"},
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in format_level().items():
        with open(os.path.join(OUT, name + ".gguf"), "wb") as f:
            f.write(data)
    for name, kw in MODEL_LEVEL.items():
        write_model(os.path.join(OUT, name + ".gguf"), **kw)
    print(f"wrote {len(format_level()) + len(MODEL_LEVEL)} files to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
