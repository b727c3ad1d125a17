#!/usr/bin/env python3
"""The README table of experiments/pat/run.sh: the base model, the LoRA arm of
experiments/loramoe/run.sh (same data and steps, unpruned) and PAT at 25% and 50% of the
hidden channels removed: hidden size, parameters, final validation loss, the world
(Jeopardy held-out) and MMLU (untrained subjects) scores of the pruned model, and
`bench generate`'s tokens/s of each f16 GGUF, instill's and llama.cpp's."""
import json
import pathlib
import re
import struct

runs, reports = pathlib.Path("runs"), pathlib.Path("reports")


def score(report, s):
    p = reports / f"{report}-{s}" / "scores.json"
    if not p.exists():
        return "-"
    o = json.loads(p.read_text())["overall"]
    return f"{o['scores']['rougeL']:.1f} / {o['scores']['exact_match']:.1f} (n={o['n']})"


def last(run):
    p = runs / run / "metrics.jsonl"
    rows = [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else []
    return rows[-1] if rows else {}


def params(d):
    """Elements of a Hugging Face directory's safetensors (tied head counted once)."""
    total = 0
    for f in sorted(d.glob("*.safetensors")):
        raw = f.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        for k, v in json.loads(raw[8 : 8 + n]).items():
            if k != "__metadata__":
                size = 1
                for x in v["shape"]:
                    size *= x
                total += size
    return f"{total / 1e6:.1f}M"


def bench():
    """GGUF file name -> (instill pp, llama.cpp pp, instill tg, llama.cpp tg) tokens/s."""
    p = runs / "pat-exp" / "bench-generate.txt"
    out = {}
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[0].endswith(".gguf"):
            out[cells[0]] = (cells[2], cells[3], cells[5], cells[6])
    return out


b = bench()
print("| arm | hidden | parameters | val loss | world ROUGE-L / EM | MMLU ROUGE-L / EM | prompt tok/s: instill / llama.cpp | decode tok/s: instill / llama.cpp |")
print("|---|---|---|---|---|---|---|---|")
arms = [
    ("base", None, "loramoe-base", "base-f16"),
    ("LoRA r24 (unpruned)", "loramoe-exp/lora", "loramoe-lora", None),
    ("PAT 25%", "pat-exp/pat25", "pat25", "pruned-f16"),
    ("PAT 50%", "pat-exp/pat50", "pat50", "pruned-f16"),
]
for name, run, report, gguf in arms:
    m = last(run) if run else {}
    val = f"{m['val_loss']:.4f}" if m.get("val_loss") is not None else "-"
    d = runs / run / "pruned" if run and "pat" in run else None
    hidden = json.loads((d / "config.json").read_text())["hidden_size"] if d and (d / "config.json").exists() else 576
    n = params(d) if d and d.exists() else "134.5M"
    key = next((k for k in b if gguf and (run is None and "base" in k or run is not None and run.split("/")[-1] in k)), None)
    pp, tg = (f"{b[key][0]} / {b[key][1]}", f"{b[key][2]} / {b[key][3]}") if key else ("-", "-")
    print(f"| {name} | {hidden} | {n} | {val} | {score(report, 'world')} | {score(report, 'mmlu')} | {pp} | {tg} |")
