"""Run the zoo of broken and healthy training runs and score the stall monitor on them.

Each case (descentlab.problems.zoo) is a plain PyTorch loop with a default StallMonitor
attached: a run broken for one known cause (a saddle, a schedule that ends early, vanishing
gradients, dead ReLUs, unscaled inputs...; 3 or more per cause, across MLPs, CNNs, RNNs and
transformers) or a healthy run of another kind (Adam, momentum, BatchNorm, dropout, LSTM,
transformers). Printed: each case's first verdict; right verdicts per cause; false alarms on
the healthy runs; with --repair, how many runs the monitor's applied remedy brought within
10 % of the case's healthy counterpart at equal steps, and, for those it did not, whether the
repaired loss is inside the counterpart's own spread over --spread-seeds seeds (the measure's
noise, not counted as repaired) and whether the counterpart itself, given only the steps left
after the first remedy, ends within those 10 % (if not, the diagnosis came too late for any
remedy to count; not counted either); the monitor's overhead (each case is also run without it,
paired). The whole zoo takes about 5 minutes on 2 cores (--repair:
about twice that).

Examples:
  descentlab zoo                                  # every case
  descentlab zoo --family rnn --repair            # the RNN cases, with the remedies applied
  descentlab zoo --verdict dead_units --only dead-mlp-bias,dead-cnn-bias
  descentlab zoo --list                           # the cases, without running them

Writes runs/zoo-<timestamp>/ (or --out): config.json, cases.csv (one row per case),
results.json (every run of every case: stalls, losses, seconds) and summary.json.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", default=None, metavar="A,B,...", help="run only these cases (names as --list shows)")
    parser.add_argument("--family", default=None, help="run only this family: mlp, cnn, rnn or transformer")
    parser.add_argument("--verdict", default=None,
                        help="run only the cases of this cause (e.g. saddle, dead_units) or 'healthy'")
    parser.add_argument("--repair", action="store_true",
                        help="also apply the monitor's remedies and train each case's healthy counterpart "
                             "(the repair rate; about twice the time)")
    parser.add_argument("--spread-seeds", type=int, default=5, metavar="N",
                        help="with --repair: where a repair falls short, the healthy counterpart again at N seeds "
                             "from --seed, to tell a miss from the measure's own noise (default 5; 1: not run)")
    parser.add_argument("--list", action="store_true", help="list the chosen cases and exit (nothing is run or written)")
    parser.add_argument("--seed", type=int, default=0, help="initial weights, batches and the monitor's sample (default: 0)")
    parser.add_argument("--out", default=None, help="run directory (default: runs/zoo-<time>)")


def _chosen(args: argparse.Namespace):
    from descentlab.errors import UserInputError
    from descentlab.problems.zoo import select_cases

    only = None if args.only is None else [name.strip() for name in args.only.split(",") if name.strip()]
    if only is not None and not only:
        raise UserInputError("--only must name at least one case")
    try:
        cases = select_cases(only, args.family, args.verdict)
    except ValueError as error:
        raise UserInputError(f"--{_option_of(str(error))}: {error}") from None
    if not cases:
        raise UserInputError("no case matches --only, --family and --verdict together")
    if args.spread_seeds < 1:
        raise UserInputError(f"--spread-seeds must be at least 1, got {args.spread_seeds}")
    return cases


def _option_of(message: str) -> str:
    """The option a ``select_cases`` error is about (its message starts with the argument's name)."""
    return {"name": "only", "family": "family", "verdict": "verdict"}.get(message.split(" ", 1)[0], "only")


def _percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.0%}" if signed else f"{value:.0%}"


def _loss(value: float | None) -> str:
    import math

    return "nan" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _case_rows(outcomes, repair: bool) -> list[list[str]]:
    header = ["case", "family", "expected", "verdict", "right"]
    if repair:
        header += ["broken loss", "repaired loss", "healthy loss", "repaired", "helped"]
    header += ["monitor", "wall"]
    rows = [header]
    for o in outcomes:
        mark = ("yes" if o.right else "NO") if o.expected is not None else ("ALARM" if o.false_alarm else "-")
        row = [o.name, o.family, o.expected or "healthy", o.watched.verdict or "none", mark]
        if repair:
            measured = o.repair_ok is not None
            row += [_loss(o.plain.final_loss) if measured and o.plain is not None else "-",
                    _loss(o.repaired.final_loss) if measured else "-", _loss(o.healthy.final_loss) if measured else "-",
                    ("yes" if o.repair_ok else "NO") if measured else "-",
                    "-" if o.helped is None else ("yes" if o.helped else "NO")]
        row += [_percent(o.monitor_share), _percent(o.overhead, signed=True)]
        rows.append(row)
    return rows


