"""The batch-size study: do small batches find flatter minima that generalise better?

Per batch size: the updates, epochs and seconds it takes, the final train, validation and
held-out test accuracy, the generalisation gap (test minus training loss), the sharpness (the
largest Hessian eigenvalue of the training loss, by Lanczos) and Keskar et al.'s
epsilon-sharpness beside it; means over --seeds seeds with 95 % intervals. The finding sets
them against the batch size and against lr/B (Smith & Le 2018) over every run, by rank
correlations with bootstrap intervals and the difference between the largest and smallest
batch; a trend is stated only when its interval excludes 0.

--protocol same-loss (default; the comparison of Keskar et al. 2017): every size trains, one
plain model per seed, until its full training loss falls to --train-to; what that cost
(updates, epochs, seconds) is reported, and sharpness and gap are measured there, at the
same training loss for every size. --protocol same-epochs: every size trains --epochs
epochs (seeds as one stacked ensemble; times from a single-model timing run), so the
largest batches may stop undertrained.

The learning rate per size follows --lr-rule: 'tuned' gives every size the same budget of
--budget rates on a log grid, each candidate trained --tune-updates updates (the same number
at every size) and chosen on validation loss, the grid widened a step at a time while the best
rate is at its edge; 'linear' and 'sqrt' tune only at --ref-size and scale the rate by (B / ref)
or sqrt(B / ref). The test split is half of the workload's validation split, never tuned on.
Rerunning with the same --out resumes, skipping finished sizes.

Writes config.json, protocol.json, summary.csv, seeds.csv, curves.csv, trials.csv, log.txt,
the figures and report.html into the run directory.

Examples:
  descentlab batch-size --workload digits-mlp --sizes 1,8,32,128,full --train-to 0.02
  descentlab batch-size --protocol same-epochs --epochs 5
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    from descentlab.commands.common import add_workload_options

    add_workload_options(parser, "digits-mlp")
    parser.add_argument("--sizes", default="1,8,32,128,full",
                        help="comma-separated batch sizes, 'full' for the whole training set "
                             "(default: 1,8,32,128,full)")
    parser.add_argument("--protocol", choices=("same-loss", "same-epochs"), default="same-loss",
                        help="train every size to the same training loss, or for the same epochs (default: same-loss)")
    parser.add_argument("--train-to", type=float, default=0.02,
                        help="same-loss: the training loss every size trains to (default: 0.02)")
    parser.add_argument("--max-updates", type=int, default=20000,
                        help="same-loss: most updates per run before giving up on --train-to (default: 20000)")
    parser.add_argument("--epochs", type=float, default=5,
                        help="same-epochs: passes over the training set per size (default: 5)")
    parser.add_argument("--tune-updates", type=int, default=1000,
                        help="updates of every tuning run, the same at every batch size (default: 1000)")
    parser.add_argument("--optimizer", default="sgd", help="registry optimizer (default: sgd)")
    parser.add_argument("--lr-rule", choices=("tuned", "linear", "sqrt"), default="tuned",
                        help="how each size gets its learning rate (default: tuned)")
    parser.add_argument("--ref-size", default="32",
                        help="reference size of the linear/sqrt rules, where the rate is tuned; need not be one "
                             "of --sizes (default: 32)")
    parser.add_argument("--budget", type=int, default=6, help="learning rates tried per tuning (default: 6)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per size (default: 5)")
    parser.add_argument("--epsilon", type=float, default=1e-3,
                        help="box size of Keskar et al.'s epsilon-sharpness (default: 1e-3, the paper's)")
    parser.add_argument("--target-loss", type=float, default=None,
                        help="training loss for 'updates/seconds to target' (default: the median final loss)")
    parser.add_argument("--seed", type=int, default=0, help="first seed; also fixes the data split (default: 0)")
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: number of cores)")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="submit the runs to an existing Ray cluster at ADDRESS (needs descentlab[ray])")
    parser.add_argument("--out", default=None, help="run directory (default: runs/batch-size-<time>); reuse to resume")
    parser.add_argument("--tensorboard", default=None, nargs="?", const="", metavar="LOGDIR",
                        help="also write every final run's curves as TensorBoard scalars, one run per batch size "
                             "and seed, to LOGDIR (default: the run's tensorboard/)")


def _interval(row: dict, key: str, digits: int) -> str:
    """``0.978 [0.971, 0.985]`` from a summary row's mean and interval columns."""
    mean, low, high = (float(row[k]) for k in (key, f"{key}_low", f"{key}_high"))
    if low != low:
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


