"""List the built-in workloads: what data and model each is, its size and its training defaults.

Every command that trains or measures a model takes one with --workload NAME (or your own
model and data: --model package.module:factory --data file.npz). The analytic 2-D surfaces
of `descentlab surface` are listed by `descentlab surface --list`.

Example:
  descentlab workloads
  descentlab workloads --json
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split the sizes are counted on (default 0)")


def run(args: argparse.Namespace) -> int:
    import torch

    from descentlab.commands.common import emit
    from descentlab.problems.workloads import WORKLOADS, get_workload

    rows = []
    for name in WORKLOADS:
        workload = get_workload(name, seed=args.seed)
        torch.manual_seed(args.seed)
        n_params = sum(p.numel() for p in workload.make_model().parameters())
        rows.append({"name": name, "task": workload.task, "train": len(workload.X_train), "val": len(workload.X_val),
                     "parameters": n_params, "optimizer": workload.optimizer, "lr": workload.lr,
                     "batch_size": workload.batch_size, "steps": workload.steps, "description": WORKLOADS[name]})
    header = ("name", "task", "train", "val", "parameters", "defaults", "description")
    cells = [header] + [(r["name"], r["task"], str(r["train"]), str(r["val"]), str(r["parameters"]),
                         f"{r['optimizer']} lr {r['lr']:g}, batch {r['batch_size'] or 'full'}, {r['steps']} steps",
                         r["description"]) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    for index, row in enumerate(cells):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        if index == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
    print("your own: --model package.module:factory --data file.npz|file.csv; surfaces: descentlab surface --list")
    emit(args, {"workloads": rows})
    return 0