def _summary_lines(summary, repair: bool) -> list[str]:
    from descentlab.experiments.zoo import REPAIR_TOLERANCE, TARGETS

    met = summary.met()

    def verdict_of(key: str) -> str:
        return "" if met[key] is None else (" (met)" if met[key] else " (NOT met)")

    lines = []
    broken, healthy = len(summary.broken), len(summary.healthy_runs)
    if broken:
        per = ", ".join(f"{cause} {right}/{total}" for cause, (right, total) in summary.per_verdict().items())
        lines.append(f"right verdicts: {summary.right} of {broken} ({summary.right / broken:.0%}; target "
                     f"{TARGETS['right']:.0%}{verdict_of('right')}): {per}")
    if healthy:
        lines.append(f"false alarms: {summary.false_alarms} of {healthy} healthy runs (target 0"
                     f"{verdict_of('false_alarms')})")
    if repair and summary.repairable:
        lines.append(f"repaired: {summary.repaired} of {summary.repairable} (within {REPAIR_TOLERANCE:.0%} of the "
                     f"healthy counterpart's loss at equal steps; {summary.repaired / summary.repairable:.0%}, target "
                     f"{TARGETS['repaired']:.0%}{verdict_of('repaired')})")
    if repair and summary.spread_measured:
        inside = summary.inside_spread
        lines.append(f"of the {summary.spread_measured} not repaired, {inside} end{'s' if inside == 1 else ''} inside "
                     f"the healthy counterpart's own spread over other seeds (the measure's noise; not counted as "
                     f"repaired)")
    if repair and summary.reach_measured:
        lines.append(f"of the {summary.reach_measured} not repaired with a remedy applied, {summary.beyond_reach} "
                     f"{'is' if summary.beyond_reach == 1 else 'are'} beyond reach at the step it was applied (the "
                     f"healthy counterpart itself, trained only for the steps left, ends more than "
                     f"{REPAIR_TOLERANCE:.0%} above its full run: the diagnosis came too late, not the remedy)")
    if repair and summary.help_measured:
        lines.append(f"helped: {summary.helped} of {summary.help_measured} (the remedied run ends {REPAIR_TOLERANCE:.0%} "
                     f"below the same broken run left alone, at equal steps)")
    lines.append(f"monitor overhead (median over cases, against the same loop without it, paired): wall "
                 f"{_percent(summary.overhead, signed=True)} on every case, "
                 f"{_percent(summary.healthy_overhead, signed=True)} on the healthy runs; the monitor's own clock "
                 f"{_percent(summary.monitor_share)} of the training, {_percent(summary.healthy_monitor_share)} on "
                 f"the healthy runs")
    return lines


def run(args: argparse.Namespace) -> int:
    from descentlab.commands.common import emit, log_to_stderr, output_dir
    from descentlab.report.text_table import text_table

    cases = _chosen(args)
    if args.list:
        rows = [["case", "family", "expected", "healthy counterpart", "what"]]
        rows += [[c.name, c.family, c.verdict or "healthy", c.fix or "-", c.description] for c in cases]
        print(text_table(rows))
        emit(args, {"cases": [{"name": c.name, "family": c.family, "expected": c.verdict, "recipe": c.recipe(),
                               "description": c.description, "fix": c.fix or None} for c in cases]})
        return 0
    out = output_dir(args, "zoo")

    from descentlab.experiments.zoo import run_zoo
    from descentlab.rundir import staged_run

    config = {"cases": [c.name for c in cases], "seed": args.seed, "repair": args.repair,
              "spread_seeds": args.spread_seeds, "only": args.only,
              "family": args.family, "verdict": args.verdict}
    with staged_run(out, "zoo", config) as run_dir:
        def finished(outcome) -> None:
            if args.progress:
                log_to_stderr(f"{outcome.name}: {outcome.watched.verdict or 'no verdict'}")

        summary = run_zoo(cases=cases, seed=args.seed, repair=args.repair, progress=args.progress,
                          spread_seeds=args.spread_seeds, on_outcome=finished)
        results = [o.to_dict() for o in summary.outcomes]
        run_dir.write_csv("cases.csv", [{key: value for key, value in r.items() if key != "runs"} for r in results])
        run_dir.write_json("results.json", results)
        run_dir.write_json("summary.json", summary.to_dict())
    print(text_table(_case_rows(summary.outcomes, args.repair)))
    for line in _summary_lines(summary, args.repair):
        print(line)
    print(f"wrote {out}")
    emit(args, {"run": str(out), **summary.to_dict(),
                "cases": [{key: value for key, value in r.items() if key != "runs"} for r in results]})
    return 0
