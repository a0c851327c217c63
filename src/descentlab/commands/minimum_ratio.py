"""The lecture's minimum-ratio study (after Dauphin et al. 2014): are trained networks stuck at minima?

Trains many small networks as one vmapped ensemble (each with its own seed and a
log-spaced learning rate), drives each to a nearby critical point by minimising
||grad L||^2 (Adam on Hessian-vector products, then Levenberg-Marquardt with exact
Hessians, vmapped over all networks), and computes the exact Hessian spectra there (one
batched eigh). Plots training loss against the
minimum ratio (fraction of positive eigenvalues), a histogram of the ratios, and counts the
strict minima. Points whose gradient is not small are reported as gradient-flat or not
converged, never as critical points.

Examples:
  descentlab minimum-ratio                                   # 100 networks on moons, ~2 min CPU
  descentlab minimum-ratio --networks 20 --train-steps 200 --out runs/mr-small
  descentlab minimum-ratio --workload lecture --train-steps 0 --init-scale 0.05 --networks 4

Writes runs/minimum-ratio-<timestamp>/ (or --out): config.json, points.csv (one row per
network), eigenvalues.pt (every spectrum), summary.json, scatter.png, histogram.png and
report.html.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", default="moons", help="built-in workload (default: moons, 354 parameters)")
    parser.add_argument("--networks", type=int, default=100, help="networks to train (default: 100)")
    parser.add_argument("--train-steps", type=int, default=300, help="training steps per network (0: no training)")
    parser.add_argument("--optimizer", default="sgd", help="an element-wise registry optimizer (default: sgd)")
    parser.add_argument("--lr-range", type=float, nargs=2, default=(0.01, 0.3), metavar=("LOW", "HIGH"),
                        help="learning rates, log-spaced over the networks (default: 0.01 0.3)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (default: 32)")
    parser.add_argument("--samples", type=int, default=128,
                        help="training samples kept (seeded subset; 0 = all; default: 128)")
    parser.add_argument("--init-scale", type=float, default=1.0,
                        help="with --train-steps 0: scale the initial weights (e.g. 0.05: near the origin)")
    parser.add_argument("--search-steps", type=int, default=200, help="Adam steps on ||grad||^2 (default: 200)")
    parser.add_argument("--search-lr", type=float, default=1e-3, help="Adam learning rate of the search")
    parser.add_argument("--newton-steps", type=int, default=8,
                        help="Levenberg-Marquardt steps with exact Hessians, all networks at once (default: 8)")
    parser.add_argument("--grad-tol", type=float, default=1e-6, help="||grad|| at most this is critical")
    parser.add_argument("--flat-tol", type=float, default=1e-2,
                        help="gradient-flat when ||Hg||/||g|| <= this * max|eigenvalue|")
    parser.add_argument("--eig-tol", type=float, default=1e-6, help="zero-eigenvalue tolerance (relative)")
    parser.add_argument("--seed", type=int, default=0, help="network i is seeded with seed + i")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/minimum-ratio-<time>)")


def run(args: argparse.Namespace) -> int:
    import torch

    from descentlab import files
    from descentlab.errors import UserInputError
    from descentlab.experiments.minimum_ratio import minimum_ratio_study
    from descentlab.rundir import default_run_path, staged_run
    from descentlab.problems.workloads import get_workload
    from descentlab.report.render import render

    for name in ("networks", "search_steps", "newton_steps", "samples", "train_steps", "batch_size", "seed"):
        low = 1 if name in ("networks", "batch_size") else 0
        if getattr(args, name) < low:
            raise UserInputError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    for name in ("search_lr", "init_scale"):
        if not getattr(args, name) > 0:
            raise UserInputError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 < args.lr_range[0] <= args.lr_range[1]:
        raise UserInputError(f"--lr-range needs 0 < LOW <= HIGH, got {args.lr_range[0]} {args.lr_range[1]}")
    if args.init_scale != 1.0 and args.train_steps:
        raise UserInputError("--init-scale applies only with --train-steps 0")
    if args.train_steps:
        from descentlab.experiments.ensemble import is_elementwise

        if not is_elementwise(args.optimizer):
            raise UserInputError(f"--optimizer {args.optimizer!r} is not element-wise; the ensemble needs one")
    workload = get_workload(args.workload, dtype=torch.float64)  # unknown names raise UserInputError

    out = args.out or default_run_path("minimum-ratio")
    config = {key: value for key, value in vars(args).items() if not key.startswith("_") and key != "command"}
    with staged_run(out, "minimum-ratio", config) as run_dir:
        study = minimum_ratio_study(
            workload, n_networks=args.networks, train_steps=args.train_steps, optimizer=args.optimizer,
            lr_range=tuple(args.lr_range), batch_size=args.batch_size, samples=args.samples or None,
            init_scale=args.init_scale, search_steps=args.search_steps, search_lr=args.search_lr,
            newton_steps=args.newton_steps, grad_tol=args.grad_tol, flat_tol=args.flat_tol,
            eig_tol=args.eig_tol, seed=args.seed, progress=True)
        rows = []
        for point, trained, lr in zip(study.points, study.trained_loss.tolist(), study.learning_rates.tolist()):
            rows.append({"lr": lr if args.train_steps else "", "trained_loss": trained, **point.row()})
        run_dir.write_csv("points.csv", rows)
        files.save_torch(run_dir.file("eigenvalues.pt"),
                         {"eigenvalues": torch.stack([p.eigenvalues for p in study.points]),
                          "params": torch.stack([p.params for p in study.points])})
        run_dir.write_json("summary.json", {"workload": workload.name, "n_params": study.n_params,
                                            "counts": study.counts(), "seconds": round(study.seconds, 2),
                                            "settings": dict(study.settings)})
    report = render(out)
    from descentlab.report.minimum_ratio_page import finding

    print(finding(rows, args.grad_tol))
    for key, value in study.counts().items():
        print(f"{key:>24}: {value}")
    print(f"report: {report}")
    return 0
