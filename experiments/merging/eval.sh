#!/usr/bin/env bash
# Evaluate one arm of the merging experiment on the held-out instances of each group:
#   eval.sh NAME MODEL [--adapter DIR]
# writes reports/merge-NAME-{bbh,mmlu,other}. Same seeded subset for every arm: 2
# eval_dev instances per task, k = 2, greedy, at most 48 new tokens, the model's chat
# template; the model is dequantized so experts and merges share f32 numerics.
set -euo pipefail
bin=${INSTILL_BIN:-./target/release/instill}
name=$1; model=$2; shift 2
for g in bbh mmlu other; do
  $bin eval superni -m "$model" --dequantize "$@" --data runs/eval/$g.jsonl --k-shot 2 --per-task 2 --seed 0 \
    --max-new-tokens 48 --batch-size 8 --template model --quiet --out reports/merge-$name-$g
done
