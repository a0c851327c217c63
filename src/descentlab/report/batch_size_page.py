"""The report page of a ``batch-size`` run: protocol, table and four figures.

Reads only the run directory: ``config.json``, ``protocol.json``, ``summary.csv``,
``curves.csv`` and ``log.txt``.
"""

from __future__ import annotations

import math

from descentlab.rundir import RunDir
from descentlab.report.html import Page

__all__ = ["build"]


def _size(label: str, n_full: float) -> float:
    return n_full if label == "full" else float(label)


def build(run: RunDir) -> Page:
    """The page of one ``batch-size`` run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from descentlab.report.compare_page import _number

    config = run.config
    protocol = run.read_json("protocol.json")
    summary = run.read_csv("summary.csv")
    curves = run.read_csv("curves.csv")
    labels = [row["batch_size"] for row in summary]
    sizes = [_size(label, float(protocol["n_train"])) for label in labels]

    page = Page(f"batch-size: {config['workload']}, {config['optimizer']}")
    page.heading("Protocol")
    rule = config["lr_rule"]
    if rule == "tuned":
        lr_text = (f"every batch size got the same tuning budget of {config['budget']} learning rates on a log grid "
                   "around the optimizer's default, chosen on final validation loss")
    else:
        factor = "B / B_ref" if rule == "linear" else "sqrt(B / B_ref)"
        lr_text = (f"the rate was tuned ({config['budget']} rates) at the reference size {config['ref_size']} and "
                   f"scaled by {factor} for the other sizes ({rule} rule)")
    page.paragraph(
        f"Each batch size trained for {config['epochs']} epochs (reshuffled every epoch) with seeds "
        f"{protocol['seeds']}; {lr_text}. Time per update is measured on one plain model over up to "
        f"{protocol['timed_updates']} updates; time per epoch = time per update x updates per epoch; seconds to "
        f"target = updates to target x time per update. Sharpness is the largest Hessian eigenvalue of the full "
        f"training loss at the end (Lanczos), mean over seeds. Target training loss: {protocol['target_loss']:.4g}."
    )
    fastest = min(summary, key=lambda r: float(r["seconds_per_epoch"]))
    page.finding(f"Fastest epoch: batch {fastest['batch_size']} "
                 f"({float(fastest['seconds_per_epoch']):.3g} s per epoch).")
    finite = [r for r in summary if math.isfinite(float(r["val_accuracy"]))]
    if finite:
        best = max(finite, key=lambda r: float(r["val_accuracy"]))
        page.finding(f"Best validation accuracy: batch {best['batch_size']} ({float(best['val_accuracy']):.3f}).")
    page.heading("Results")
    page.table([{k: _number(v) for k, v in row.items()} for row in summary])

    page.heading("Figures")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(sizes, [float(r["seconds_per_epoch"]) for r in summary], "o-", label="per epoch")
    ax.loglog(sizes, [float(r["seconds_per_update"]) for r in summary], "s--", label="per update")
    ax.set_xlabel("batch size")
    ax.set_ylabel("seconds")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    page.figure(fig, "Time per epoch and per update vs batch size (one model).", save_to=run.file("time_vs_batch.png"))

    for x, xlabel, name in (("step", "updates", "loss_by_updates.png"), ("seconds", "seconds (one model)",
                                                                         "loss_by_seconds.png")):
        fig, ax = plt.subplots(figsize=(7, 4))
        for label in labels:
            rows = [r for r in curves if r["batch_size"] == label]
            steps = sorted({int(r["step"]) for r in rows})
            grid = {(int(r["seed"]), int(r["step"])): r for r in rows}
            seeds = sorted({int(r["seed"]) for r in rows})
            values = np.array([[float(grid[(s, t)]["train_loss"]) for t in steps] for s in seeds])
            xs = np.array([[float(grid[(s, t)][x]) for t in steps] for s in seeds]).mean(axis=0)
            line, = ax.plot(xs[1:], values.mean(axis=0)[1:], label=f"batch {label}")
            ax.fill_between(xs[1:], values.min(axis=0)[1:], values.max(axis=0)[1:], color=line.get_color(),
                            alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        page.figure(fig, f"Training loss by {xlabel} (mean, min-max band over seeds).", save_to=run.file(name))

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in summary:
        ax.errorbar(float(row["sharpness"]), float(row["accuracy_gap"]), xerr=float(row["sharpness_std"]), fmt="o")
        ax.annotate(row["batch_size"], (float(row["sharpness"]), float(row["accuracy_gap"])),
                    textcoords="offset points", xytext=(5, 4))
    ax.set_xlabel("sharpness (largest Hessian eigenvalue)")
    ax.set_ylabel("generalisation gap (train - val accuracy)")
    ax.grid(alpha=0.3)
    page.figure(fig, "Sharpness vs generalisation gap, one point per batch size.",
                save_to=run.file("sharpness_vs_gap.png"))
    if run.exists("log.txt"):
        page.heading("Log")
        page.code(run.file("log.txt").read_text(encoding="utf-8"))
    return page
