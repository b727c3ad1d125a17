#!/usr/bin/env python3
"""llama.cpp peer for `instill bench generate`: the same token ids, the same work.

Reads {"gguf", "ids", "n_gen", "reps", "threads"} as JSON on stdin, evaluates the prompt
ids (prompt processing), then decodes n_gen greedy tokens ignoring EOS (generation),
1 warm-up + reps timed runs, and prints one JSON line with median tokens/s, the
greedy ids and llama.cpp's own perf counters. Needs llama-cpp-python (see README).
"""
import json
import resource
import statistics
import sys
import time

import numpy as np
import llama_cpp
import llama_cpp.llama
from llama_cpp import Llama


def plain_cpu_kernels_on_amx():
    """On CPUs that report AMX, llama.cpp's extra buffer types (AMX / repacked kernels)
    segfault where the OS does not grant AMX tile state (as here): load without them
    there, as tests/fixtures/gen/gguf_ref.py does. Other CPUs keep llama.cpp's defaults."""
    with open("/proc/cpuinfo") as f:
        if "amx_tile" not in f.read():
            return
    default = llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    llama_cpp.llama_model_default_params = params
    llama_cpp.llama.llama_cpp.llama_model_default_params = params


plain_cpu_kernels_on_amx()
req = json.load(sys.stdin)
llm = Llama(model_path=req["gguf"], n_ctx=max(2048, len(req["ids"]) + req["n_gen"] + 16), n_batch=512, n_threads=req["threads"],
            n_threads_batch=req["threads"], seed=0, verbose=False, logits_all=False)
ids, n_gen, n_vocab = req["ids"], req["n_gen"], llm.n_vocab()
pp, tg, out = [], [], []
for rep in range(req["reps"] + 1):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    t1 = time.perf_counter()
    out = []
    for _ in range(n_gen):
        # llama-cpp-python >= 0.3 leaves llm.scores empty: read the context's logits.
        nxt = int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))
        out.append(nxt)
        llm.eval([nxt])
    t2 = time.perf_counter()
    if rep:
        pp.append(len(ids) / (t1 - t0))
        tg.append(n_gen / (t2 - t1))
print(json.dumps({"engine": "llama.cpp", "version": llama_cpp.__version__, "pp_tok_s": statistics.median(pp),
                  "tg_tok_s": statistics.median(tg), "ids": out,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
