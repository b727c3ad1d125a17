#!/usr/bin/env bash
# The Quick Learners experiment (README, "Instruction-tuning gemma3-270m"): LoRA-tune the
# gemma3-270m BASE model on 6%, 25% and 100% of a SuperNI training pool plus Alpaca, then
# evaluate base and tuned models on the same seeded eval_dev subset (1 instance per task,
# k=2), and compare. Run from the repository root after `cargo build --release`.
set -euo pipefail
bin=./target/release/instill
eval_args=(--data ../shared/data/superni/eval_dev.jsonl --k-shot 2 --per-task 2 --seed 0 --max-new-tokens 48 --batch-size 8)
for pct in 100 25 6; do
  [ -d runs/ql-$pct/adapter ] || $bin sft experiments/quick-learners/lora-gemma.yaml --set name=ql-$pct --set data.0.path=mix-$pct.yaml
done
# The base model continues the plain SuperNI prompt; the tuned ones were trained on it
# inside the Alpaca template, so they are asked the same way.
$bin eval superni -m gemma3-270m "${eval_args[@]}" --out reports/ql2-base
for pct in 6 25 100; do
  $bin eval superni -m gemma3-270m --adapter runs/ql-$pct/adapter --template alpaca "${eval_args[@]}" --out reports/ql2-$pct
done
$bin eval compare reports/ql2-base reports/ql2-6 reports/ql2-25 reports/ql2-100 --out reports/ql2-compare
