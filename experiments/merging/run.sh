#!/usr/bin/env bash
# The merging experiment (README, "The experiment: merging LoRA experts"): LoRA-tune
# SmolLM2-135M-Instruct on three disjoint groups of SuperNI tasks (bbh, mmlu, other) and
# on all three together; merge the three experts with linear, TIES, DARE-TIES and
# Breadcrumbs; evaluate the base, each expert, each merge and the multi-task model on
# held-out instances of every group. Run from the repository root after `cargo build --release`.
set -euo pipefail
bin=./target/release/instill
mkdir -p runs/eval
# Held-out instances: the eval_dev lines of each group's tasks.
for g in bbh mmlu other; do
  grep -o 'tasks/[^ ]*\.json' experiments/merging/$g.yaml | sed 's#tasks/##; s#\.json##; s/.*/"task": "&"/' > runs/eval/$g.tasks
  grep -F -f runs/eval/$g.tasks ../shared/data/superni/eval_dev.jsonl > runs/eval/$g.jsonl
done
# The other group has 12 training instances (a single packed step a epoch): 5 epochs.
for g in bbh mmlu other all; do
  epochs=1; [ $g = other ] && epochs=5
  [ -d runs/merge-$g/adapter ] || $bin sft experiments/merging/lora-smollm2.yaml --set name=merge-$g --set data.0.path=$g.yaml --set epochs=$epochs
done
for m in linear ties dare_ties breadcrumbs; do
  [ -f runs/merged-$m/config.json ] || $bin merge experiments/merging/$m.yaml --out runs/merged-$m --seed 0
done
experiments/merging/eval.sh base smollm2-135m-instruct
for g in bbh mmlu other all; do
  experiments/merging/eval.sh $g smollm2-135m-instruct --adapter runs/merge-$g/adapter
done
for m in linear ties dare_ties breadcrumbs; do
  experiments/merging/eval.sh $m runs/merged-$m
done
for g in bbh mmlu other; do
  $bin eval compare reports/merge-{base,bbh,mmlu,other,linear,ties,dare_ties,breadcrumbs,all}-$g --out reports/merge-compare-$g
done
