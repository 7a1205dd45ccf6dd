#!/usr/bin/env python3
"""llama.cpp's rendering of single tokens, for tests/tokenizer_vectors.rs.

Usage: python3 tools/ref_pieces.py MODEL.gguf IDS.json OUT.json

Writes, for each id of the JSON list IDS.json, the hex of the bytes llama.cpp's
llama_token_to_piece gives with special tokens rendered and no space stripping, called through
llama-cpp-python's C bindings with a buffer large enough for any token (the high-level
detokenize() returns nothing for pieces over 32 bytes).
"""
import ctypes
import json
import sys

import llama_cpp


def piece(vocab, token):
    size = 256
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, True)
        if n >= 0:
            return buf.raw[:n]
        size = -n


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    model, ids_path, out = sys.argv[1:]
    with open(ids_path) as f:
        ids = json.load(f)
    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    pieces = [piece(vocab, i).hex() for i in ids]
    with open(out, "w") as f:
        json.dump(pieces, f)


if __name__ == "__main__":
    main()
