"""Peer for `instill bench eval`: a transformers `generate` loop over the same prompts.

Reads JSONL lines {"ids": [...]} (prompts already tokenized by instill, so both sides
see identical tokens), left-pads each batch, decodes greedily up to --max-new-tokens
(end-of-sequence stops a row, as in instill), and prints one JSON line: examples/s,
generated tokens and peak RSS. The model is the GGUF dequantized to fp32 by transformers.
"""
import argparse, json, os, resource, time

p = argparse.ArgumentParser()
p.add_argument("--gguf", required=True)
p.add_argument("--prompts", required=True)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--max-new-tokens", type=int, default=48)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()

import torch
from transformers import AutoModelForCausalLM

torch.set_num_threads(a.threads)
d, f = os.path.split(os.path.abspath(a.gguf))
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
prompts = [json.loads(l)["ids"] for l in open(a.prompts) if l.strip()]
eos = model.generation_config.eos_token_id
pad = eos[0] if isinstance(eos, list) else (eos if eos is not None else 0)

def batches():
    for i in range(0, len(prompts), a.batch):
        chunk = prompts[i:i + a.batch]
        t = max(len(x) for x in chunk)
        ids = torch.tensor([[pad] * (t - len(x)) + x for x in chunk])
        mask = torch.tensor([[0] * (t - len(x)) + [1] * len(x) for x in chunk])
        yield ids, mask

start, new = time.perf_counter(), 0
with torch.inference_mode():
    for ids, mask in batches():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=a.max_new_tokens, do_sample=False, pad_token_id=pad)
        gen = out[:, ids.shape[1]:]
        for row in gen.tolist():
            n = 0
            for t in row:
                n += 1
                if t in (eos if isinstance(eos, list) else [eos]):
                    break
            new += n
wall = time.perf_counter() - start
print(json.dumps({"examples": len(prompts), "wall_s": wall, "examples_per_s": len(prompts) / wall, "new_tokens": new,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
