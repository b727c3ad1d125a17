#!/usr/bin/env bash
# Iterative self-alignment: K rounds of sample -> score -> pair -> DPO, each round from
# the last round's policy (its adapter is the next round's `init_adapter`, so it is also
# that round's reference model).
#
# usage: scripts/iterative_dpo.sh K [REWARD_MODEL_DIR] [PROMPTS_JSONL]
#   REWARD_MODEL_DIR  default runs/reward-smollm2/model (instill train recipes/reward-smollm2.yaml)
#   PROMPTS_JSONL     default data/preference/hh_prompts.jsonl ({"prompt": ...} per line)
# Environment: N (samples per prompt, 4), RECIPE (recipes/dpo-smollm2.yaml), OUT (runs/iterative).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${INSTILL:-./target/release/instill}
K=${1:?give the number of rounds}
RM=${2:-runs/reward-smollm2/model}
PROMPTS=${3:-data/preference/hh_prompts.jsonl}
N=${N:-4}
RECIPE=${RECIPE:-recipes/dpo-smollm2.yaml}
OUT=${OUT:-runs/iterative}
mkdir -p "$OUT"
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
adapter=""
for k in $(seq 1 "$K"); do
  echo "== round $k: sample $N responses per prompt, score, pair"
  extra=()
  if [ -n "$adapter" ]; then extra=(--adapter "$adapter"); fi
  "$BIN" pairs "${extra[@]}" --reward-model "$RM" --prompts "$PROMPTS" --n "$N" --temperature 1.0 --seed "$k" \
    --max-new-tokens 96 --out "$OUT/pairs-$k.jsonl"
  jq -c 'select(.chosen != null)' "$OUT/pairs-$k.jsonl" > "$OUT/pairs-$k.kept.jsonl"
  echo "== round $k: DPO on $(wc -l < "$OUT/pairs-$k.kept.jsonl") pairs"
  sets=(--set "name=iterative-$k" --set "output_dir=$OUT/round-$k" --set "data.0.path=$(abs "$OUT/pairs-$k.kept.jsonl")" --set "val_data=[]")
  if [ -n "$adapter" ]; then sets+=(--set "init_adapter=$(abs "$adapter")"); fi
  "$BIN" train "$RECIPE" "${sets[@]}"
  adapter="$OUT/round-$k/adapter"
  "$BIN" reward score -m "$RM" --data "$OUT/pairs-$k.kept.jsonl" --out "$OUT/round-$k/pairs-score" > /dev/null
done
echo "final policy: --adapter $adapter"
