#!/usr/bin/env python3
"""Hugging Face `datasets.map` peer for `instill bench data`.

Reads {"files": [...], "model_dir", "gguf", "num_proc"} as JSON on stdin. For each file:
load_dataset("json") into a fresh cache, then map every record to chat messages, render
them with the model's chat template and tokenize (apply_chat_template(tokenize=True)).
The timed part is load + map (the tokenizer is built once, before timing). Prints one
JSON line: examples/s per file and the total token count (to check both did the same work).
"""
import json
import sys
import tempfile
import time

from datasets import load_dataset, disable_progress_bars
from transformers import AutoTokenizer

req = json.load(sys.stdin)
disable_progress_bars()
tok = AutoTokenizer.from_pretrained(req["model_dir"], gguf_file=req["gguf"])


def messages(ex):
    if "question" in ex:  # GSM8K
        return [{"role": "user", "content": ex["question"]}, {"role": "assistant", "content": ex["answer"]}]
    q = ex["instruction"] + ("\n" + ex["input"] if ex.get("input") else "")
    return [{"role": "user", "content": q}, {"role": "assistant", "content": ex["output"]}]


def encode(ex):
    out = tok.apply_chat_template(messages(ex), tokenize=True)
    ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    return {"input_ids": ids, "n": len(ids)}


results = {}
for f in req["files"]:
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        ds = load_dataset("json", data_files=f, split="train", cache_dir=cache)
        ds = ds.map(encode, num_proc=req["num_proc"] if req["num_proc"] > 1 else None, load_from_cache_file=False,
                    remove_columns=ds.column_names)
        dt = time.perf_counter() - t0
        results[f] = {"examples": len(ds), "seconds": dt, "examples_per_s": len(ds) / dt, "tokens": int(sum(ds["n"]))}
print(json.dumps({"engine": "datasets.map", "results": results}))
