#!/usr/bin/env python3
"""Reference ids for the pre-tokenizers that no shared vocabulary uses, from llama.cpp itself.

Usage: python3 tools/ref_pretok.py ../shared/vocab/ggml-vocab-gpt-2.gguf OUT.json

For each pre-tokenizer name below, writes a copy of the GPT-2 vocabulary with
tokenizer.ggml.pre set to that name (to a temporary directory), tokenizes the strings of
tools/ref_tokenize.py with llama-cpp-python (llama.cpp 0.3.36 produced the committed file),
and writes {"generator", "vocab", "pre": {NAME: [{"text", "ids"}]}} (no BOS/EOS, special tokens
not parsed). The merges are GPT-2's, so the ids differ between names only through the split.
"""
import json
import os
import sys
import tempfile

import gguf
import llama_cpp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_tokenize import TEXTS  # noqa: E402

PRES = [
    "default", "falcon", "starcoder", "refact", "mpt", "deepseek-llm", "deepseek-coder",
    "deepseek-v3", "dbrx", "chatglm-bpe", "poro-chat", "viking", "tekken", "gpt-4o", "qwen35",
    "command-r", "olmo",
]


def str_array(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def write_copy(src, pre, path):
    r = gguf.GGUFReader(src)
    tokens = str_array(r, "tokenizer.ggml.tokens")
    merges = str_array(r, "tokenizer.ggml.merges")
    tt = r.fields["tokenizer.ggml.token_type"]
    types = [int(tt.parts[i][0]) for i in tt.data]
    eos = int(r.fields["tokenizer.ggml.eos_token_id"].parts[-1][0])
    w = gguf.GGUFWriter(path, "gpt2")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(eos)
    w.add_eos_token_id(eos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pre in PRES:
            path = os.path.join(tmp, f"{pre}.gguf")
            write_copy(src, pre, path)
            llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
            result[pre] = [
                {"text": t, "ids": llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)}
                for t in TEXTS
            ]
            del llm
    head = {
        "generator": f"llama.cpp via llama-cpp-python {llama_cpp.__version__} (tools/ref_pretok.py)",
        "vocab": os.path.basename(src),
    }
    lines = []
    for pre, cases in result.items():
        body = ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)
        lines.append(f'{json.dumps(pre)}: [\n{body}\n]')
    with open(out, "w", encoding="utf-8") as f:
        f.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "pre": {\n' + ",\n".join(lines) + "\n}}\n")
    print(f"{out}: {len(result)} pre-tokenizers x {len(TEXTS)} strings")


if __name__ == "__main__":
    main()
