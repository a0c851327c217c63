"""The lecture's minimum-ratio study (after Dauphin et al. 2014): where training stalls, is it at a minimum?

Trains small tanh networks of several widths, each width as one vmapped ensemble (each network
with its own seed and a log-spaced learning rate; full batch by default), and reads the exact
Hessian of the training loss L itself (no L2 term, whatever training used) in two variants,
never mixed: at the trained point as it is (critical when ||grad L|| <= --grad-tol), and at the
critical point Newton-type iterations on grad L = 0 reach from there (a trust-region
Levenberg-Marquardt method whose step is the Newton step whenever it fits; critical when
||grad L|| <= --newton-tol). Critical points equal up to the network's symmetries (permuted
hidden units, sign-flipped tanh units) are merged and counted. Prints, per variant, the share
of points left out (not critical), the distinct critical points, the strict minima, and
Spearman's rho of the minimum ratio (fraction of positive eigenvalues) against the loss with
its 95 % bootstrap interval, pooled and within each width: a trend is stated only when its
interval excludes 0.

Examples:
  descentlab minimum-ratio                                   # widths 1,2,4,8 x 16 networks, ~2 min
  descentlab minimum-ratio --quick --out runs/mr-small       # 2 widths x 6 networks, seconds
  descentlab minimum-ratio --workload lecture --hidden 0 --train-steps 0 --init-scale 0.05 --networks 3

Writes runs/minimum-ratio-<timestamp>/ (or --out): config.json, points.csv (one row per network
and variant), eigenvalues.pt (every spectrum and point, by variant and width), summary.json,
scatter.png, histogram.png and report.html.
"""

from __future__ import annotations

import argparse

#: --quick: a study small enough for a test or a first look (seconds).
QUICK = {"hidden": "1,3", "networks": 6, "train_steps": 1000, "newton_steps": 20}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", default="teacher-student",
                        help="built-in workload whose data the networks learn (default: teacher-student; "
                             "`descentlab workloads` lists them)")
    parser.add_argument("--hidden", default="1,2,4,8", metavar="A,B,...",
                        help="widths (hidden tanh units) of the study's MLPs, inputs-hidden-outputs (default: 1,2,4,8: "
                             "13 to 97 parameters on teacher-student); 0 = the workload's own model")
    parser.add_argument("--networks", type=int, default=16, help="networks per width (default: 16)")
    parser.add_argument("--train-steps", type=int, default=5000,
                        help="training steps per network (default: 5000; 0: no training)")
    parser.add_argument("--optimizer", default="momentum",
                        help="an element-wise registry optimizer (default: momentum)")
    parser.add_argument("--lr-range", type=float, nargs=2, default=(0.01, 0.3), metavar=("LOW", "HIGH"),
                        help="learning rates, log-spaced over each width's networks (default: 0.01 0.3)")
    parser.add_argument("--batch-size", type=int, default=0, help="training batch size (default: 0 = full batch)")
    parser.add_argument("--samples", type=int, default=128,
                        help="training samples kept (seeded subset; 0 = all; default: 128)")
    parser.add_argument("--weight-decay", type=float, default=0.0,
                        help="L2 weight decay of the optimizer in training only; every measurement is of the "
                             "unregularised loss (default: 0)")
    parser.add_argument("--init-scale", type=float, default=1.0,
                        help="with --train-steps 0: scale the initial weights (e.g. 0.05: near the origin)")
    parser.add_argument("--grad-tol", type=float, default=1e-3,
                        help="a trained point is critical when ||grad L|| <= this (default: 1e-3)")
    parser.add_argument("--newton-steps", type=int, default=50,
                        help="most Newton-type iterations of the refined variant, all networks at once "
                             "(default: 50; 0: no refined variant)")
    parser.add_argument("--newton-tol", type=float, default=1e-8,
                        help="a refined point is critical when ||grad L|| <= this (default: 1e-8)")
    parser.add_argument("--radius", type=float, default=0.1,
                        help="initial trust radius of the Newton search, in parameter units (default: 0.1)")
    parser.add_argument("--flat-tol", type=float, default=1e-2,
                        help="a refined point is gradient-flat when ||Hg||/||g|| <= this * max|eigenvalue|")
    parser.add_argument("--eig-tol", type=float, default=1e-6, help="zero-eigenvalue tolerance (relative)")
    parser.add_argument("--merge-tol", type=float, default=1e-3,
                        help="critical points closer than this * max(1, ||theta||) up to symmetry are one point "
                             "(default: 1e-3)")
    parser.add_argument("--quick", action="store_true",
                        help="a small study in seconds: " + ", ".join(f"--{k.replace('_', '-')} {v}"
                                                                     for k, v in QUICK.items())
                             + " (options you give win)")
    parser.add_argument("--seed", type=int, default=0, help="network i of every width is seeded with seed + i")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/minimum-ratio-<time>)")


def _widths(text: str) -> list[int]:
    from descentlab.errors import UserInputError

    try:
        widths = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        widths = []
    if not widths or any(w < 0 for w in widths) or len(set(widths)) != len(widths) or (0 in widths and len(widths) > 1):
        raise UserInputError(f"--hidden must be distinct widths >= 1 'A,B,...' (or 0 alone: the workload's own "
                             f"model), got {text!r}")
    return widths


