#!/usr/bin/env python3
"""Peer for `instill bench train --modes prefix`: PyTorch + PEFT prefix tuning
(PREFIX_TUNING, 20 virtual tokens, no projection) on SmolLM2-135M, fp32, the workload of
../shared/bench/peers/sft_lora_torch.py: a fixed random B x L batch (seed 0), loss on
every token, AdamW lr 2e-4, `--warmup` untimed steps then `--steps` timed. Prints one
JSON line. Uses that directory's common.py (PEERS_MODEL_DIR, peak RSS).

usage: sft_prefix_peft.py --shared-dir DIR [--batch B --seq L --steps N --threads T]
"""
import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../shared/bench/peers"))
    ap.add_argument("--batch", "-B", type=int, default=4)
    ap.add_argument("--seq", "-L", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=20, help="virtual tokens")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.shared_dir))
    import common  # noqa: E402
    import torch
    from peft import PrefixTuningConfig, get_peft_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model, _tok = common.load_hf_model(torch.float32, from_gguf=False)
    model.config.use_cache = False
    model = get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=args.tokens, task_type="CAUSAL_LM"))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=args.lr)
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=g)
    mask = torch.ones_like(input_ids)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=input_ids, attention_mask=mask, labels=input_ids)
        out.loss.backward()
        opt.step()
        return out.loss.item()

    losses = [step() for _ in range(args.warmup)]
    times = []
    for _ in range(args.steps):
        s = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - s)
    timed = sum(times)
    print(json.dumps({
        "bench": "sft_prefix_peft", "mode": "prefix", "batch": args.batch, "seq": args.seq, "steps": args.steps,
        "tokens_per_s": round(args.batch * args.seq * args.steps / timed, 2), "s_per_step": round(timed / args.steps, 3),
        "s_per_step_min": round(min(times), 3), "peak_rss_mib": common.peak_rss_mib(), "torch_threads": torch.get_num_threads(),
        "trainable_params": sum(p.numel() for p in trainable), "virtual_tokens": args.tokens,
        "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4), "cpu": common.cpu_model(),
        "versions": common.versions("torch", "transformers", "peft"),
    }))


if __name__ == "__main__":
    main()
