#!/usr/bin/env python3
"""Print the README tables of the synthesis experiment from its reports (standard library only).
Usage: experiments/synthesis/table.py [OUT=runs/synth]"""
import json, os, sys

out = sys.argv[1] if len(sys.argv) > 1 else "runs/synth"
tag = os.path.basename(out.rstrip("/"))
load = lambda p: json.load(open(p)) if os.path.exists(p) else None

print("| method | requested | kept | dropped (reason: count) |\n|---|---|---|---|")
for m in ("magpie", "si"):
    r = load(f"{out}/{m}.jsonl.report.json")
    if r:
        drops = "; ".join(f"{k}: {v}" for k, v in sorted(r["dropped"].items(), key=lambda kv: -kv[1]))
        print(f"| {r['method']} | {r['requested']} | {r['kept']} | {drops} |")

print("\n| arm | SuperNI n | ROUGE-L | exact match | user-oriented ROUGE-L (n) | judge vs Alpaca: win / tie / orders disagree / loss (unparsed) | win rate |\n|---|---|---|---|---|---|---|")
for arm in ("alpaca", "magpie", "si"):
    s, u = load(f"reports/{tag}-{arm}/scores.json"), load(f"reports/{tag}-uo-{arm}/scores.json")
    j = load(f"reports/{tag}-judge-{arm}-vs-alpaca/summary.json")
    sc = s["overall"]["scores"] if s else {}
    cell = lambda k: f"{sc[k]:.1f}" if k in sc else "-"
    em = next((k for k in sc if "exact" in k.lower()), None)
    uo = f"{u['overall']['scores'].get('rougeL', float('nan')):.1f} ({u['overall']['n']})" if u else "-"
    if j:
        o = j["outcomes"]
        jt = f"{o.get('win', 0)} / {o.get('tie', 0)} / {o.get('inconsistent', 0)} / {o.get('loss', 0)} ({o.get('unparsed', 0)})"
        wr = f"{100 * j['win_rate']:.1f} %" if j.get("win_rate") is not None else "-"
    else:
        jt, wr = ("(the reference arm)", "-") if arm == "alpaca" else ("-", "-")
    print(f"| {arm} | {s['overall']['n'] if s else '-'} | {cell('rougeL')} | {cell(em) if em else '-'} | {uo} | {jt} | {wr} |")
