#!/usr/bin/env bash
# LoRA vs LoRAMoE vs sparse fine-tuning vs a parallel adapter on SmolLM2-135M-Instruct,
# same data and steps (LoRA r = 24 on the MLP projections ~ six rank-4 experts; LoRAMoE
# adds its routers; sparse: recipes/sparse-smollm2.yaml, 40 full steps, a 1% mask, 40
# masked steps; adapter: recipes/adapter-parallel.yaml, 64 wide on down_proj, scale 4):
# trained on recipes/loramoe-smollm2.yaml's data (closed-book QA as world data, Alpaca as
# task data), then every arm and the base model evaluated on
#   world: the Jeopardy task's held-out eval_dev instances (its training instances are
#          in the world data, these are not), and
#   mmlu:  MMLU questions of the 41 subjects *not* trained on (transfer and forgetting),
# 2-shot SuperNI prompts, greedy, the model's chat template. Writes runs/loramoe-exp/*
# and reports/loramoe-*; experiments/loramoe/table.py prints the README table.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${INSTILL_BIN:-./target/release/instill}
out=runs/loramoe-exp
mkdir -p $out/eval
dev=../shared/data/superni/eval_dev.jsonl
jq -c 'select(.task == "task308_jeopardy_answer_generation_all")' $dev > $out/eval/world.jsonl
jq -c 'select((.task | test("mmmlu")) and .task != "task698_mmmlu_answer_generation_global_facts")' $dev > $out/eval/mmlu.jsonl
[ -f $out/loramoe/adapter/adapter_config.json ] || $bin train recipes/loramoe-smollm2.yaml --set output_dir=$out/loramoe
[ -f $out/lora/adapter/adapter_config.json ] || $bin train recipes/loramoe-smollm2.yaml --set output_dir=$out/lora \
  --set name=lora-vs-loramoe --set method=lora --set 'lora={r: 24, alpha: 192, dropout: 0.05, target_modules: [gate_proj, up_proj, down_proj]}'
[ -f $out/sparse/adapter/adapter_config.json ] || $bin train recipes/sparse-smollm2.yaml --set output_dir=$out/sparse
[ -f $out/adapter/adapter/adapter_config.json ] || $bin train recipes/adapter-parallel.yaml --set output_dir=$out/adapter
for arm in base lora loramoe sparse adapter; do
  adapter=(); [ $arm = base ] || adapter=(--adapter $out/$arm/adapter)
  for set in world mmlu; do
    per=(); [ $set = mmlu ] && per=(--per-task 5 --seed 0)
    [ -f reports/loramoe-$arm-$set/scores.json ] || $bin eval superni -m smollm2-135m-instruct "${adapter[@]}" --data $out/eval/$set.jsonl --k-shot 2 "${per[@]}" \
      --max-new-tokens 32 --batch-size 8 --template model --quiet --out reports/loramoe-$arm-$set
  done
done
python3 experiments/loramoe/table.py
