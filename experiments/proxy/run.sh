#!/usr/bin/env bash
# The proxy-tuning experiment (README, "The experiment: proxy-tuning"): LoRA-tune
# Qwen2.5-Coder-0.5B-Instruct on a SuperNI task mixture, then evaluate on held-out
# instances of those tasks: the untuned 1.5B, the untuned and tuned 0.5B, and the 1.5B
# proxy-tuned by the tuned 0.5B (expert) and the untuned 0.5B (anti-expert).
# Run from the repository root after `cargo build --release` and experiments/merging/run.sh's
# first lines (runs/eval/*.jsonl).
set -euo pipefail
bin=./target/release/instill
cat runs/eval/bbh.jsonl runs/eval/mmlu.jsonl runs/eval/other.jsonl > runs/eval/all.jsonl
[ -d runs/proxy-q05/adapter ] || $bin sft experiments/proxy/lora-qwen05.yaml
# One eval_dev instance per task (69), definition only (k = 0, as trained), greedy, at
# most 32 new tokens, the models' chat template.
ev=(--data runs/eval/all.jsonl --k-shot 0 --per-task 1 --seed 0 --max-new-tokens 32 --batch-size 8 --template model --quiet)
q05=qwen2.5-coder-0.5b-instruct
q15=qwen2.5-coder-1.5b-instruct
$bin eval superni -m $q15 "${ev[@]}" --out reports/proxy-1.5b
$bin eval superni -m $q05 "${ev[@]}" --out reports/proxy-0.5b
$bin eval superni -m $q05 --adapter runs/proxy-q05/adapter "${ev[@]}" --out reports/proxy-0.5b-tuned
$bin eval superni -m $q15 --proxy-expert $q05 --proxy-expert-adapter runs/proxy-q05/adapter --proxy-anti $q05 \
  --alpha 1.0 "${ev[@]}" --out reports/proxy-1.5b-proxy
$bin eval compare reports/proxy-1.5b reports/proxy-0.5b reports/proxy-0.5b-tuned reports/proxy-1.5b-proxy --out reports/proxy-compare
