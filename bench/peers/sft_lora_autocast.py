"""Peer for `instill bench train --modes lora-bf16`: the shared PyTorch + PEFT LoRA
script (../shared/bench/peers/sft_lora_torch.py, same arguments) run under CPU autocast to
bf16, which is how PyTorch users train in bf16 on a CPU: matmuls in bf16 (oneDNN; AMX
where the CPU has it), weights and optimizer state in fp32.

Usage: sft_lora_autocast.py SHARED_SCRIPT [its arguments...]
"""
import json, os, runpy, sys

script = os.path.abspath(sys.argv[1])
sys.argv = [script] + sys.argv[2:]
sys.path.insert(0, os.path.dirname(script))

import torch

torch.autocast("cpu", dtype=torch.bfloat16).__enter__()
runpy.run_path(script, run_name="__main__")
