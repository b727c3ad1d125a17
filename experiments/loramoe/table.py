#!/usr/bin/env python3
"""The README table of experiments/loramoe/run.sh: per arm, final validation loss, the
world-knowledge (trained Jeopardy task, held-out instances) and MMLU (untrained subjects)
scores, and LoRAMoE's router statistics at the last step."""
import json
import pathlib

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
    return rows[-1]


print("| arm | val loss | world: Jeopardy held-out ROUGE-L / EM | MMLU, untrained subjects ROUGE-L / EM |")
print("|---|---|---|---|")
for arm in ["base", "lora", "loramoe"]:
    m = last(arm)
    val = f"{m['val_loss']:.4f}" if m.get("val_loss") is not None else "-"
    print(f"| {arm} | {val} | {score(arm, 'world')} | {score(arm, 'mmlu')} |")
m = last("loramoe")
if m:
    print()
    experts = " ".join(f"{m[f'loramoe/expert{n}']:.3f}" for n in range(6))
    print(f"LoRAMoE at step {m['step']}: mean router weight per expert {experts}; "
          f"world group's share on world data {m['loramoe/world_share/world_data']:.3f}, "
          f"on task data {m['loramoe/world_share/task_data']:.3f}; balance loss {m['loramoe/balance_loss']:.4f}")
