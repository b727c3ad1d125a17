"""Peer for `instill bench gemm`: torch.matmul at the same shapes, fp32 and bf16.

Reads one JSON line per shape {"name", "m", "n", "k"} on stdin and prints one JSON line
per shape: GFLOP/s of `a @ w.t()` (a (m, k), w (n, k), as a linear layer computes it),
best of --reps timed rounds of --iters products, after one warm-up round.
"""
import argparse, json, sys, time

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--reps", type=int, default=5)
p.add_argument("--iters", type=int, default=5)
a = p.parse_args()

import torch

torch.set_num_threads(a.threads)
torch.manual_seed(0)
for line in sys.stdin:
    s = json.loads(line)
    m, n, k = s["m"], s["n"], s["k"]
    out = {"name": s["name"], "torch": torch.__version__}
    for dt, key in [(torch.float32, "f32"), (torch.bfloat16, "bf16")]:
        x = torch.randn(m, k).to(dt)
        w = torch.randn(n, k).to(dt)
        with torch.no_grad():
            x @ w.t()
            best = 0.0
            for _ in range(a.reps):
                t = time.perf_counter()
                for _ in range(a.iters):
                    x @ w.t()
                best = max(best, a.iters * 2.0 * m * n * k / (time.perf_counter() - t))
        out[key] = best / 1e9
    print(json.dumps(out), flush=True)
