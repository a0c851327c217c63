"""The batch-size study: do small batches find flatter minima that generalise better?

Per batch size: the updates, epochs and seconds it takes, the final train and validation
accuracy, the generalisation gap, and the sharpness (the largest Hessian eigenvalue of the
training loss, by Lanczos).

--protocol same-loss (default; the comparison of Keskar et al. 2017): every size trains, one
plain model per seed, until its full training loss falls to --train-to; what that cost
(updates, epochs, seconds) is reported, and sharpness and gap are measured there, at the
same training loss for every size. --protocol same-epochs: every size trains --epochs
epochs (seeds as one stacked ensemble; times from a single-model timing run), so the
largest batches may stop undertrained.

The learning rate per size follows --lr-rule: 'tuned' gives every size the same budget of
--budget rates on a log grid (each trained --epochs epochs, chosen on validation loss);
'linear' and 'sqrt' tune only at --ref-size and scale the rate by (B / ref) or
sqrt(B / ref). Rerunning with the same --out resumes, skipping finished sizes.

Writes config.json, protocol.json, summary.csv, curves.csv, trials.csv, log.txt, the figures
and report.html into the run directory.

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
                        help="passes over the training set of each tuning run, and per size with same-epochs "
                             "(default: 5)")
    parser.add_argument("--optimizer", default="sgd", help="registry optimizer (default: sgd)")
    parser.add_argument("--lr-rule", choices=("tuned", "linear", "sqrt"), default="tuned",
                        help="how each size gets its learning rate (default: tuned)")
    parser.add_argument("--ref-size", default="32",
                        help="reference size of the linear/sqrt rules, where the rate is tuned; need not be one "
                             "of --sizes (default: 32)")
    parser.add_argument("--budget", type=int, default=6, help="learning rates tried per tuning (default: 6)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per size (default: 3)")
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


def run(args: argparse.Namespace) -> int:
    from descentlab.commands.common import (check_at_least, check_positive, check_tensorboard, csv_numbers, emit,
                                            log_to_stderr, output_dir, resume_hint, tensorboard_curves, workload_spec)
    from descentlab.commands.compare import parse_batch_size
    from descentlab.errors import UserInputError
    from descentlab.experiments.batch_size import BatchSizeSettings, run_batch_size
    from descentlab.optim.registry import parse_name
    from descentlab.report.batch_size_page import finding
    from descentlab.report.render import render

    spec = workload_spec(args, "digits-mlp")
    parse_name(args.optimizer)
    sizes = [parse_batch_size(s) for s in args.sizes.split(",") if s.strip()]
    check_at_least("--workers", args.workers, 1)
    check_positive("--target-loss", args.target_loss)
    try:
        settings = BatchSizeSettings(
            workload=spec.get("workload") or spec, sizes=tuple(sizes), epochs=args.epochs,
            optimizer=args.optimizer.lower(), lr_rule=args.lr_rule, ref_size=parse_batch_size(args.ref_size),
            budget=args.budget, seeds=args.seeds, target_loss=args.target_loss, seed=args.seed,
            protocol=args.protocol, train_to=args.train_to, max_updates=args.max_updates,
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
            cost = (f"updates {'-' if updates != updates else f'{updates:.0f}':>7}"
                    f"  epochs {float(row['epochs_to_target']):>6.3g}"
                    f"  s {float(row['seconds_to_target']):>6.3g}  reached {row['reached']}"
                    f"  train loss {float(row['train_loss']):.4f}")
        else:
            cost = f"s/epoch {float(row['seconds_per_epoch']):.3g}"
        print(f"batch {row['batch_size']:>6}  lr {float(row['lr']):.3g}  {cost}  val acc {float(row['val_accuracy']):.4f}"
              f"  gap {float(row['accuracy_gap']):.4f}  loss gap {float(row['loss_gap']):.4f}"
              f"  sharpness {float(row['sharpness']):.4g}")
    print(finding(summary, args.protocol, protocol["target_loss"]))
    print(f"wrote {run_dir.path} ({report.name})")
    emit(args, {"run": str(run_dir.path), "report": str(report), "protocol": args.protocol,
                "target_loss": protocol["target_loss"], "chosen_lr": protocol["chosen_lr"],
                "sizes": [csv_numbers(row) for row in summary]})
    return 0
