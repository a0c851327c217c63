"""K small MLPs on digits: one vmapped ensemble vs the plain loop, one model after another.

The peer is the loop every tutorial writes: an ``nn.Module`` and its ``torch.optim`` optimizer,
trained model by model. Ours is ``descentlab.experiments.ensemble.train_stacked`` (the same
registry optimizer stepping the stacked parameters). Both do the same updates on the same
batches; only the training loop is timed (no evaluation), best of ``--repeats``.

A second table answers "one ensemble per learning rate, or one ensemble with a param group
per rate?": 4 rates x 4 seeds as one ensemble vs four ensembles of 4 seeds.

    .venv/bin/python bench/ensemble.py            # K=16, 200 updates, batch 64, 2 threads
"""

from __future__ import annotations

import os
import argparse
import math
import platform
import time

from descentlab.openmp import set_wait_default  # noqa: E402

set_wait_default()  # before torch loads OpenMP (see descentlab/openmp.py)

import torch
from torch.nn import functional as F

from descentlab.experiments.ensemble import Member, train_stacked
from descentlab.problems.workloads import get_workload

PEERS = {
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "momentum": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
}


def plain_loop(workload, optimizer, members, steps, batch_size) -> float:
    """Seconds to train the members one after another with the ordinary loop."""
    X, y = workload.X_train, workload.y_train
    n = X.shape[0]
    per_epoch = math.ceil(n / batch_size)
    total = 0.0
    for member in members:
        torch.manual_seed(member.seed)
        model = workload.make_model()
        opt = PEERS[optimizer](model.parameters(), member.lr)
        gen = torch.Generator().manual_seed(member.seed)
        start = time.perf_counter()
        order = None
        for step in range(steps):
            if step % per_epoch == 0:
                order = torch.randperm(n, generator=gen)
            index = order[(step % per_epoch) * batch_size:(step % per_epoch + 1) * batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(X[index]), y[index]).backward()
            opt.step()
        total += time.perf_counter() - start
    return total


def best(fn, repeats):
    return min(fn() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workload = get_workload("digits-mlp")
    members = [Member(seed, 0.05) for seed in range(args.k)]
    train_stacked(workload, "sgd", members[:2], steps=3, batch_size=args.batch_size, eval_every=3)  # warm-up

    print(f"K = {args.k} digits MLPs (64-64-10), {args.steps} updates, batch {args.batch_size}, "
          f"{args.threads} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}\n")
    print("| optimizer | ensemble (s) | one after another (s) | ensemble / loop | speed-up |")
    print("|---|---|---|---|---|")
    for optimizer in ("sgd", "momentum", "adam"):
        ours = best(lambda: train_stacked(workload, optimizer, members, steps=args.steps, batch_size=args.batch_size,
                                          eval_every=args.steps).wall_seconds, args.repeats)
        peer = best(lambda: plain_loop(workload, optimizer, members, args.steps, args.batch_size), args.repeats)
        print(f"| {optimizer} | {ours:.3f} | {peer:.3f} | {ours / peer:.3f} | {peer / ours:.1f}x |")

    rates = [0.01, 0.03, 0.1, 0.3]
    per_rate = max(1, args.k // len(rates))
    grouped = [Member(seed, lr) for lr in rates for seed in range(per_rate)]
    print(f"\nPer-member learning rates: {len(rates)} rates x {per_rate} seeds\n")
    print("| optimizer | one ensemble, a param group per rate (s) | one ensemble per rate (s) | ratio |")
    print("|---|---|---|---|")
    for optimizer in ("momentum", "adam"):
        one = best(lambda: train_stacked(workload, optimizer, grouped, steps=args.steps, batch_size=args.batch_size,
                                         eval_every=args.steps).wall_seconds, args.repeats)
        split = best(lambda: sum(
            train_stacked(workload, optimizer, [m for m in grouped if m.lr == lr], steps=args.steps,
                          batch_size=args.batch_size, eval_every=args.steps).wall_seconds for lr in rates),
            args.repeats)
        print(f"| {optimizer} | {one:.3f} | {split:.3f} | {one / split:.3f} |")


if __name__ == "__main__":
    main()
