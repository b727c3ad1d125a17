#!/usr/bin/env bash
# Robustness to instruction wording on four SuperNI tasks (README, "Robustness"):
# SmolLM2-135M-Instruct re-phrases each task definition twice, then the same model is
# evaluated (through its chat template) with the original and each re-phrased definition.
set -euo pipefail
bin=./target/release/instill
tasks=task138_detoxifying-lms_classification_fluency,task306_jeopardy_answer_generation_double,task1758_bbh_word_sorting,task1762_bbh_snarks
data=../shared/data/superni/eval_dev.jsonl
[ -f reports/rob-alts.json ] || $bin eval paraphrase -m smollm2-135m-instruct --data $data --tasks $tasks --n 2 --seed 0 --out reports/rob-alts.json
$bin eval robustness -m smollm2-135m-instruct --template model --data $data --k-shot 2 --per-task 4 \
    --max-new-tokens 32 --definitions reports/rob-alts.json --quiet --out reports/rob-smollm2
