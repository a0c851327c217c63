"""Train, notice when the loss stalls, say why (a verdict with its evidence and remedy), escape a
saddle, write a report.

With no arguments it runs the built-in stall preset (digits, a tanh MLP started next to the
saddle at the origin, plain full-batch SGD): the loss sits on a plateau, the Hessian there has
negative eigenvalues (a saddle), a step along the most negative eigenvector lowers the loss,
and training goes on downhill. The presets unstable, noise-floor and minimum stall for the
other reasons (the rate past the stability limit, mini-batch noise, a minimum). Everything
lands in runs/diagnose-<timestamp>/ (config.json, metrics.csv, tracked.csv, checkpoint.pt,
stalls.json, report.html); the command ends by printing the verdict table, each stall's remedy and the
report's path.

At a stall the remedies that fit the verdict are tried (--remedies, on by default within the
budget): each from a fork of the run, for --trial-steps steps, on the same data in the same
order, ranked by the orders of magnitude of loss they shed per second; --apply-remedy continues with the winner.
--track-sharpness K measures the sharpness against the optimizer's stability threshold every K
steps (new metrics.csv columns, sharpness.csv, a figure); the eos preset shows the sharpness
rising to 2/lr and hovering there (the edge of stability, Cohen et al. 2021). With --seeds N
the same configuration also runs seeds --seed+1 ... (into OUT/seeds/) and the edge-of-stability
summary is given over all N with 95 % intervals (sharpness_seeds.json).

Verdicts, in the order they are tried: diverged, no_learning_rate, accumulating_gradient,
biased_batches, weight_decay, exploding_gradient, bounded_outputs, dead_units, saturated_units,
vanishing_gradient, unscaled_inputs, symmetric_units, unstable, saddle, maximum, noise_floor,
minimum, flat, slow (see descentlab.critical.verdicts).

Examples:
  descentlab diagnose
  descentlab diagnose --workload unstable
  descentlab diagnose --workload unstable --apply-remedy
  descentlab diagnose --workload eos --lr 0.4
  descentlab diagnose --workload eos --seeds 5
  descentlab diagnose --workload digits-mlp --batch-size full --track-sharpness 10 --track-min
  descentlab diagnose --no-escape --steps 400 --out runs/no-escape
  descentlab diagnose --workload digits-mlp --optimizer adam --lr 1e-3 --batch-size 64 --steps 300
  descentlab diagnose --model mypkg.models:make_net --data train.npz --steps 1000
  descentlab diagnose --resume runs/diagnose-20260101-120000
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def _positive_int_or_full(text: str) -> int | str:
    if text.lower() in ("full", "all"):
        return "full"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'full', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'full', got {text!r}")
    return value


def _budget(text: str | float | None) -> float | None:
    """``--budget``: a positive fraction, or ``none`` for no cap (a one-line error otherwise)."""
    from descentlab.errors import UserInputError

    if text is None or isinstance(text, str) and text.lower() in ("none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UserInputError(f"--budget must be a positive fraction or 'none', got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    from descentlab.monitor_defaults import DEFAULT_BUDGET, DEFAULT_BUDGET_SECONDS, SAMPLE_SIZE, TRIAL_STEPS

    what = parser.add_argument_group("what to train")
    what.add_argument("--workload", default=None, metavar="NAME",
                      help="built-in workload (default: stall; the presets stall, unstable, noise-floor and "
                           "minimum each stop for another reason; `descentlab workloads` lists them all)")
    what.add_argument("--model", default=None, metavar="PKG.MOD:FACTORY", help="your model factory (needs --data)")
    what.add_argument("--data", default=None, metavar="FILE", help=".npz (X, y[, X_val, y_val]) or .csv data file")
    how = parser.add_argument_group("how to train")
    how.add_argument("--optimizer", default=None, help="registry name (default: the workload's, sgd for stall)")
    how.add_argument("--lr", type=float, default=None, help="learning rate (default: the workload's)")
    how.add_argument("--schedule", default=None, help="learning-rate schedule (see `descentlab schedules`)")
    how.add_argument("--batch-size", type=_positive_int_or_full, default=None, metavar="N|full",
                     help="samples per step, or 'full' (default: the workload's)")
    how.add_argument("--no-shuffle", dest="shuffle", action="store_false", help="keep the data order every epoch")
    how.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the workload's)")
    how.add_argument("--seed", type=int, default=0, help="seeds data split, initial weights, shuffling (default 0)")
    watch = parser.add_argument_group("stall monitor")
    watch.add_argument("--escape", action=argparse.BooleanOptionalAction, default=True,
                       help="step out of a saddle along negative curvature (default: on)")
    watch.add_argument("--max-step", type=float, default=2.0,
                       help="longest escape step tried (then halved until the loss drops; default 2.0)")
    watch.add_argument("--window", type=int, default=50, help="steps per window of the plateau test (default 50)")
    watch.add_argument("--rel-tol", type=float, default=1e-3,
                       help="plateau: the tracked loss's relative progress per window is below this (default 1e-3)")
    watch.add_argument("--grad-tol", type=float, default=None,
                       help="also a plateau: the tracked loss's gradient norm below this (default: off)")
    watch.add_argument("--budget", default=str(DEFAULT_BUDGET), metavar="FRACTION|none",
                       help=f"cap the monitor's time at this fraction of training time, or {DEFAULT_BUDGET_SECONDS:g} s "
                            f"in all, whichever is more (default {DEFAULT_BUDGET}; 'none': no cap)")
    watch.add_argument("--sample", type=int, default=SAMPLE_SIZE, metavar="N",
                       help=f"samples of the training data the monitor tracks and measures on (default {SAMPLE_SIZE})")
    watch.add_argument("--max-stalls", type=int, default=3, help="diagnose at most this many stalls (default 3)")
    track = parser.add_argument_group("sharpness and remedies")
    track.add_argument("--track-sharpness", type=int, default=None, metavar="K",
                       help="every K steps, measure the sharpness (lambda_max, preconditioned for adaptive "
                            "optimizers) against the optimizer's stability threshold (2/lr for GD) on the "
                            "monitor's sample; 0: off (default: off, every 5 steps for the eos preset)")
    track.add_argument("--track-min", action="store_true", help="with --track-sharpness, also track lambda_min")
    track.add_argument("--sharpness-samples", type=int, default=None, metavar="N",
                       help="with --track-sharpness, measure every estimate on the first N samples of the "
                            "monitor's sample (default: as many as its tracked loss reads under the budget, all of "
                            "it with --budget none); fixed for the run: a smaller sample's sharpness is larger")
    track.add_argument("--seeds", type=int, default=1, metavar="N",
                       help="with sharpness tracking: also run seeds --seed+1 .. --seed+N-1 of the same configuration "
                            "(in OUT/seeds/) and summarise the edge of stability over all N with 95 %% intervals "
                            "(default 1)")
    track.add_argument("--remedies", action=argparse.BooleanOptionalAction, default=True,
                       help="at a stall, try the remedies that fit its verdict from a fork of the run for "
                            "--trial-steps steps each and rank them by the loss's decrease in orders of magnitude "
                            "(ln of the loss at the fork over the loss after) per second; within the "
                            "budget (default: on)")
    track.add_argument("--trial-steps", type=int, default=TRIAL_STEPS, metavar="N",
                       help=f"length of every remedy trial (default {TRIAL_STEPS})")
    track.add_argument("--apply-remedy", action="store_true",
                       help="continue training with the trials' winner (default: keep your optimizer and only "
                            "report; at a saddle the escape still applies unless --no-escape)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default=None, help="run directory (default: runs/diagnose-<timestamp>)")
    out.add_argument("--resume", default=None, metavar="DIR",
                     help="continue the run in DIR where it stopped, with its own settings (other options refused)")
    out.add_argument("--tensorboard", default=None, nargs="?", const="", metavar="LOGDIR",
                     help="also write the metrics as TensorBoard scalars, to LOGDIR (default: the run's "
                          "tensorboard/); needs the tensorboard package (pip install 'descentlab[tensorboard]')")


def run(args: argparse.Namespace) -> int:
    from descentlab.critical import StallMonitor
    from descentlab.errors import UserInputError
    from descentlab.commands.common import (check_at_least, check_positive, emit, output_dir, refuse_with, resume_hint,
                                            tensorboard_writer)
    from descentlab.experiments.train import TrainConfig, train
    from descentlab.problems.user_workload import model_directory, resolve_workload
    from descentlab.critical.sharpness import FIELDS as SHARPNESS_FIELDS
    from descentlab.critical.sharpness import edge_of_stability
    from descentlab.report.diagnose_page import remedy_lines, sharpness_line, trial_lines, verdict_table
    from descentlab.report.render import render
    from descentlab.rundir import RunDir

    if args.resume:
        refuse_with(args, "--resume", [d for d in sorted(args._given) if d not in _RESUME_KEEPS],
                    "continues the run with the settings it was started with (start a new run to change them)")
        saved = RunDir.open(args.resume).config
        if saved.get("kind") != "diagnose":
            raise UserInputError(f"{args.resume} is a {saved.get('kind')!r} run, not a diagnose run")
        spec, monitor_spec, out = saved["workload"], saved["monitor"], args.resume
        workload = resolve_workload(spec)
        config = TrainConfig(**saved["train"])
    else:
        if args.workload and (args.model or args.data):
            raise UserInputError("give either --workload or --model/--data, not both")
        # an absolute data path, so --resume works from any directory
        data = None if args.data is None else str(Path(args.data).absolute())
        spec = {"workload": args.workload, "model": args.model, "data": data, "seed": args.seed}
        if spec["workload"] is None and spec["model"] is None and spec["data"] is None:
            spec["workload"] = "stall"
        check_positive("--lr", args.lr)
        for name, value, low in (("--window", args.window, 1), ("--max-stalls", args.max_stalls, 0),
                                 ("--sample", args.sample, 2), ("--steps", args.steps, 1),
                                 ("--track-sharpness", args.track_sharpness, 0), ("--trial-steps", args.trial_steps, 1)):
            check_at_least(name, value, low)
        check_positive("--rel-tol", args.rel_tol, allow_zero=True)
        check_positive("--grad-tol", args.grad_tol)
        check_positive("--max-step", args.max_step)
        workload = resolve_workload(spec)
        if args.model:  # where the module was found, so that --resume from any directory finds it
            spec["model_path"] = model_directory(args.model)
        config = TrainConfig(
            optimizer=args.optimizer or workload.optimizer,
            lr=args.lr if args.lr is not None else (workload.lr if args.optimizer in (None, workload.optimizer) else None),
            schedule=args.schedule,
            batch_size={None: workload.batch_size, "full": None}.get(args.batch_size, args.batch_size),
            shuffle=args.shuffle, steps=args.steps if args.steps is not None else workload.steps, seed=args.seed,
        )
        track_every = args.track_sharpness if args.track_sharpness is not None else workload.track_sharpness
        if args.track_min and not track_every:
            raise UserInputError("--track-min needs --track-sharpness K (K >= 1)")
        if args.sharpness_samples is not None:
            check_at_least("--sharpness-samples", args.sharpness_samples, 2)
            if not track_every:
                raise UserInputError("--sharpness-samples needs --track-sharpness K (K >= 1)")
        check_at_least("--seeds", args.seeds, 1)
        if args.seeds > 1 and not track_every:
            raise UserInputError("--seeds summarises the tracked sharpness: it needs --track-sharpness K (K >= 1)")
        if args.apply_remedy and not args.remedies:
            raise UserInputError("--apply-remedy needs the remedy trials: drop --no-remedies")
        monitor_spec = {"window": args.window, "rel_tol": args.rel_tol, "grad_tol": args.grad_tol,
                        "escape": args.escape, "budget": _budget(args.budget), "max_stalls": args.max_stalls,
                        "sample_size": args.sample, "seed": args.seed,
                        "max_step": args.max_step, "slice_radius": max(2.0, args.max_step),
                        "track_sharpness": track_every or None, "track_min": args.track_min,
                        "sharpness_samples": args.sharpness_samples,
                        "remedies": args.remedies, "trial_steps": args.trial_steps, "apply_remedy": args.apply_remedy}
        out = output_dir(args, "diagnose", hint=f", or continue the run there with --resume {args.out}")
    resume_hint(args, out, flag="--resume", needs="checkpoint.pt")
    writer = tensorboard_writer(args, out)

    monitor = StallMonitor(workload.loss_fn, (workload.X_train, workload.y_train), writer=writer, **monitor_spec)
    try:
        result = train(
            workload, config, out, kind="diagnose", callbacks=[monitor], resume=bool(args.resume),
            progress=args.progress, writer=writer,
            extra_config={"workload": spec, "monitor": monitor_spec, "workload_description": workload.description},
        )
    finally:
        if writer is not None:
            writer.close()
    run_dir = RunDir.open(result.path)
    run_dir.write_json("stalls.json", [stall.to_dict() for stall in monitor.stalls])
    run_dir.write_csv("tracked.csv", [{"step": step, "loss": loss} for step, loss in monitor.tracked], ("step", "loss"))
    if monitor.sharpness is not None:
        run_dir.write_csv("sharpness.csv", [p.to_dict() for p in monitor.sharpness.points], SHARPNESS_FIELDS)
    seeds_summary = None
    if not args.resume and args.seeds > 1 and monitor.sharpness is not None:
        seeds_summary = _over_seeds(args, spec, config, monitor_spec, run_dir,
                                    edge_of_stability(monitor.sharpness.points, monitor.tracked))
    report = render(run_dir)
    print(result.message)
    print(verdict_table(monitor.stalls))
    for line in remedy_lines(monitor.stalls):
        print(line)
    for line in trial_lines(monitor.stalls):
        print(line)
    if monitor.sharpness is not None:
        training = result.seconds - monitor.spent  # the monitor's time includes its sharpness estimates
        print(sharpness_line(monitor.sharpness.points, monitor.tracked, monitor.sharpness.seconds, training))
    if seeds_summary is not None:
        from descentlab.report.edge_seeds import seed_lines

        for line in seed_lines(seeds_summary):
            print(line)
    print(f"report: {report}")
    emit(args, {"run": str(result.path), "report": str(report), "status": result.status, "steps": result.step,
                "train_loss": result.train_loss, "val_loss": result.val_loss,
                "stalls": [{"step": st.step, "loss": st.loss, "status": st.status, "verdict": st.verdict,
                            "remedy": st.remedy, "escaped": st.escaped,
                            "trials": (st.trials or {}).get("ranking"), "best_remedy": (st.trials or {}).get("winner"),
                            "remedy_applied": st.remedy_applied} for st in monitor.stalls],
                "sharpness": None if monitor.sharpness is None else edge_of_stability(monitor.sharpness.points,
                                                                                      monitor.tracked),
                **({"sharpness_over_seeds": seeds_summary} if seeds_summary is not None else {})})
    if result.status != "completed":
        print(f"descentlab diagnose: {result.message}", file=sys.stderr)
        return 1
    return 0


def _over_seeds(args: argparse.Namespace, spec: dict, config, monitor_spec: dict, run_dir, first: dict) -> dict:
    """``--seeds N``: the same configuration at seeds ``--seed + 1 ..``, each a diagnose run under
    ``OUT/seeds/seed-<s>``; the edge-of-stability summaries over all N, written to ``sharpness_seeds.json``."""
    import dataclasses

    from descentlab.critical import StallMonitor
    from descentlab.critical.sharpness import FIELDS as SHARPNESS_FIELDS
    from descentlab.critical.sharpness import edge_of_stability
    from descentlab.experiments.train import train
    from descentlab.problems.user_workload import resolve_workload
    from descentlab.report.edge_seeds import over_seeds
    from descentlab.rundir import RunDir

    seeds = list(range(args.seed, args.seed + args.seeds))
    summaries = [first]
    for seed in seeds[1:]:
        mine = {**spec, "seed": seed}
        workload = resolve_workload(mine)
        monitor = StallMonitor(workload.loss_fn, (workload.X_train, workload.y_train), **{**monitor_spec, "seed": seed})
        result = train(workload, dataclasses.replace(config, seed=seed), run_dir.file("seeds") / f"seed-{seed}",
                       kind="diagnose", callbacks=[monitor], progress=args.progress,
                       extra_config={"workload": mine, "monitor": {**monitor_spec, "seed": seed},
                                     "workload_description": workload.description})
        other = RunDir.open(result.path)
        other.write_csv("sharpness.csv", [p.to_dict() for p in monitor.sharpness.points], SHARPNESS_FIELDS)
        other.write_csv("tracked.csv", [{"step": t, "loss": v} for t, v in monitor.tracked], ("step", "loss"))
        summaries.append(edge_of_stability(monitor.sharpness.points, monitor.tracked))
    combined = over_seeds(summaries, seeds)
    run_dir.write_json("sharpness_seeds.json", combined)
    return combined


#: What a ``--resume`` run may be given besides its directory (the rest comes from its config.json).
_RESUME_KEEPS = {"resume", "json", "progress", "tensorboard"}
