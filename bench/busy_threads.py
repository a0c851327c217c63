"""Curvature products of a small model in a user's own process on a busy machine.

Usage:
    .venv/bin/python bench/busy_threads.py [--busy N] [--repeat R]

Each measurement runs in a fresh process that imports torch *first* (as a user's training
script does: descentlab's OpenMP wait setting cannot apply) with no environment variable set,
and keeps torch's default thread count. Beside it run ``--busy`` processes that burn a core
each (default 1). It times one HVP (median of ``--repeat``) and one ``dense()`` of the digits
MLP 64-32-10 (2,410 parameters, float64, 1,797 samples) three ways:

* ``ours``: the operator as shipped (``descentlab.openmp.threads_for`` picks the threads);
* ``single``: the same process with ``torch.set_num_threads(1)`` before anything (the target:
  single-thread speed);
* ``all threads``: the thread choice switched off (every product on torch's default threads).

The table gives each time and the ratio ours / single (target <= 1).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import torch                              # first, as in a user's script
from torch import nn
sys.path.insert(0, {src!r})
import descentlab.openmp as openmp
from descentlab.curvature import HessianOperator
mode = {mode!r}
if mode == "single":
    torch.set_num_threads(1)
if mode == "all threads":
    openmp.SINGLE_THREAD_WORK = 0.0
    openmp._free_cores = lambda: 1 << 10
from sklearn.datasets import load_digits
d = load_digits()
X, y = torch.tensor(d.data / 16.0), torch.tensor(d.target)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).double()
op = HessianOperator(model, nn.functional.cross_entropy, (X, y))
v = torch.randn(op.n_params, dtype=torch.float64)
op @ v
times = []
for _ in range({repeat}):
    t = time.perf_counter(); op @ v; times.append(time.perf_counter() - t)
times.sort()
t = time.perf_counter(); op.dense(); dense = time.perf_counter() - t
print(json.dumps({{"hvp": times[len(times) // 2], "dense": dense, "threads": torch.get_num_threads()}}))
"""


def measure(mode: str, repeat: int) -> dict:
    src = str(Path(__file__).resolve().parents[1] / "src")
    code = CHILD.format(src=src, mode=mode, repeat=repeat)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=1, help="processes burning a core each beside (default 1)")
    parser.add_argument("--repeat", type=int, default=30, help="HVPs timed per process (median)")
    args = parser.parse_args(argv)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        time.sleep(1.0)
        results = {mode: measure(mode, args.repeat) for mode in ("ours", "single", "all threads")}
    finally:
        for burner in burners:
            burner.kill()
    ours, single, every = results["ours"], results["single"], results["all threads"]
    print(f"### digits MLP 64-32-10 (2,410 parameters, float64), torch imported first, {args.busy} busy "
          f"process(es) beside, torch's default {every['threads']} threads\n")
    print("| measure | ours | single thread | all threads | ours / single (target <= 1) |")
    print("|---|---|---|---|---|")
    print(f"| one HVP (median of {args.repeat}) | {ours['hvp'] * 1e3:.2f} ms | {single['hvp'] * 1e3:.2f} ms | "
          f"{every['hvp'] * 1e3:.2f} ms | {ours['hvp'] / single['hvp']:.2f} |")
    print(f"| dense() | {ours['dense']:.2f} s | {single['dense']:.2f} s | {every['dense']:.2f} s | "
          f"{ours['dense'] / single['dense']:.2f} |")


if __name__ == "__main__":
    main()
