#!/usr/bin/env python3
"""llama.cpp peer for `instill bench generate --sweep`: B sequences decoded together.

Reads {"gguf", "prompts" (B lists of token ids, equally long), "n_gen", "reps", "threads"}
as JSON on stdin. Through llama.cpp's C API (llama-cpp-python's bindings), as its own
`batched-bench` does: the B prompts are evaluated as one batch (one sequence id each), then
n_gen greedy steps each decode one token for every sequence in one `llama_decode`. 1
warm-up + reps timed runs; prints one JSON line with the median prompt tokens/s and
aggregate decode tokens/s (B x n_gen / time), the greedy ids of sequence 0 and the peak RSS.
"""
import ctypes
import json
import resource
import statistics
import sys
import time

import numpy as np
import llama_cpp

_quiet = llama_cpp.llama_log_callback(lambda level, text, data: None)
llama_cpp.llama_log_set(_quiet, ctypes.c_void_p(0))
req = json.load(sys.stdin)
prompts, n_gen, threads = req["prompts"], req["n_gen"], req["threads"]
b, p = len(prompts), len(prompts[0])
llama_cpp.llama_backend_init()
mp = llama_cpp.llama_model_default_params()
with open("/proc/cpuinfo") as f:
    if "amx_tile" in f.read():
        mp.use_extra_bufts = False  # AMX buffer types segfault where the OS grants no tile state
model = llama_cpp.llama_model_load_from_file(req["gguf"].encode(), mp)
cp = llama_cpp.llama_context_default_params()
cp.n_ctx = b * (p + n_gen + 16)
cp.n_batch = max(512, b * p)
cp.n_seq_max = b
cp.n_threads = cp.n_threads_batch = threads
cp.kv_unified = True
ctx = llama_cpp.llama_init_from_model(model, cp)
n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
batch = llama_cpp.llama_batch_init(max(b * p, b), 0, b)


def fill(tokens):
    """tokens: (token, pos, seq, want_logits) tuples."""
    batch.n_tokens = len(tokens)
    for i, (t, pos, s, out) in enumerate(tokens):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, pos, 1
        batch.seq_id[i][0], batch.logits[i] = s, 1 if out else 0


def argmax_at(i):
    ptr = llama_cpp.llama_get_logits_ith(ctx, i)
    return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))


pp, tg, ids = [], [], []
for rep in range(req["reps"] + 1):
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    t0 = time.perf_counter()
    fill([(t, j, s, j == p - 1) for s, pr in enumerate(prompts) for j, t in enumerate(pr)])
    assert llama_cpp.llama_decode(ctx, batch) == 0
    nxt = [argmax_at(s * p + p - 1) for s in range(b)]
    t1 = time.perf_counter()
    ids = []
    for k in range(n_gen):
        ids.append(nxt[0])
        fill([(nxt[s], p + k, s, True) for s in range(b)])
        assert llama_cpp.llama_decode(ctx, batch) == 0
        nxt = [argmax_at(s) for s in range(b)]
    t2 = time.perf_counter()
    if rep:
        pp.append(b * p / (t1 - t0))
        tg.append(b * n_gen / (t2 - t1))
print(json.dumps({"engine": "llama.cpp", "version": llama_cpp.__version__, "pp_tok_s": statistics.median(pp),
                  "tg_tok_s": statistics.median(tg), "ids": ids,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
