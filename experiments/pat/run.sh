#!/usr/bin/env bash
# PAT (pruning-aware tuning) on SmolLM2-135M-Instruct at two sparsities, 25% and 50% of
# the 576 hidden channels, with recipes/pat-smollm2.yaml (the data and the 80 steps of the
# LoRA / LoRAMoE experiment, experiments/loramoe/run.sh, whose evaluation sets and base
# and LoRA rows it shares). Each run is folded and pruned by `export --merge` (a Hugging
# Face directory, and an f16 GGUF for `bench generate` against llama.cpp: 432 channels
# are not a multiple of q8_0's 32-value blocks), then evaluated as the smaller model on
# the world (Jeopardy) and MMLU sets. The mask's rate is 0.25 per step, 10x the default
# 2 / G, which left its logits at +-0.07 by 0.8 G in an 80-step run. Writes runs/pat-exp/* and
# reports/pat-*; experiments/pat/table.py prints the README table.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${INSTILL_BIN:-./target/release/instill}
out=runs/pat-exp
ev=runs/loramoe-exp/eval
mkdir -p $out $ev
dev=../shared/data/superni/eval_dev.jsonl
[ -f $ev/world.jsonl ] || jq -c 'select(.task == "task308_jeopardy_answer_generation_all")' $dev > $ev/world.jsonl
[ -f $ev/mmlu.jsonl ] || jq -c 'select((.task | test("mmmlu")) and .task != "task698_mmmlu_answer_generation_global_facts")' $dev > $ev/mmlu.jsonl
[ -f $out/base-f16.gguf ] || $bin export -m smollm2-135m-instruct --gguf --quant f16 --out $out/base-f16.gguf
for s in 25 50; do
  run=$out/pat$s
  [ -f $run/adapter/adapter_config.json ] || $bin train recipes/pat-smollm2.yaml --set output_dir=$run --set name=pat$s --set pat.sparsity=0.$s --set pat.mask_lr=0.25
  [ -f $run/pruned/config.json ] || $bin export $run --merge --out $run/pruned
  [ -f $run/pruned-f16.gguf ] || $bin export $run --merge --gguf --quant f16 --out $run/pruned-f16.gguf
  for set in world mmlu; do
    per=(); [ $set = mmlu ] && per=(--per-task 5 --seed 0)
    [ -f reports/pat$s-$set/scores.json ] || $bin eval superni -m $run/pruned --data $ev/$set.jsonl --k-shot 2 "${per[@]}" \
      --max-new-tokens 32 --batch-size 8 --template model --quiet --out reports/pat$s-$set
  done
done
$bin bench generate -m $out/base-f16.gguf -m $out/pat25/pruned-f16.gguf -m $out/pat50/pruned-f16.gguf --peer-python ${PEER_PYTHON:-/tmp/instill-serve-venv/bin/python} | tee $out/bench-generate.txt
python3 experiments/pat/table.py
