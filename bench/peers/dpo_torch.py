#!/usr/bin/env python3
"""DPO peers for `instill bench dpo`: one epoch of DPO (sigmoid loss, beta 0.1) with a
LoRA adapter (r 8, alpha 16, every projection, no dropout) on SmolLM2-135M in fp32,
over the pairs in PAIRS_JSON (token ids made by instill, so every implementation sees
the same tokens): `--mode trl` runs TRL's DPOTrainer (its defaults: the reference is the
base with the adapter switched off, computed in every step; `--precompute` turns on
its pre-pass), `--mode loop` a plain PyTorch + PEFT loop (reference forward under
`disable_adapter()` and `no_grad`). Prints one JSON line: tokens/s over the epoch
(reference passes included), seconds, peak RSS, versions.

usage: dpo_torch.py --mode trl|loop --pairs PAIRS_JSON --gguf GGUF [--batch 2] [--threads 2]
"""
import argparse
import json
import os
import resource
import time

import torch
import torch.nn.functional as F


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load(gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, f = os.path.dirname(gguf), os.path.basename(gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="sdpa")
    # Dequantized to fp32 on load; drop the quantizer mark so the Trainer accepts it.
    m.hf_quantizer = None
    m.is_quantized = False
    if hasattr(m.config, "quantization_config"):
        del m.config.quantization_config
    return m, tok


def lora(m):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(m, cfg)


def batches(pairs, b, pad):
    for i in range(0, len(pairs), b):
        chunk = pairs[i:i + b]
        seqs = [p["prompt"] + p["chosen"] for p in chunk] + [p["prompt"] + p["rejected"] for p in chunk]
        comp = [[0] * len(p["prompt"]) + [1] * len(p["chosen"]) for p in chunk] + [[0] * len(p["prompt"]) + [1] * len(p["rejected"]) for p in chunk]
        n = max(len(s) for s in seqs)
        ids = torch.tensor([s + [pad] * (n - len(s)) for s in seqs])
        att = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs])
        cm = torch.tensor([c + [0] * (n - len(c)) for c in comp])
        yield ids, att, cm


def logps(model, ids, att, cm):
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
    lp = torch.gather(logits.log_softmax(-1), 2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (lp * cm[:, 1:]).sum(-1)


def loop(model, pairs, b, pad, beta=0.1, lr=5e-5):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for ids, att, cm in batches(pairs, b, pad):
        k = ids.shape[0] // 2
        with torch.no_grad(), model.disable_adapter():
            ref = logps(model, ids, att, cm)
        pol = logps(model, ids, att, cm)
        delta = (pol[:k] - ref[:k]) - (pol[k:] - ref[k:])
        loss = -F.logsigmoid(beta * delta).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def trl(model, tok, pairs, b, precompute, lr=5e-5):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = [{"prompt_ids": p["prompt"], "chosen_ids": p["chosen"], "rejected_ids": p["rejected"]} for p in pairs]
    ds = Dataset.from_list(rows)
    # Already tokenized (instill's ids, so every run sees the same tokens): TRL's collator
    # takes prompt_ids/chosen_ids/rejected_ids; its text preparation is skipped.
    DPOTrainer._prepare_dataset = lambda self, dataset, *args, **kwargs: dataset
    args = DPOConfig(output_dir="/tmp/instill-bench-dpo-trl", report_to=[], per_device_train_batch_size=b, num_train_epochs=1, learning_rate=lr,
                     beta=0.1, max_length=None, precompute_ref_log_probs=precompute, use_cpu=True, save_strategy="no", logging_steps=1000,
                     lr_scheduler_type="constant", dataloader_num_workers=0)
    tr = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    if "ref" in model.peft_config:  # a fresh adapter: the reference is the base, as in the loop and in instill
        model.delete_adapter("ref")
        model.set_adapter("default")
    t0 = time.perf_counter()
    out = tr.train()
    return out.training_loss, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["trl", "loop"], required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precompute", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = json.load(open(a.pairs))
    pairs = data["pairs"]
    model, tok = load(a.gguf)
    model = lora(model)
    tokens = sum(2 * len(p["prompt"]) + len(p["chosen"]) + len(p["rejected"]) for p in pairs)
    rss_loaded = peak_rss_mib()
    t0 = time.perf_counter()
    if a.mode == "loop":
        losses = loop(model, pairs, a.batch, data["pad"])
        secs = time.perf_counter() - t0
        loss = sum(losses) / len(losses)
    else:
        loss, secs = trl(model, tok, pairs, a.batch, a.precompute)
    import peft
    import transformers
    import trl as trl_mod
    print(json.dumps({"mode": a.mode + ("-precompute" if a.precompute else ""), "tokens": tokens, "seconds": secs, "tokens_per_s": tokens / secs,
                      "peak_rss_mib": peak_rss_mib(), "rss_after_load_mib": rss_loaded, "mean_loss": loss,
                      "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__, "trl": trl_mod.__version__}}))


if __name__ == "__main__":
    main()
