#!/usr/bin/env python3
"""The README table of experiments/loramoe/run.sh: per arm, trained elements, training
tokens/s, final validation loss, the world-knowledge (trained Jeopardy task, held-out
instances) and MMLU (untrained subjects) scores, and LoRAMoE's router statistics and
sparse fine-tuning's mask at the end."""
import json
import pathlib
import struct

runs, reports = pathlib.Path("runs/loramoe-exp"), pathlib.Path("reports")


def score(arm, s):
    p = reports / f"loramoe-{arm}-{s}" / "scores.json"
    if not p.exists():
        return "-"
    o = json.loads(p.read_text())["overall"]
    return f"{o['scores']['rougeL']:.1f} / {o['scores']['exact_match']:.1f} (n={o['n']})"


def last(arm):
    p = runs / arm / "metrics.jsonl"
    if not p.exists():
        return {}
    rows = [json.loads(l) for l in p.read_text().splitlines()]
    return rows[-1] if rows else {}


def trained(arm):
    """Elements the arm trains: adapter tensors, or a sparse delta's mask."""
    d = runs / arm / "adapter"
    if not (d / "adapter_config.json").exists():
        return "-"
    cfg = json.loads((d / "adapter_config.json").read_text())
    if cfg["peft_type"] == "SPARSE":
        return f"{cfg['nnz'] / 1e6:.2f}M (mask)"
    raw = (d / "adapter_model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8 : 8 + n])
    total = 0
    for k, v in head.items():
        if k != "__metadata__":
            size = 1
            for x in v["shape"]:
                size *= x
            total += size
    return f"{total / 1e6:.2f}M"


def speed(arm):
    p = runs / arm / "metrics.jsonl"
    if not p.exists():
        return "-"
    rows = [json.loads(l) for l in p.read_text().splitlines()]
    if not rows:
        return "-"
    return f"{sum(r['tokens'] for r in rows) / rows[-1]['elapsed_s']:.0f}"


print("| arm | trained | tokens/s | val loss | world: Jeopardy held-out ROUGE-L / EM | MMLU, untrained subjects ROUGE-L / EM |")
print("|---|---|---|---|---|---|")
for arm in ["base", "lora", "loramoe", "sparse", "adapter"]:
    m = last(arm)
    val = f"{m['val_loss']:.4f}" if m.get("val_loss") is not None else "-"
    print(f"| {arm} | {trained(arm)} | {speed(arm)} | {val} | {score(arm, 'world')} | {score(arm, 'mmlu')} |")
m = last("loramoe")
if m:
    print()
    experts = " ".join(f"{m[f'loramoe/expert{n}']:.3f}" for n in range(6))
    print(f"LoRAMoE at step {m['step']}: mean router weight per expert {experts}; "
          f"world group's share on world data {m['loramoe/world_share/world_data']:.3f}, "
          f"on task data {m['loramoe/world_share/task_data']:.3f}; balance loss {m['loramoe/balance_loss']:.4f}")
loc = runs / "sparse" / "localization.json"
if loc.exists():
    r = json.loads(loc.read_text())
    kinds = ", ".join(f"{k} {v / r['nnz']:.1%}" for k, v in sorted(r["by_kind"].items(), key=lambda kv: -kv[1]))
    print()
    print(f"Sparse: mask of {r['nnz']} of {r['total']} elements (|change| >= {r['threshold']:.2e} after the full-tuning phase), "
          f"holding {r['captured']:.1%} of that phase's squared change; by kind: {kinds}")
