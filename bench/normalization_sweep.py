"""The normalization study's rate sweep: one stacked ensemble vs one model after another.

Ours is ``descentlab.experiments.normalization._sweep`` (every rate of the grid as one
``engine.Stack``, a torch SGD param group per rate, BatchNorm on full-batch statistics); the
peer is ``train_full_batch`` at each rate in turn (torch's SGD on one model, the engine's
``run_steps`` loop). Both do the same full-batch GD steps on the standardised breast-cancer
table; the timing covers training only, best of ``--repeats`` after one warm-up.

    .venv/bin/python bench/normalization_sweep.py            # 11 rates x 300 steps, 3 networks
"""

from __future__ import annotations

import argparse
import time

from descentlab.openmp import set_wait_default  # noqa: E402

set_wait_default()  # before torch loads OpenMP (see descentlab/openmp.py)

import torch
from torch import nn

from descentlab.experiments.normalization import DEFAULT_RATES, _sweep, train_full_batch
from descentlab.experiments.normalization_networks import make_network
from descentlab.problems.features import breast_cancer, standardise


def _best(run, repeats: int) -> float:
    run()  # warm-up: vmap's first call
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    data = breast_cancer()
    (X,) = standardise(data.X_train)
    y = data.y_train
    loss_fn = nn.functional.cross_entropy
    print(f"{len(DEFAULT_RATES)} rates x {args.steps} steps, {torch.get_num_threads()} threads\n")
    print("| network | stacked | one after another | ratio |\n|---|---|---|---|")
    for label, model, batchnorm in (("tanh 30-8-2", "tanh", False), ("tanh 30-8-2 with BatchNorm", "tanh", True),
                                    ("deep tanh 30-16-16-16-2", "deep", False)):
        def fresh(model=model, batchnorm=batchnorm):
            torch.manual_seed(0)
            return make_network(model, 30, 2, batchnorm=batchnorm)

        stacked = _best(lambda: _sweep(fresh, loss_fn, X, y, DEFAULT_RATES, args.steps), args.repeats)
        separate = _best(lambda: [train_full_batch(fresh(), loss_fn, X, y, r, args.steps) for r in DEFAULT_RATES],
                         args.repeats)
        print(f"| {label} | {stacked:.2f} s | {separate:.2f} s | {separate / stacked:.1f}x |")


if __name__ == "__main__":
    main()
