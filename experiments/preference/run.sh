#!/usr/bin/env bash
# The preference experiment (README "The experiment: reward model, DPO and ORPO on hh-rlhf"):
# SmolLM2-135M-Instruct (already SFT'd by its authors) as the starting policy;
#  1. a Bradley-Terry reward model (LoRA + score head) on N_TRAIN hh-rlhf pairs, its
#     accuracy on 100 held-out pairs;
#  2. DPO and ORPO on the same pairs; on the held-out pairs, how often each model gives
#     the chosen response the higher log-prob, before vs after, and the margins;
#  3. the reward model's win rate of each aligned model's answers over the SFT model's
#     on N_PROMPTS held-out prompts (greedy, 64 new tokens).
# Everything on the quantized Q4_1 base (QLoRA), 2 CPU cores. Results in results/.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${INSTILL:-./target/release/instill}
N_TRAIN=${N_TRAIN:-200}
N_PROMPTS=${N_PROMPTS:-50}
R=experiments/preference/results
W=${WORK:-/tmp/instill-pref-exp}  # absolute: recipe paths resolve against recipes/
mkdir -p "$R" "$W"
head -n "$N_TRAIN" data/preference/hh_train.jsonl > "$W/train.jsonl"
HELD=$PWD/data/preference/hh_heldout.jsonl
head -n "$N_PROMPTS" data/preference/hh_prompts.jsonl > "$W/prompts.jsonl"
jq -c '{messages: [{role: "user", content: .prompt}]}' "$W/prompts.jsonl" > "$W/prompts-chat.jsonl"
common=(--set "data.0.path=$W/train.jsonl" --set "val_data.0.path=$HELD" --set eval_every=0 --set save_every=0)

echo "== 1. reward model"
"$BIN" train recipes/reward-smollm2.yaml "${common[@]}" --set "output_dir=$W/rm"
"$BIN" reward score -m "$W/rm/model" --data "$HELD" --out "$R/rm-heldout"

echo "== 2. DPO and ORPO"
"$BIN" train recipes/dpo-smollm2.yaml "${common[@]}" --set "output_dir=$W/dpo"
"$BIN" train recipes/orpo-smollm2.yaml "${common[@]}" --set "output_dir=$W/orpo"
"$BIN" eval pairs --data "$HELD" --out "$R/pairs-sft"
"$BIN" eval pairs --adapter "$W/dpo/adapter" --data "$HELD" --out "$R/pairs-dpo"
"$BIN" eval pairs --adapter "$W/orpo/adapter" --data "$HELD" --out "$R/pairs-orpo"

echo "== 3. win rates under the reward model"
gen() {  # name [adapter]
  local extra=()
  if [ $# -gt 1 ]; then extra=(--adapter "$2"); fi
  "$BIN" generate "${extra[@]}" --prompts "$W/prompts-chat.jsonl" --batch-size 10 --max-new-tokens 64 > "$W/answers-$1.jsonl"
}
gen sft
gen dpo "$W/dpo/adapter"
gen orpo "$W/orpo/adapter"
for m in dpo orpo; do
  # A pair per prompt: the aligned model's answer as "chosen", the SFT model's as
  # "rejected"; the reward model's accuracy on these is the aligned model's win rate.
  paste -d '\t' "$W/prompts.jsonl" "$W/answers-$m.jsonl" "$W/answers-sft.jsonl" | while IFS=$'\t' read -r p a b; do
    jq -cn --argjson p "$p" --argjson a "$a" --argjson b "$b" '{prompt: $p.prompt, chosen: ($a.text | if . == "" then " " else . end), rejected: ($b.text | if . == "" then " " else . end), same: ($a.text == $b.text)}'
  done > "$W/vs-$m.jsonl"
  jq -c 'select(.same | not) | del(.same)' "$W/vs-$m.jsonl" > "$W/vs-$m-differ.jsonl"
  echo "$m: $(wc -l < "$W/vs-$m-differ.jsonl") of $N_PROMPTS answers differ from the SFT model's" | tee "$R/winrate-$m.txt"
  "$BIN" reward score -m "$W/rm/model" --data "$W/vs-$m-differ.jsonl" --out "$R/winrate-$m" | tee -a "$R/winrate-$m.txt"
done
cp "$W"/answers-*.jsonl "$R/"
for r in rm dpo orpo; do
  cp "$W/$r/metrics.jsonl" "$R/metrics-$r.jsonl"
  for f in "$W/$r"/*.png; do cp "$f" "$R/$r-$(basename "$f")"; done
done
echo "== summaries"
for d in rm-heldout pairs-sft pairs-dpo pairs-orpo winrate-dpo winrate-orpo; do echo "$d: $(jq -c . "$R/$d/summary.json")"; done
