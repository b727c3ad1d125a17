#!/usr/bin/env python3
"""mergekit peer for `instill bench merge`: `mergekit-yaml CONFIG OUT` with its default
options (CPU, no lazy unpickle: the inputs are safetensors, which mergekit memory-maps
anyway), no model card.

Reads {"config", "out"} as JSON on stdin (model paths relative to the config), runs the merge in this process exactly as the
`mergekit-yaml` entry point does (mergekit.merge.run_merge with MergeOptions()) and prints
one JSON line: wall seconds of the merge, seconds spent importing mergekit/torch, and this
process's peak RSS (ru_maxrss, MiB), which includes the interpreter and torch.
"""
import json
import os
import resource
import sys
import time

req = json.load(sys.stdin)
# Model names in the YAML are paths relative to it (mergekit resolves them against the cwd).
os.chdir(os.path.dirname(os.path.abspath(req["config"])))
os.environ["HF_HUB_OFFLINE"] = "1"
t0 = time.time()
import yaml  # noqa: E402
from mergekit.config import MergeConfiguration  # noqa: E402
from mergekit.merge import run_merge  # noqa: E402
from mergekit.options import MergeOptions  # noqa: E402

t_import = time.time() - t0
with open(req["config"], encoding="utf-8") as f:
    text = f.read()
cfg = MergeConfiguration.model_validate(yaml.safe_load(text))
t1 = time.time()
run_merge(cfg, req["out"], options=MergeOptions(write_model_card=False, quiet=True), config_source=text)
print(json.dumps({"seconds": time.time() - t1, "import_seconds": t_import, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
