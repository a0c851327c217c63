"""Curvature products of a small model in a user's own process on a busy machine.

Usage:
    .venv/bin/python bench/busy_threads.py [--busy N] [--rounds R] [--dense-rounds D]

The measurement runs in a fresh process that imports torch *first* (as a user's training
script does: descentlab's OpenMP wait setting cannot apply) with no environment variable set,
with torch's default thread count. Beside it run ``--busy`` processes that burn a core each
(default 1). It times one HVP and one ``dense()`` of the digits MLP 64-32-10 (2,410
parameters, float64, 1,797 samples) three ways: ``ours`` and ``single`` in alternating rounds
(the load on a shared machine drifts; each round sees both), ``all threads`` after them:

* ``ours``: the operator as shipped (``descentlab.openmp.threads_for`` picks the threads);
* ``single``: ``torch.set_num_threads(1)`` around the call (the target: single-thread speed);
* ``all threads``: the thread choice switched off (every product on torch's default threads).

The table gives medians over rounds and the median of the per-round ratios ours / single
(target <= 1).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, statistics, sys, time
import torch                              # first, as in a user's script
from torch import nn
sys.path.insert(0, {src!r})
import descentlab.openmp as openmp
from descentlab.curvature import HessianOperator
from sklearn.datasets import load_digits
d = load_digits()
X, y = torch.tensor(d.data / 16.0), torch.tensor(d.target)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).double()
op = HessianOperator(model, nn.functional.cross_entropy, (X, y))
v = torch.randn(op.n_params, dtype=torch.float64)
default = torch.get_num_threads()
shipped = (openmp.SINGLE_THREAD_WORK, openmp._free_cores)

def setting(mode):
    openmp.SINGLE_THREAD_WORK, openmp._free_cores = shipped
    torch.set_num_threads(1 if mode == "single" else default)
    if mode == "all threads":
        openmp.SINGLE_THREAD_WORK, openmp._free_cores = 0.0, (lambda: 1 << 10)

def timed(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls

modes = ("ours", "single", "all threads")
hvp = {{m: [] for m in modes}}
dense = {{m: [] for m in modes}}
op @ v
# "ours" and "single" alternate (the order flips every round); "all threads" comes last, since
# after it torch's OpenMP workers keep spinning and would slow whatever ran next
for round in range({rounds}):
    for mode in (modes[:2] if round % 2 == 0 else modes[1::-1]):
        setting(mode)
        hvp[mode].append(timed(lambda: op @ v, 10))
        if round < {dense_rounds}:
            dense[mode].append(timed(op.dense, 1))
for round in range({dense_rounds}):
    setting("all threads")
    hvp["all threads"].append(timed(lambda: op @ v, 10))
    dense["all threads"].append(timed(op.dense, 1))
setting("ours")
ratio = statistics.median(a / b for a, b in zip(hvp["ours"], hvp["single"]))
dense_ratio = statistics.median(a / b for a, b in zip(dense["ours"], dense["single"]))
print(json.dumps({{"hvp": {{m: statistics.median(t) for m, t in hvp.items()}},
                  "dense": {{m: statistics.median(t) for m, t in dense.items()}},
                  "ratio": ratio, "dense_ratio": dense_ratio, "threads": default}}))
"""


def measure(rounds: int, dense_rounds: int) -> dict:
    src = str(Path(__file__).resolve().parents[1] / "src")
    code = CHILD.format(src=src, rounds=rounds, dense_rounds=dense_rounds)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=1, help="processes burning a core each beside (default 1)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds of 10 HVPs per mode")
    parser.add_argument("--dense-rounds", type=int, default=3, help="rounds that also time dense()")
    args = parser.parse_args(argv)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        time.sleep(1.0)
        r = measure(args.rounds, args.dense_rounds)
    finally:
        for burner in burners:
            burner.kill()
    hvp, dense = r["hvp"], r["dense"]
    print(f"### digits MLP 64-32-10 (2,410 parameters, float64), torch imported first, {args.busy} busy "
          f"process(es) beside, torch's default {r['threads']} threads\n")
    print("| measure | ours | single thread | all threads | ours / single (target <= 1) |")
    print("|---|---|---|---|---|")
    print(f"| one HVP (median of {args.rounds} rounds of 10) | {hvp['ours'] * 1e3:.2f} ms | "
          f"{hvp['single'] * 1e3:.2f} ms | {hvp['all threads'] * 1e3:.2f} ms | {r['ratio']:.2f} |")
    print(f"| dense() (median of {args.dense_rounds} rounds) | {dense['ours']:.2f} s | {dense['single']:.2f} s | "
          f"{dense['all threads']:.2f} s | {r['dense_ratio']:.2f} |")


if __name__ == "__main__":
    main()
