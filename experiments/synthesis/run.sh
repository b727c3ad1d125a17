#!/usr/bin/env bash
# The synthesis experiment (README, "The experiment: synthesized instruction data"):
# Qwen2.5-Coder-1.5B-Instruct writes instruction data with Magpie and with Self-Instruct;
# the gemma3-270m BASE model is LoRA-tuned on each and on as many Alpaca examples; the three
# are evaluated on the same SuperNI subset and judged pairwise (both orders) on held-out
# user-oriented instructions. Every step is resumable: rerun after a kill. Run from the
# repository root after `cargo build --release`.
set -euo pipefail
bin=./target/release/instill
gen=qwen2.5-coder-1.5b-instruct
mkdir -p runs/synth reports
# Stage files an earlier, unfinished run left in results/partial/ (committed so that a fresh
# machine continues it instead of starting over).
for w in experiments/synthesis/results/partial/*.work; do
  [ -d "$w" ] && [ ! -d "runs/synth/$(basename "$w")" ] && cp -r "$w" runs/synth/
done
clean=(--near-dup 0.8 --decontaminate ../shared/data/superni/eval_dev.jsonl --decontaminate ../shared/data/eval/user_oriented_instructions.jsonl)
# 1. Synthesis (the curation counts are in runs/synth/*.jsonl.report.json).
$bin synth magpie -m $gen --n 900 --max-new-tokens 384 "${clean[@]}" --out runs/synth/magpie.jsonl
$bin synth self-instruct -m $gen --input ../shared/data/eval/seed_tasks.jsonl --n 640 --max-new-tokens 384 "${clean[@]}" --out runs/synth/si.jsonl
# 2. Equal-sized arms: N = the smaller synthesized set, at most 500.
n=$(( $(wc -l < runs/synth/magpie.jsonl) < $(wc -l < runs/synth/si.jsonl) ? $(wc -l < runs/synth/magpie.jsonl) : $(wc -l < runs/synth/si.jsonl) ))
n=$(( n < 500 ? n : 500 ))
echo "arms of $n examples"
for arm in magpie si alpaca; do
  src=$arm.jsonl; [ $arm = alpaca ] && src=../../../shared/data/sft/alpaca_en_demo.json
  printf 'seed: 0\nsources:\n  - path: %s\n    max: %d\n' "$src" "$n" > runs/synth/mix-$arm.yaml
  [ -d runs/syn-$arm/adapter ] || $bin sft experiments/synthesis/lora-gemma.yaml --set name=syn-$arm --set data.0.path=../../runs/synth/mix-$arm.yaml
done
# 3. SuperNI: the Quick Learners subset (2 instances per task, k = 2), Alpaca template.
for arm in magpie si alpaca; do
  $bin eval superni -m gemma3-270m --adapter runs/syn-$arm/adapter --template alpaca --data ../shared/data/superni/eval_dev.jsonl \
      --k-shot 2 --per-task 2 --seed 0 --max-new-tokens 48 --batch-size 8 --out reports/syn-$arm
done
$bin eval compare reports/syn-alpaca reports/syn-magpie reports/syn-si --out reports/syn-compare
# 4. Answers to the held-out user-oriented instructions, judged pairwise against the Alpaca arm.
jq -c '{id, prompt: (.instruction + (if (.instances[0].input // "") == "" then "" else "\n\n" + .instances[0].input end)), reference: .instances[0].output}' \
    ../shared/data/eval/user_oriented_instructions.jsonl > runs/synth/user_oriented.jsonl
for arm in magpie si alpaca; do
  $bin eval generic -m gemma3-270m --adapter runs/syn-$arm/adapter --template alpaca --data runs/synth/user_oriented.jsonl \
      --metrics rougeL --max-new-tokens 256 --batch-size 16 --out reports/syn-uo-$arm
done
for arm in magpie si; do
  $bin eval judge -m $gen --mode pairwise --questions ../shared/data/eval/user_oriented_instructions.jsonl --limit 100 \
      --answers reports/syn-uo-$arm --against reports/syn-uo-alpaca --batch-size 16 --out reports/syn-judge-$arm-vs-alpaca
done
