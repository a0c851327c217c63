"""The report page of a ``compare`` run: protocol, curves (mean and band over seeds) and table.

Reads only the run directory: ``config.json``, ``protocol.json``, ``summary.csv``,
``curves.csv``, ``trials.csv`` and ``log.txt``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from descentlab.rundir import RunDir
from descentlab.report.html import Page, workload_label

__all__ = ["build", "mean_band"]


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
    optimizers = [row["optimizer"] for row in summary]
    page = Page(f"compare: {workload_label(config['workload'])}")
    batch = config["batch_size"] if config["batch_size"] is not None else "full"
    page.heading("Protocol")
    page.paragraph(
        f"Every optimizer got the same tuning budget: {config['budget']} learning rates on a log grid "
        f"(its registry default x 10^[-1.5, 1.5]), each trained for {config['steps']} updates with batch size "
        f"{batch} from seed {protocol['tune_seed']}. The rate with the lowest final validation loss was chosen "
        f"(diverged trials never win), then rerun with seeds {protocol['seeds']}. A seed fixes the initial "
        "weights and the data order, identical across optimizers. Curves show the mean over seeds with a "
        "min-max band. Seconds are those of one run: updates x the time per update of one plain model with "
        "that optimizer, measured separately, the same way whether the optimizer trained as a stacked ensemble or "
        "run by run."
    )
    if config.get("schedule"):
        page.paragraph(f"Every run used the learning-rate schedule {config['schedule']} (a factor on the chosen rate).")
    for name in config["optimizers"]:
        grid, chosen = protocol["grids"][name], protocol["chosen_lr"][name]
        if len(grid) > 1 and chosen in (min(grid), max(grid)):
            page.paragraph(f"Note: {name}'s chosen rate {chosen:.3g} is at the edge of its grid; a wider grid "
                           "might find a better one.")
    counts = protocol["trials_per_optimizer"]
    page.paragraph("Trials per optimizer: " + ", ".join(f"{k} {counts[k]}" for k in config["optimizers"]) + ".")
    best = _best(summary, "best_val_accuracy", largest=True)
    fastest = _best(summary, "steps_to_target", largest=False)
    if best:
        page.finding(f"Best validation accuracy: {best['optimizer']} "
                     f"({float(best['best_val_accuracy']):.3f}, mean over seeds).")
    if fastest:
        page.finding(f"Fewest updates to train loss {protocol['target_loss']:.3g}: {fastest['optimizer']} "
                     f"({float(fastest['steps_to_target']):.0f} updates).")
    page.heading("Results")
    columns = ["optimizer", "lr", "final_train_loss", "final_train_loss_std", "best_val_accuracy", "loss_gap",
               "accuracy_gap", "steps_to_target", "seconds_to_target", "reached", "stacked"]
    page.table([{c: _number(row.get(c)) for c in columns} for row in summary], columns)
    page.paragraph(f"Target training loss: {protocol['target_loss']:.4g}. loss_gap = final validation loss - final "
                   "training loss; accuracy_gap = final training accuracy - final validation accuracy.")
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
