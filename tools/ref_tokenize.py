#!/usr/bin/env python3
"""Reference token ids from llama.cpp itself, for tests/tokenizer_vectors.rs.

Usage: python3 tools/ref_tokenize.py MODEL.gguf OUT.json [STRINGS.json]

Tokenizes a fixed list of strings with llama-cpp-python (which builds llama.cpp from source;
version 0.3.36 produced the committed files) with the model's vocabulary only, in two modes:
add_special=False/parse_special=False and add_special=True/parse_special=True, and writes
{"generator": ..., "model": file name, "sha256": ..., "cases": [{"text", "add_special",
"parse_special", "ids"}]}. With STRINGS.json (a JSON list of strings) those strings are used
instead of the built-in list (the Rust tests use this for fresh random strings).
"""
import hashlib
import json
import os
import sys

import llama_cpp

TEXTS = [
    "",
    "a",
    "\n",
    "   ",
    "Hello world",
    " Hello world",
    "Hello  world",
    "  leading spaces",
    "trailing spaces   ",
    "line1\nline2\n\nline4\n\n\n",
    "\ttab\tseparated\t",
    "mixed \n \t whitespace \r\n end",
    "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n",
    'for (int i = 0; i < 10; ++i) { printf("%d\\n", i); }',
    "中文分词测试",
    "日本語のテキストです。",
    "한국어 문장",
    "Привет, мир!",
    "emoji 😀👍🏽 family 👨\u200d👩\u200d👧",
    "Ünïcödé àccents çé",
    "numbers 1234567890 3.14159 1,000,000",
    "don't won't it's I'M they'll",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝑥²+𝑦²",
    "\ufb01 ligature and ZWJ a\u200db",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "url https://example.com/path?q=1&r=2#frag",
    "<table><tr><td>cell</td></tr></table>",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<bos>text<eos>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<s> [INST] hi [/INST]</s>  after",
    "<unused0> <mask> <|endoftext|>",
]


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    path, out = sys.argv[1], sys.argv[2]
    texts = TEXTS
    if len(sys.argv) == 4:
        with open(sys.argv[3], encoding="utf-8") as f:
            texts = json.load(f)
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    cases = []
    for text in texts:
        for special in (False, True):
            ids = llm.tokenize(text.encode("utf-8"), add_bos=special, special=special)
            cases.append({"text": text, "add_special": special, "parse_special": special, "ids": ids})
    doc = {
        "generator": f"llama.cpp via llama-cpp-python {llama_cpp.__version__} (tools/ref_tokenize.py)",
        "model": os.path.basename(path),
        "sha256": sha,
        "cases": cases,
    }
    # One case per line keeps the file readable and its diffs small.
    head = json.dumps({k: v for k, v in doc.items() if k != "cases"}, ensure_ascii=False)[:-1]
    body = ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)
    with open(out, "w", encoding="utf-8") as f:
        f.write(f'{head}, "cases": [\n{body}\n]}}\n')
    print(f"{out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
