"""The report page of a ``compare`` run: protocol, findings, curves (mean and band over seeds) and table.

Reads only the run directory: ``config.json``, ``protocol.json``, ``summary.csv``,
``finals.csv``, ``curves.csv``, ``trials.csv`` and ``log.txt``. The findings (:func:`findings`)
set every optimizer's held-out test accuracy (test loss for regression) against the best
optimizer's, by the paired 95 % interval of the difference over the shared seeds; a difference
is stated only where that interval excludes 0 (:mod:`descentlab.intervals`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from descentlab.rundir import RunDir
from descentlab.report.html import Page, workload_label

__all__ = ["build", "mean_band", "findings"]


def findings(finals: Sequence[Mapping[str, Any]], optimizers: Sequence[str]) -> list[str]:
    """Which optimizers generalize, and by how much the others fall short, from ``finals.csv``.

    The measure is the final test accuracy (the test loss when there is no accuracy: regression).
    The optimizer with the best mean is the reference; every other one gets the paired interval
    of its difference to it over the seeds both ran (a seed fixes the start, data order and any
    data draw for every optimizer alike). With m others there are m comparisons, so each
    interval is taken at the level 1 − 0.05/m (Bonferroni): all m together hold at 95 %, and a
    chance "difference" among many optimizers is not reported as a finding. Lines: the reference
    with its interval, one :func:`~descentlab.intervals.finding` per other optimizer, and who
    generalizes as well as the reference (no difference detectable) and who does not.
    """
    from descentlab.intervals import difference_interval, finding, mean_interval

    if not finals:
        return []
    accuracy = any(math.isfinite(float(f["test_accuracy"])) for f in finals)
    key, label = ("test_accuracy", "test accuracy") if accuracy else ("test_loss", "test loss")
    by_seed = {name: {int(f["seed"]): float(f[key]) for f in finals if f["optimizer"] == name} for name in optimizers}
    means = {name: mean_interval(list(v.values())) for name, v in by_seed.items() if v}
    finite = [n for n in means if math.isfinite(means[n].estimate)]
    if not finite:
        return [f"No finite {label}."]
    best = (max if accuracy else min)(finite, key=lambda n: means[n].estimate)
    lines = [f"Best {label}: {best}, {means[best].text()} (mean over {means[best].n} seeds, 95 % t interval)."]
    others = [name for name in optimizers if name != best and name in means]
    level = 1 - 0.05 / max(1, len(others))
    if len(others) > 1:
        lines.append(f"Each optimizer against {best}: the paired interval of the difference over the seeds, at "
                     f"{100 * level:.3g} % each (Bonferroni for {len(others)} comparisons: 95 % for all together).")
    same, worse = [best], []
    for name in optimizers:
        if name == best or name not in means:
            continue
        seeds = sorted(set(by_seed[name]) & set(by_seed[best]))
        effect = difference_interval([by_seed[name][s] for s in seeds], [by_seed[best][s] for s in seeds],
                                     paired=True, level=level)
        lines.append(finding(effect, f"{name} against {best}, {label}"))
        if effect.excludes(0.0):
            worse.append(f"{name} (by {abs(effect.estimate):.3g})")
        else:
            same.append(name)
    verdict = f"Generalize as well as {best} (no difference detectable at this size): {', '.join(same)}."
    if worse:
        verdict += f" Generalize worse ({label} {'lower' if accuracy else 'higher'}): {', '.join(worse)}."
    lines.append(verdict)
    return lines


def mean_band(curves: Sequence[Mapping[str, Any]], optimizer: str, key: str, x: str = "step"):
    """``(x, mean, low, high)`` arrays of ``key`` over the seeds of ``optimizer`` (band = min..max).

    ``x="seconds"`` uses the mean over seeds of the training wall-clock at each recorded step.
    """
    import numpy as np

    rows = [r for r in curves if r["optimizer"] == optimizer]
    seeds = sorted({int(r["seed"]) for r in rows})
    steps = sorted({int(r["step"]) for r in rows})
    grid = {(int(r["seed"]), int(r["step"])): r for r in rows}
    values = np.array([[float(grid[(s, t)][key]) for t in steps] for s in seeds])
    xs = np.array([[float(grid[(s, t)][x]) for t in steps] for s in seeds]).mean(axis=0)
    with np.errstate(invalid="ignore"):
        return xs, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def _curve_figure(curves, optimizers, key: str, x: str, ylabel: str, log_y: bool):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colors = plt.cm.tab20.colors
    for index, name in enumerate(optimizers):
        xs, mean, low, high = mean_band(curves, name, key, x)
        color = colors[index % len(colors)]
        ax.plot(xs, mean, label=name, color=color, lw=1.6)
        ax.fill_between(xs, low, high, color=color, alpha=0.18, lw=0)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel({"step": "updates", "seconds": "training seconds (per run)"}[x])
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return fig


def build(run: RunDir) -> Page:
    """The page of one ``compare`` run."""
    config = run.config
    protocol = run.read_json("protocol.json")
    summary = run.read_csv("summary.csv")
    curves = run.read_csv("curves.csv")
    trials = run.read_csv("trials.csv")
    finals = run.read_csv("finals.csv") if run.exists("finals.csv") else []
    optimizers = [row["optimizer"] for row in summary]
    page = Page(f"compare: {workload_label(config['workload'])}")
    batch = config["batch_size"] if config["batch_size"] is not None else "full"
    page.heading("Protocol")
    resampled = protocol.get("resample_data")
    held = (f" The final weights are measured on a held-out test split of {protocol['n_test']} samples, separate "
            f"from the {protocol['n_val']} validation samples the rates were chosen on." if "n_test" in protocol
            else "")
    page.paragraph(
        f"Every optimizer got the same tuning budget: {config['budget']} learning rates on a log grid "
        f"(its registry default x 10^[-1.5, 1.5]), each trained for {config['steps']} updates with batch size "
        f"{batch} from seed {protocol['tune_seed']}; where the best rate was the grid's largest or smallest, one more "
        "rate a grid step beyond it was tried, the same way, until the best had a tried rate on both sides. The "
        "rate with the lowest final validation loss was chosen (diverged trials never win), then rerun with seeds "
        f"{protocol['seeds']}. A seed fixes the initial weights and the data order"
        + (" and draws the data set" if resampled else "") + ", identical across optimizers." + held
        + " Curves show the mean over seeds with a min-max band. Seconds are those of one run: updates x the time "
        "per update of one plain model with that optimizer, measured separately, the same way whether the "
        "optimizer trained as a stacked ensemble or run by run."
    )
    if config.get("schedule"):
        page.paragraph(f"Every run used the learning-rate schedule {config['schedule']} (a factor on the chosen rate).")
    for name in config["optimizers"]:
        grid, chosen = protocol["grids"][name], protocol["chosen_lr"][name]
        widened = protocol.get("widenings", {}).get(name, 0)
        edge = protocol["edges"].get(name) if "edges" in protocol else (
            "edge" if len(grid) > 1 and chosen in (min(grid), max(grid)) else None)
        if edge:
            page.paragraph(f"Note: {name}'s chosen rate {chosen:.3g} is still at the {edge} edge of its grid after "
                           f"{widened} added rates; a wider grid might find a better one.")
        elif widened:
            page.paragraph(f"{name}: the best rate was at the grid's edge; {widened} rate(s) beyond it were tried, "
                           f"and the chosen {chosen:.3g} now has a tried rate on both sides.")
    counts = protocol["trials_per_optimizer"]
    page.paragraph("Trials per optimizer: " + ", ".join(f"{k} {counts[k]}" for k in config["optimizers"]) + ".")
    for line in findings(finals, optimizers):
        page.finding(line)
    fastest = _best(summary, "steps_to_target", largest=False)
    if fastest:
        page.finding(f"Fewest updates to train loss {protocol['target_loss']:.3g}: {fastest['optimizer']} "
                     f"({float(fastest['steps_to_target']):.0f} updates).")
    page.heading("Results")
    held_out = [c for c in ("test_accuracy", "test_accuracy_low", "test_accuracy_high", "test_loss",
                            "test_accuracy_gap", "test_gap") if summary and c in summary[0]]
    columns = ["optimizer", "lr", "final_train_loss", "final_train_loss_std", "best_val_accuracy", *held_out,
               "loss_gap", "accuracy_gap", "steps_to_target", "seconds_to_target", "reached", "stacked"]
    page.table([{c: _number(row.get(c)) for c in columns} for row in summary], columns)
    page.paragraph(f"Target training loss: {protocol['target_loss']:.4g}. test_* = the held-out test split, mean "
                   "over seeds (_low, _high: the 95 % t interval of the mean); test_gap = test loss - training loss, "
                   "test_accuracy_gap = training accuracy - test accuracy; loss_gap and accuracy_gap are the same "
                   "against the validation split (the one tuned on).")
    page.heading("Curves")
    page.figure(_curve_figure(curves, optimizers, "train_loss", "step", "training loss", True),
                "Training loss by updates (mean, min-max band over seeds).", save_to=run.file("train_loss.png"))
    page.figure(_curve_figure(curves, optimizers, "train_loss", "seconds", "training loss", True),
                "Training loss by training seconds.", save_to=run.file("train_loss_seconds.png"))
    if any(math.isfinite(float(r["val_accuracy"])) for r in curves):
        page.figure(_curve_figure(curves, optimizers, "val_accuracy", "step", "validation accuracy", False),
                    "Validation accuracy by updates.", save_to=run.file("val_accuracy.png"))
    else:
        page.figure(_curve_figure(curves, optimizers, "val_loss", "step", "validation loss", True),
                    "Validation loss by updates.", save_to=run.file("val_loss.png"))
    page.heading("Tuning trials")
    page.table([{c: _number(row.get(c)) for c in row} for row in trials])
    if run.exists("log.txt"):
        page.heading("Log")
        page.code(run.file("log.txt").read_text(encoding="utf-8"))
    return page


def _number(value: Any) -> Any:
    if value is None or value == "":
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() and abs(number) < 1e12 and "." not in str(value) else number


def _best(rows: Sequence[Mapping[str, Any]], key: str, largest: bool):
    finite = [r for r in rows if math.isfinite(float(r[key]))]
    if not finite:
        return None
    return (max if largest else min)(finite, key=lambda r: float(r[key]))
