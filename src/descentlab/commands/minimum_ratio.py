"""The lecture's minimum-ratio study (after Dauphin et al. 2014): are trained networks stuck at minima?

Trains many small networks as one vmapped ensemble (each with its own seed and a log-spaced
learning rate), then drives each from where its training stopped to a true critical point
(||grad|| <= --grad-tol) by Newton-type iterations on grad = 0 with its exact Hessian (a
trust-region Levenberg-Marquardt method whose step is the Newton step whenever it fits), and
computes the exact Hessian spectrum there (one batched eigh). Plots the training loss of the critical points against their minimum ratio
(fraction of positive eigenvalues), a histogram of the ratios, and counts the strict minima.
Points that are not critical are reported as gradient-flat or not converged, apart.

The loss is the training loss plus --weight-decay/2 ||theta||^2 (the L2 term the training
optimizer's weight_decay adds): it makes the critical points of these small tanh networks
isolated, so Newton's method reaches them.

Examples:
  descentlab minimum-ratio                                   # 100 networks of 49 parameters, ~1 min
  descentlab minimum-ratio --networks 20 --train-steps 300 --out runs/mr-small
  descentlab minimum-ratio --workload lecture --hidden 0 --weight-decay 0 --train-steps 0 \\
      --init-scale 0.05 --networks 3

Writes runs/minimum-ratio-<timestamp>/ (or --out): config.json, points.csv (one row per
network), eigenvalues.pt (every spectrum and point), summary.json, scatter.png,
histogram.png and report.html.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", default="teacher-student",
                        help="built-in workload whose data the networks learn (default: teacher-student; "
                             "`descentlab workloads` lists them)")
    parser.add_argument("--hidden", type=int, default=4,
                        help="hidden tanh units of the study's MLP (inputs-hidden-outputs; default: 4, 49 "
                             "parameters on teacher-student); 0 = the workload's own model")
    parser.add_argument("--networks", type=int, default=100, help="networks to train (default: 100)")
    parser.add_argument("--train-steps", type=int, default=1000, help="training steps per network (0: no training)")
    parser.add_argument("--optimizer", default="momentum",
                        help="an element-wise registry optimizer with an L2 weight_decay (default: momentum)")
    parser.add_argument("--lr-range", type=float, nargs=2, default=(0.001, 0.3), metavar=("LOW", "HIGH"),
                        help="learning rates, log-spaced over the networks (default: 0.001 0.3)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (default: 32)")
    parser.add_argument("--samples", type=int, default=128,
                        help="training samples kept (seeded subset; 0 = all; default: 128)")
    parser.add_argument("--weight-decay", type=float, default=1e-2,
                        help="L2 term weight_decay/2 ||theta||^2 of the loss, in training and search (default: 1e-2)")
    parser.add_argument("--init-scale", type=float, default=1.0,
                        help="with --train-steps 0: scale the initial weights (e.g. 0.05: near the origin)")
    parser.add_argument("--radius", type=float, default=0.1,
                        help="initial trust radius of the Newton search, in parameter units (default: 0.1)")
    parser.add_argument("--newton-steps", type=int, default=150,
                        help="most Newton-type iterations, all networks at once (default: 150)")
    parser.add_argument("--grad-tol", type=float, default=1e-8, help="||grad|| at most this is critical (default: 1e-8)")
    parser.add_argument("--flat-tol", type=float, default=1e-2,
                        help="gradient-flat when ||Hg||/||g|| <= this * max|eigenvalue|")
    parser.add_argument("--eig-tol", type=float, default=1e-6, help="zero-eigenvalue tolerance (relative)")
    parser.add_argument("--seed", type=int, default=0, help="network i is seeded with seed + i")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/minimum-ratio-<time>)")


def run(args: argparse.Namespace) -> int:
    import math

    import torch

    from descentlab import files
    from descentlab.commands.common import emit, output_dir
    from descentlab.errors import UserInputError
    from descentlab.experiments.minimum_ratio import minimum_ratio_study
    from descentlab.problems.workloads import get_workload
    from descentlab.report.render import render
    from descentlab.rundir import staged_run

    for name in ("networks", "newton_steps", "samples", "train_steps", "batch_size", "hidden"):
        low = 1 if name in ("networks", "batch_size") else 0
        if getattr(args, name) < low:
            raise UserInputError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    for name in ("init_scale", "radius"):
        value = getattr(args, name)
        if not (value > 0 and math.isfinite(value)):
            raise UserInputError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    for name in ("weight_decay", "grad_tol", "flat_tol", "eig_tol"):
        value = getattr(args, name)
        if not (value >= 0 and math.isfinite(value)):
            raise UserInputError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    if not 0 < args.lr_range[0] <= args.lr_range[1]:
        raise UserInputError(f"--lr-range needs 0 < LOW <= HIGH, got {args.lr_range[0]} {args.lr_range[1]}")
    if args.init_scale != 1.0 and args.train_steps:
        raise UserInputError("--init-scale applies only with --train-steps 0")
    if args.train_steps:
        from descentlab.experiments.ensemble import is_elementwise
        from descentlab.optim.registry import OPTIMIZERS, parse_name

        if not is_elementwise(args.optimizer):  # an unknown name raises UserInputError
            raise UserInputError(f"--optimizer {args.optimizer!r} is not element-wise; the ensemble needs one")
        if args.weight_decay and OPTIMIZERS[parse_name(args.optimizer)[1]].family == "decoupled":
            raise UserInputError(f"--optimizer {args.optimizer!r} decouples its weight decay; the study's L2 term "
                                 "needs one whose weight_decay is the gradient of weight_decay/2 ||theta||^2")
    out = output_dir(args, "minimum-ratio")
    workload = get_workload(args.workload, dtype=torch.float64)  # unknown names raise UserInputError
    if args.hidden and workload.X_train.dim() != 2:
        raise UserInputError(f"--hidden needs flat inputs; {args.workload} has inputs of shape "
                             f"{tuple(workload.X_train.shape[1:])} (use --hidden 0)")

    config = {key: value for key, value in vars(args).items()
              if not key.startswith("_") and key not in ("command", "json", "progress")}
    with staged_run(out, "minimum-ratio", config) as run_dir:
        study = minimum_ratio_study(
            workload, n_networks=args.networks, train_steps=args.train_steps, optimizer=args.optimizer,
            lr_range=tuple(args.lr_range), batch_size=args.batch_size, samples=args.samples or None,
            hidden=args.hidden, weight_decay=args.weight_decay, init_scale=args.init_scale,
            radius=args.radius, newton_steps=args.newton_steps, grad_tol=args.grad_tol,
            flat_tol=args.flat_tol, eig_tol=args.eig_tol, seed=args.seed, progress=args.progress)
        rows = [{"lr": lr if args.train_steps else "", **point.row()}
                for point, lr in zip(study.points, study.learning_rates.tolist())]
        run_dir.write_csv("points.csv", rows)
        files.save_torch(run_dir.file("eigenvalues.pt"),
                         {"eigenvalues": torch.stack([p.eigenvalues for p in study.points]),
                          "params": torch.stack([p.params for p in study.points])})
        run_dir.write_json("summary.json", {"workload": workload.name, "model": study.model,
                                            "n_params": study.n_params, "counts": study.counts(),
                                            "seconds": round(study.seconds, 2), "settings": dict(study.settings)})
    report = render(out)
    from descentlab.report.minimum_ratio_page import finding

    print(finding(rows, args.grad_tol))
    for key, value in study.counts().items():
        print(f"{key:>24}: {value}")
    print(f"report: {report}")
    emit(args, {"run": str(out), "report": str(report), "model": study.model, "n_params": study.n_params,
                "counts": study.counts(), "seconds": round(study.seconds, 2)})
    return 0
