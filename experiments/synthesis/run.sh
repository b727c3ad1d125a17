#!/usr/bin/env bash
# The synthesis experiment (README, "The experiment: synthesized instruction data"):
# a generator writes instruction data with Magpie and with Self-Instruct; the gemma3-270m
# BASE model is LoRA-tuned on each and on as many Alpaca examples; the three are evaluated
# on the same SuperNI subset and judged pairwise (both orders) on held-out user-oriented
# instructions. Every step is resumable: rerun after a kill. Run from the repository root
# after `cargo build --release`.
#
# The defaults are the reduced run recorded in the README (2 cores, AVX2 only): SmolLM2-135M
# writes the data and Qwen2.5-Coder-0.5B judges. The issue's full scale is
#   GEN=qwen2.5-coder-1.5b-instruct JUDGE=qwen2.5-coder-1.5b-instruct N_MAGPIE=900 N_SI=640 \
#   PER_TASK=2 UO_LIMIT=252 JUDGE_LIMIT=100 EPOCHS=1 OUT=runs/synth-1.5b experiments/synthesis/run.sh
# (its first Magpie stage files are in results/partial-1.5b/: 640 instructions, 67 answers).
set -euo pipefail
bin=./target/release/instill
gen=${GEN:-smollm2-135m-instruct}
judge=${JUDGE:-qwen2.5-coder-0.5b-instruct}
out=${OUT:-runs/synth}
n_magpie=${N_MAGPIE:-200} n_si=${N_SI:-150} per_task=${PER_TASK:-1} uo_limit=${UO_LIMIT:-20} judge_limit=${JUDGE_LIMIT:-20} epochs=${EPOCHS:-2}
tag=$(basename "$out")
mkdir -p "$out" reports
if [ "$gen" = qwen2.5-coder-1.5b-instruct ] && [ -d experiments/synthesis/results/partial-1.5b/magpie.jsonl.work ] && [ ! -d "$out/magpie.jsonl.work" ]; then
  cp -r experiments/synthesis/results/partial-1.5b/magpie.jsonl.work "$out/"
fi
# Decontaminated against the held-out SuperNI instances and the judge prompts (read in
# Self-Instruct's task layout, every instance).
clean=(--near-dup 0.8 --decontaminate ../shared/data/superni/eval_dev.jsonl --decontaminate ../shared/data/eval/user_oriented_instructions.jsonl)
# 1. Synthesis (the curation counts are in $out/*.jsonl.report.json).
$bin synth magpie -m "$gen" --n "$n_magpie" --max-new-tokens 384 "${clean[@]}" --out "$out/magpie.jsonl"
$bin synth self-instruct -m "$gen" --input ../shared/data/eval/seed_tasks.jsonl --n "$n_si" --max-new-tokens 384 "${clean[@]}" --out "$out/si.jsonl"
# 2. Equal-sized arms: N = the smaller synthesized set, at most 500.
n=$(( $(wc -l < "$out/magpie.jsonl") < $(wc -l < "$out/si.jsonl") ? $(wc -l < "$out/magpie.jsonl") : $(wc -l < "$out/si.jsonl") ))
n=$(( n < 500 ? n : 500 ))
echo "arms of $n examples"
for arm in magpie si alpaca; do
  src=$(realpath "$out/$arm.jsonl" 2>/dev/null || true); [ $arm = alpaca ] && src=$(realpath ../shared/data/sft/alpaca_en_demo.json)
  printf 'seed: 0\nsources:\n  - path: %s\n    max: %d\n' "$src" "$n" > "$out/mix-$arm.yaml"
  [ -d "runs/$tag-$arm/adapter" ] || $bin sft experiments/synthesis/lora-gemma.yaml --set name="$tag-$arm" --set epochs="$epochs" \
      --set data.0.path="$(realpath "$out/mix-$arm.yaml")"
done
# 3. SuperNI: the Quick Learners subset (per_task instances per task, k = 2), Alpaca template.
for arm in magpie si alpaca; do
  $bin eval superni -m gemma3-270m --adapter "runs/$tag-$arm/adapter" --template alpaca --data ../shared/data/superni/eval_dev.jsonl \
      --k-shot 2 --per-task "$per_task" --seed 0 --max-new-tokens 48 --batch-size 8 --out "reports/$tag-$arm"
done
$bin eval compare "reports/$tag-alpaca" "reports/$tag-magpie" "reports/$tag-si" --out "reports/$tag-compare"
# 4. Answers to the held-out user-oriented instructions, judged pairwise against the Alpaca arm.
jq -c -s --argjson n "$uo_limit" '.[:$n][] | {id, prompt: (.instruction + (if (.instances[0].input // "") == "" then "" else "\n\n" + .instances[0].input end)), reference: .instances[0].output}' \
    ../shared/data/eval/user_oriented_instructions.jsonl > "$out/user_oriented.jsonl"
for arm in magpie si alpaca; do
  $bin eval generic -m gemma3-270m --adapter "runs/$tag-$arm/adapter" --template alpaca --data "$out/user_oriented.jsonl" \
      --metrics rougeL --max-new-tokens 256 --batch-size 16 --out "reports/$tag-uo-$arm"
done
for arm in magpie si; do
  $bin eval judge -m "$judge" --mode pairwise --questions ../shared/data/eval/user_oriented_instructions.jsonl --limit "$judge_limit" \
      --answers "reports/$tag-uo-$arm" --against "reports/$tag-uo-alpaca" --batch-size 16 --out "reports/$tag-judge-$arm-vs-alpaca"
done
