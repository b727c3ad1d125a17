#!/usr/bin/env bash
# The README's main job: fetch SmolLM2-135M-Instruct, LoRA-tune it (QLoRA: the base stays
# Q4_1) on data/quickstart/train.jsonl (196 short questions, every answer in one format),
# and show held-out answers before and after. About 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${INSTILL:-./target/release/instill}
PROMPTS=data/quickstart/prompts.jsonl
text() { sed -E 's/.*"text":"(([^"\\]|\\.)*)".*/\1/'; }
echo "== before: the base model on held-out questions"
"$BIN" generate --prompts "$PROMPTS" --max-new-tokens 40 | text | tee /tmp/instill-before.txt
echo "== tuning (loss per step in runs/lora-smollm2/metrics.jsonl, curve in runs/lora-smollm2/loss.png)"
rm -rf runs/lora-smollm2
"$BIN" sft recipes/lora-smollm2.yaml
echo "== after: the same questions with the adapter"
"$BIN" generate --adapter runs/lora-smollm2/adapter --prompts "$PROMPTS" --max-new-tokens 40 | text
