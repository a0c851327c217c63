"""Compare optimizers fairly on one workload: same tuning budget, same seeds, steps and seconds.

Each optimizer tries --budget learning rates on a log grid around its default (seed --seed),
the rate with the lowest validation loss wins, and the winner is rerun with --seeds seeds
that share initial weights and data order across optimizers. Element-wise optimizers train
all their rates (or seeds) as one stacked ensemble; the others (e.g. swats) train one run
after another, as the log says. Runs go to a process pool (--workers) or a Ray cluster
(--ray); rerunning the same command with the same --out resumes, skipping finished runs.

Writes config.json, protocol.json, trials.csv, curves.csv, summary.csv, log.txt, the
figures and report.html into the run directory.

Example:
  descentlab compare --workload digits-mlp --optimizers sgd,momentum,adam,swats --seeds 3 --budget 8
"""

from __future__ import annotations

import argparse

DEFAULT_OPTIMIZERS = "sgd,momentum,nesterov,adagrad,rmsprop,adam,adamw,radam,nadam"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", default="digits-mlp", help="built-in workload (default: digits-mlp)")
    parser.add_argument("--optimizers", default=DEFAULT_OPTIMIZERS,
                        help=f"comma-separated registry names (default: {DEFAULT_OPTIMIZERS})")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the final runs (default: 3)")
    parser.add_argument("--budget", type=int, default=8, help="learning rates tried per optimizer (default: 8)")
    parser.add_argument("--steps", type=int, default=300, help="updates per run (default: 300)")
    parser.add_argument("--batch-size", default="64", help="mini-batch size or 'full' (default: 64)")
    parser.add_argument("--eval-every", type=int, default=10, help="record the curves every N updates (default: 10)")
    parser.add_argument("--target-loss", type=float, default=None,
                        help="training loss for 'steps/seconds to target' (default: the median final loss)")
    parser.add_argument("--schedule", default=None,
                        help="learning-rate schedule for every run, e.g. 'warmup-cosine:warmup=30,total=300'")
    parser.add_argument("--seed", type=int, default=0, help="first seed; also fixes the data split (default: 0)")
    parser.add_argument("--float64", action="store_true", help="train in float64")
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: number of cores)")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="submit the runs to an existing Ray cluster at ADDRESS (needs descentlab[ray])")
    parser.add_argument("--out", default=None, help="run directory (default: runs/compare-<time>); reuse to resume")


def parse_batch_size(text: str) -> int | None:
    """``"full"`` -> None, else a positive int; bad input raises UserInputError."""
    from descentlab.errors import UserInputError

    if str(text).strip().lower() == "full":
        return None
    try:
        value = int(text)
    except ValueError:
        raise UserInputError(f"batch size must be a positive integer or 'full', got {text!r}") from None
    if value < 1:
        raise UserInputError(f"batch size must be a positive integer or 'full', got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    import sys

    from descentlab.errors import UserInputError
    from descentlab.experiments.compare import CompareSettings, run_compare
    from descentlab.rundir import default_run_path
    from descentlab.optim.registry import parse_name
    from descentlab.problems.workloads import WORKLOADS
    from descentlab.report.render import render

    if args.workload not in WORKLOADS:
        raise UserInputError(f"unknown workload {args.workload!r}; valid: {', '.join(WORKLOADS)}")
    names = [n.strip().lower() for n in args.optimizers.split(",") if n.strip()]
    for name in names:
        parse_name(name)
    if args.workers is not None and args.workers < 1:
        raise UserInputError(f"--workers must be >= 1, got {args.workers}")
    schedule = None
    if args.schedule:
        from descentlab.schedules import parse_schedule

        schedule = str(parse_schedule(args.schedule))
    try:
        settings = CompareSettings(
            workload=args.workload, optimizers=tuple(names), seeds=args.seeds, budget=args.budget,
            steps=args.steps, batch_size=parse_batch_size(args.batch_size), eval_every=args.eval_every,
            seed=args.seed, target_loss=args.target_loss, dtype="float64" if args.float64 else "float32",
            schedule=schedule,
        )
    except ValueError as error:
        raise UserInputError(str(error)) from None
    out = args.out or default_run_path("compare")

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    run_dir = run_compare(settings, out, workers=args.workers, ray_address=args.ray, progress=True, log=log)
    for row in run_dir.read_csv("summary.csv"):
        print(f"{row['optimizer']:>16}  lr {float(row['lr']):.3g}"
              f"  final train loss {float(row['final_train_loss']):.4f}"
              f"  best val acc {float(row['best_val_accuracy']):.4f}"
              f"  steps to target {float(row['steps_to_target']):.0f}")
    report = render(run_dir)
    print(f"wrote {run_dir.path} ({report.name})")
    return 0