def _check(args: argparse.Namespace) -> list[int]:
    import math

    from descentlab.errors import UserInputError

    for name in ("networks", "newton_steps", "samples", "train_steps", "batch_size"):
        low = 1 if name == "networks" else 0
        if getattr(args, name) < low:
            raise UserInputError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    for name in ("init_scale", "radius"):
        value = getattr(args, name)
        if not (value > 0 and math.isfinite(value)):
            raise UserInputError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    for name in ("weight_decay", "grad_tol", "newton_tol", "flat_tol", "eig_tol", "merge_tol"):
        value = getattr(args, name)
        if not (value >= 0 and math.isfinite(value)):
            raise UserInputError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    if not (0 < args.lr_range[0] <= args.lr_range[1] and math.isfinite(args.lr_range[1])):
        raise UserInputError(f"--lr-range needs 0 < LOW <= HIGH, got {args.lr_range[0]} {args.lr_range[1]}")
    if args.init_scale != 1.0 and args.train_steps:
        raise UserInputError("--init-scale applies only with --train-steps 0")
    if args.weight_decay and not args.train_steps:
        raise UserInputError("--weight-decay applies only to training (--train-steps > 0)")
    if args.train_steps:
        from descentlab.experiments.ensemble import is_elementwise
        from descentlab.optim.registry import OPTIMIZERS, parse_name

        if not is_elementwise(args.optimizer):  # an unknown name raises UserInputError
            raise UserInputError(f"--optimizer {args.optimizer!r} is not element-wise; the ensemble needs one")
        if args.weight_decay and OPTIMIZERS[parse_name(args.optimizer)[1]].family == "decoupled":
            raise UserInputError(f"--optimizer {args.optimizer!r} decouples its weight decay; --weight-decay needs "
                                 "one whose weight_decay is the gradient of weight_decay/2 ||theta||^2")
    return _widths(args.hidden)


def run(args: argparse.Namespace) -> int:
    import math

    import torch

    from descentlab import files
    from descentlab.commands.common import emit, given, output_dir
    from descentlab.errors import UserInputError
    from descentlab.experiments.minimum_ratio import VARIANTS, minimum_ratio_study
    from descentlab.problems.workloads import get_workload
    from descentlab.report.minimum_ratio_page import findings, statistics
    from descentlab.report.render import render
    from descentlab.rundir import staged_run

    if args.quick:
        for key, value in QUICK.items():
            if not given(args, key):
                setattr(args, key, value)
    widths = _check(args)
    out = output_dir(args, "minimum-ratio")
    workload = get_workload(args.workload, dtype=torch.float64)  # unknown names raise UserInputError
    if widths != [0] and workload.X_train.dim() != 2:
        raise UserInputError(f"--hidden needs flat inputs; {args.workload} has inputs of shape "
                             f"{tuple(workload.X_train.shape[1:])} (use --hidden 0)")

    config = {key: value for key, value in vars(args).items()
              if not key.startswith("_") and key not in ("command", "json", "progress")}
    with staged_run(out, "minimum-ratio", config) as run_dir:
        study = minimum_ratio_study(
            workload, widths=widths, n_networks=args.networks, train_steps=args.train_steps,
            optimizer=args.optimizer, lr_range=tuple(args.lr_range), batch_size=args.batch_size or None,
            samples=args.samples or None, weight_decay=args.weight_decay, init_scale=args.init_scale,
            newton_steps=args.newton_steps, radius=args.radius, grad_tol=args.grad_tol, newton_tol=args.newton_tol,
            flat_tol=args.flat_tol, eig_tol=args.eig_tol, merge_tol=args.merge_tol, seed=args.seed,
            progress=args.progress)
        rows = [point.row() for point in study.points]
        run_dir.write_csv("points.csv", rows)
        files.save_torch(run_dir.file("eigenvalues.pt"), {
            variant: {str(width): {"eigenvalues": torch.stack([p.eigenvalues for p in study.of(variant, width)]),
                                   "params": torch.stack([p.params for p in study.of(variant, width)])}
                      for width in widths if study.of(variant, width)}
            for variant in VARIANTS})
        run_dir.write_json("summary.json", {
            "workload": workload.name, "models": {str(w): m for w, m in study.models.items()},
            "n_params": {str(w): n for w, n in study.n_params.items()},
            "symmetries": {str(w): s for w, s in study.symmetries.items()},
            "counts": {v: study.counts(v) for v in VARIANTS if study.of(v)},
            "seconds": round(study.seconds, 2), "settings": dict(study.settings)})
    report = render(out)
    for line in findings(rows, config):
        print(line)
    for variant in VARIANTS:
        if study.of(variant):
            print(f"{variant}: " + ", ".join(f"{key} {value}" for key, value in study.counts(variant).items()))
    print(f"report: {report}")

    def plain(value):  # intervals as dicts, NaN as None: strict JSON
        if hasattr(value, "to_dict"):
            return value.to_dict()
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return None if isinstance(value, float) and not math.isfinite(value) else value

    emit(args, {"run": str(out), "report": str(report), "models": {str(w): m for w, m in study.models.items()},
                "n_params": {str(w): n for w, n in study.n_params.items()},
                "counts": {v: study.counts(v) for v in VARIANTS if study.of(v)},
                "statistics": {v: plain(statistics(rows, v)) for v in VARIANTS if study.of(v)},
                "seconds": round(study.seconds, 2)})
    return 0