def run(args: argparse.Namespace) -> int:
    from descentlab.commands.common import (check_at_least, check_positive, check_tensorboard, csv_numbers, emit,
                                            log_to_stderr, output_dir, resume_hint, tensorboard_curves, workload_spec)
    from descentlab.commands.compare import parse_batch_size
    from descentlab.errors import UserInputError
    from descentlab.experiments.batch_size import BatchSizeSettings, run_batch_size
    from descentlab.optim.registry import parse_name
    from descentlab.report.batch_size_page import findings
    from descentlab.report.render import render

    spec = workload_spec(args, "digits-mlp")
    parse_name(args.optimizer)
    sizes = [parse_batch_size(s) for s in args.sizes.split(",") if s.strip()]
    check_at_least("--workers", args.workers, 1)
    check_positive("--target-loss", args.target_loss)
    check_positive("--epsilon", args.epsilon)
    check_at_least("--tune-updates", args.tune_updates, 1)
    try:
        settings = BatchSizeSettings(
            workload=spec.get("workload") or spec, sizes=tuple(sizes), epochs=args.epochs,
            optimizer=args.optimizer.lower(), lr_rule=args.lr_rule, ref_size=parse_batch_size(args.ref_size),
            budget=args.budget, seeds=args.seeds, target_loss=args.target_loss, seed=args.seed,
            protocol=args.protocol, train_to=args.train_to, max_updates=args.max_updates,
            tune_updates=args.tune_updates, epsilon=args.epsilon,
        )
    except ValueError as error:
        raise UserInputError(f"{error}") from None
    check_tensorboard(args)
    out = output_dir(args, "batch-size", resumable=True)
    resume_hint(args, out)
    run_dir = run_batch_size(settings, out, workers=args.workers, ray_address=args.ray, progress=args.progress,
                             log=log_to_stderr)
    report = render(run_dir)  # before printing: a closed stdout must not lose the report
    summary = run_dir.read_csv("summary.csv")
    protocol = run_dir.read_json("protocol.json")
    tensorboard_curves(args, out, run_dir, ("batch_size", "seed"), "step")
    for row in summary:
        if args.protocol == "same-loss":
            updates = float(row["updates_to_target"])
            cost = (f"updates {'-' if updates != updates else f'{updates:.0f}':>6}"
                    f"  s {float(row['seconds_to_target']):>5.3g}  reached {row['reached']}")
        else:
            cost = f"s/epoch {float(row['seconds_per_epoch']):.3g}"
        edge = " (edge)" if protocol["edges"].get(row["batch_size"]) else ""
        print(f"batch {row['batch_size']:>5}  lr {float(row['lr']):.3g}{edge}  lr/B {float(row['lr_over_b']):.2g}  "
              f"{cost}  test acc {_interval(row, 'test_accuracy', 3)}  gap {_interval(row, 'loss_gap', 3)}"
              f"  sharpness {_interval(row, 'sharpness', 3)}  eps-sharpness {_interval(row, 'epsilon_sharpness', 2)}")
    for line in findings(run_dir.read_csv("seeds.csv"), args.protocol, protocol["target_loss"]):
        print(line)
    print(f"wrote {run_dir.path} ({report.name})")
    emit(args, {"run": str(run_dir.path), "report": str(report), "protocol": args.protocol,
                "target_loss": protocol["target_loss"], "chosen_lr": protocol["chosen_lr"],
                "sizes": [csv_numbers(row) for row in summary]})
    return 0
