"""Compare optimizers fairly on one workload: same tuning budget, same seeds, steps and seconds.

Each optimizer tries --budget learning rates on a log grid around its default (seed --seed),
widened a grid step at a time while the best rate is at its edge; the rate with the lowest
validation loss wins, and the winner is rerun with --seeds seeds that share initial weights and
data order across optimizers (--resample-data: each seed also draws its own data). The final
weights are measured on a held-out test split (the workload's own, or the half of its
validation split not tuned on); the report sets every optimizer's test accuracy against the
best one's with a 95 % interval over the seeds, and states a difference only where the
interval excludes 0. Element-wise optimizers train
all their rates (or seeds) as one stacked ensemble; the others (e.g. swats) train one run
after another, as the log says. Runs go to a process pool (--workers) or a Ray cluster
(--ray); rerunning the same command with the same --out resumes, skipping finished runs.

Writes config.json, protocol.json, trials.csv, curves.csv, summary.csv, log.txt, the
figures and report.html into the run directory.

Examples:
  descentlab compare --workload digits-mlp --optimizers sgd,momentum,adam,swats --seeds 5 --budget 8
  descentlab compare --workload wilson --optimizers sgd,momentum,adagrad,rmsprop,adam
"""

from __future__ import annotations

import argparse

DEFAULT_OPTIMIZERS = "sgd,momentum,nesterov,adagrad,rmsprop,adam,adamw,radam,nadam"


def configure(parser: argparse.ArgumentParser) -> None:
    from descentlab.commands.common import add_workload_options

    add_workload_options(parser, "digits-mlp")
    parser.add_argument("--optimizers", default=DEFAULT_OPTIMIZERS,
                        help=f"comma-separated registry names (default: {DEFAULT_OPTIMIZERS})")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the final runs (default: 5)")
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
    parser.add_argument("--resample-data", action=argparse.BooleanOptionalAction, default=None,
                        help="each final seed also draws its own data set (a generated workload) or split "
                             "(default: on for workloads whose runs differ only through their data, e.g. wilson)")
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: number of cores)")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="submit the runs to an existing Ray cluster at ADDRESS (needs descentlab[ray])")
    parser.add_argument("--out", default=None, help="run directory (default: runs/compare-<time>); reuse to resume")
    parser.add_argument("--tensorboard", default=None, nargs="?", const="", metavar="LOGDIR",
                        help="also write every final run's curves as TensorBoard scalars, one run per optimizer "
                             "and seed, to LOGDIR (default: the run's tensorboard/)")


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


def _interval(row: dict, key: str) -> str:
    """``0.978 [0.971, 0.985]`` from a summary row's mean and interval columns (the mean alone with one seed)."""
    mean, low, high = (float(row[k]) for k in (key, f"{key}_low", f"{key}_high"))
    if low != low:
        return f"{mean:.3f} (1 seed, no interval)"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def run(args: argparse.Namespace) -> int:
    from descentlab.commands.common import (check_at_least, check_positive, check_tensorboard, csv_numbers, emit,
                                            log_to_stderr, output_dir, resume_hint, tensorboard_curves, workload_spec)
    from descentlab.errors import UserInputError
    from descentlab.experiments.compare import CompareSettings, run_compare
    from descentlab.optim.registry import parse_name
    from descentlab.report.compare_page import findings
    from descentlab.report.render import render

    spec = workload_spec(args, "digits-mlp")
    names = [n.strip().lower() for n in args.optimizers.split(",") if n.strip()]
    for name in names:
        parse_name(name)
    check_at_least("--workers", args.workers, 1)
    check_positive("--target-loss", args.target_loss)
    schedule = None
    if args.schedule:
        from descentlab.schedules import parse_schedule

        schedule = str(parse_schedule(args.schedule))
    resample = args.resample_data
    if resample is None:
        from descentlab.problems.workloads import get_workload

        resample = bool(spec.get("workload")) and get_workload(spec["workload"]).seeds_draw_data
    try:
        settings = CompareSettings(
            workload=spec.get("workload") or spec, optimizers=tuple(names), seeds=args.seeds, budget=args.budget,
            steps=args.steps, batch_size=parse_batch_size(args.batch_size), eval_every=args.eval_every,
            seed=args.seed, target_loss=args.target_loss, dtype="float64" if args.float64 else "float32",
            schedule=schedule, resample_data=bool(resample),
        )
    except ValueError as error:
        raise UserInputError(f"{error}") from None
    check_tensorboard(args)
    out = output_dir(args, "compare", resumable=True)
    resume_hint(args, out)
    run_dir = run_compare(settings, out, workers=args.workers, ray_address=args.ray, progress=args.progress,
                          log=log_to_stderr)
    report = render(run_dir)  # before printing: a closed stdout must not lose the report
    tensorboard_curves(args, out, run_dir, ("optimizer", "seed"), "step")
    summary = run_dir.read_csv("summary.csv")
    protocol = run_dir.read_json("protocol.json")
    classification = any(float(r["test_accuracy"]) == float(r["test_accuracy"]) for r in summary)
    for row in summary:
        steps = float(row["steps_to_target"])
        held_out = (f"  test acc {_interval(row, 'test_accuracy')}" if classification
                    else f"  test loss {_interval(row, 'test_loss')}")
        edge = protocol["edges"][row["optimizer"]]
        print(f"{row['optimizer']:>16}  lr {float(row['lr']):.3g}{' (grid edge)' if edge else ''}"
              f"  final train loss {float(row['final_train_loss']):.4f}{held_out}"
              f"  steps to target {'not reached' if steps != steps else f'{steps:.0f}'}")
    for line in findings(run_dir.read_csv("finals.csv"), [r["optimizer"] for r in summary]):
        print(line)
    print(f"wrote {run_dir.path} ({report.name})")
    emit(args, {"run": str(run_dir.path), "report": str(report),
                "target_loss": run_dir.read_json("protocol.json")["target_loss"],
                "optimizers": [csv_numbers(row) for row in summary]})
    return 0

