#!/usr/bin/env python3
"""Build the small preference data sets the recipes, tests and the experiment use, from
../shared/data/preference (hh-rlhf harmless-base test split, MIT; LLaMA-Factory's KTO
demo, Apache-2.0). Deterministic: the same files every run.

- hh_train.jsonl    400 hh-rlhf pairs ("\\n\\nHuman:" dialogues, single-turn, short)
- hh_heldout.jsonl  100 other hh-rlhf pairs, never trained on
- hh_prompts.jsonl  the held-out pairs' prompts ({"prompt": ...}) for win rates
- kto_demo.jsonl    240 single-turn KTO records (messages + label)
- scored_demo.jsonl each hh_train response as a scored record: helpfulness 1 (chosen) or
                    0 (rejected), verbosity = words / 100: a small real-data stand-in for
                    HelpSteer2's layout, for reward-regression
usage: make.py [SHARED_PREFERENCE_DIR]
"""
import gzip
import json
import os
import sys

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "preference")
here = os.path.dirname(os.path.abspath(__file__))


def turns(s):
    return s.count("\n\nHuman:"), s.count("\n\nAssistant:")


hh = [json.loads(l) for l in gzip.open(os.path.join(src, "hh_rlhf_harmless_base_test.jsonl.gz"), "rt")]
def answer(s):
    return s.split("\n\nAssistant:", 1)[1].strip()


good = [r for r in hh if turns(r["chosen"]) == (1, 1) and turns(r["rejected"]) == (1, 1) and len(r["chosen"]) < 700 and len(r["rejected"]) < 700 and r["chosen"] != r["rejected"] and answer(r["chosen"]) and answer(r["rejected"])]
train, held = good[:400], good[400:500]


def write(name, rows):
    with open(os.path.join(here, name), "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


write("hh_train.jsonl", [{"chosen": r["chosen"], "rejected": r["rejected"]} for r in train])
write("hh_heldout.jsonl", [{"chosen": r["chosen"], "rejected": r["rejected"]} for r in held])
write("hh_prompts.jsonl", [{"prompt": r["chosen"].split("\n\nAssistant:")[0].replace("\n\nHuman:", "").strip()} for r in held])
kto = [r for r in json.load(open(os.path.join(src, "kto_en_demo.json"))) if len(r["messages"]) == 2 and len(r["messages"][0]["content"]) + len(r["messages"][1]["content"]) < 1500]
write("kto_demo.jsonl", [{"messages": r["messages"], "label": r["label"]} for r in kto[:240]])
scored = []
for r in train:
    for side, help_ in (("chosen", 1), ("rejected", 0)):
        human, asst = r[side].split("\n\nAssistant:", 1)
        answer = asst.strip()
        scored.append({"messages": [{"role": "user", "content": human.replace("\n\nHuman:", "").strip()}, {"role": "assistant", "content": answer}],
                       "scores": {"helpfulness": help_, "verbosity": round(len(answer.split()) / 100, 3)}})
write("scored_demo.jsonl", [s for s in scored if s["messages"][1]["content"]])
print(len(good), len(train), len(held), len(kto), len(scored))
