"""Loss-landscape grid: batched (vmap over parameter offsets) vs one forward per point.

The per-point loop is what most landscape scripts do (Li et al.'s ``loss-landscape`` code, and
the ``loss-landscapes`` package): write each grid point's weights into the model, run it,
read the loss. No landscape package ships with descentlab, so that loop is written here as
the baseline, on the same model, data and directions, in the same process.

    .venv/bin/python bench/landscape.py [--resolution 21] [--repeats 3]

Prints a markdown table of times and the ratio ours / loop (below 1 = ours is faster).
"""

from __future__ import annotations

import os
import argparse
import time

from descentlab.openmp import set_wait_default  # noqa: E402

set_wait_default()  # before torch loads OpenMP (see descentlab/openmp.py)

import torch
from torch.nn.utils import vector_to_parameters

from descentlab.landscape import evaluate_losses, flatten, random_direction
from descentlab.problems.workloads import get_workload


def per_point_loop(model, loss_fn, X, y, center, directions, coords):
    losses = []
    model.eval()
    with torch.no_grad():
        for c in coords:
            vector_to_parameters(center + c @ directions, model.parameters())
            losses.append(loss_fn(model(X), y))
    vector_to_parameters(center, model.parameters())
    return torch.stack(losses)


def best_of(repeats, fn):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for name in ("digits-mlp", "moons"):
        workload = get_workload(name)
        torch.manual_seed(0)
        model = workload.make_model()
        X, y = workload.X_train, workload.y_train
        center = flatten(model)
        directions = torch.stack([random_direction(model, seed=0), random_direction(model, seed=1)])
        axis = torch.linspace(-1, 1, args.resolution)
        coords = torch.cartesian_prod(axis, axis)
        t_loop, loop = best_of(args.repeats, lambda: per_point_loop(model, workload.loss_fn, X, y, center,
                                                                      directions, coords))
        for chunk, workers in ((16, 1), (64, 1), (256, 1), (64, 2)):
            t_ours, ours = best_of(args.repeats, lambda: evaluate_losses(
                model, workload.loss_fn, (X, y), center, directions, coords, chunk_size=chunk, workers=workers))
            assert torch.allclose(ours, loop, rtol=1e-4, atol=1e-5), "batched and looped losses differ"
            rows.append((name, center.numel(), len(X), len(coords), chunk, workers, t_ours, t_loop))

    print(f"torch {torch.__version__}, {args.threads} thread(s), best of {args.repeats}\n")
    print("| model | params | samples | points | chunk | workers | ours (s) | per-point loop (s) | ours / loop |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, samples, points, chunk, workers, t_ours, t_loop in rows:
        print(f"| {name} | {n} | {samples} | {points} | {chunk} | {workers} | {t_ours:.3f} | {t_loop:.3f} | "
              f"{t_ours / t_loop:.2f} |")


if __name__ == "__main__":
    main()
