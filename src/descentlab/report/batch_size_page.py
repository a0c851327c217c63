"""The report page of a ``batch-size`` run: protocol, finding, table and four figures.

Reads only the run directory: ``config.json``, ``protocol.json``, ``summary.csv``,
``curves.csv`` and ``log.txt``. The finding (sharpness and generalisation gap against the
batch size, beside the claim that small batches find flatter minima that generalise better,
Keskar et al. 2017) is computed from ``summary.csv``, whatever it says.
"""

from __future__ import annotations

import math

from descentlab.rundir import RunDir
from descentlab.report.html import Page, workload_label
from descentlab.report.stats import spearman

__all__ = ["build", "finding"]


def _size(label: str, n_full: float) -> float:
    return n_full if label == "full" else float(label)


def finding(summary: list[dict], protocol: str, target: float, n_train: float | None = None) -> str:
    """Sharpness and generalisation gap against the batch size, beside the small-batch claim, from ``summary.csv``."""
    rows = sorted(summary, key=lambda r: _size(r["batch_size"], float(n_train or math.inf)))
    if not rows:
        return "No batch sizes."
    sizes = [_size(r["batch_size"], float(n_train or 1e12)) for r in rows]
    sharp = [float(r["sharpness"]) for r in rows]
    gap = [float(r["loss_gap"]) for r in rows]
    first, last = rows[0], rows[-1]
    if protocol == "same-loss":
        runs = [r["reached"].split("/") for r in rows]
        reached, total = sum(int(a) for a, _ in runs), sum(int(b) for _, b in runs)
        where = f"At the same training loss ({target:g}, reached by {reached} of {total} runs)"
    else:
        where = "After the same number of epochs (training losses differ)"
    rho_sharp, rho_gap = spearman(sizes, sharp), spearman(sizes, gap)

    def trend(rho: float) -> str:
        return "rank correlation with the batch size n/a" if math.isnan(rho) else \
            f"Spearman rho with the batch size {rho:+.2f}"

    text = (f"{where}, sharpness went from {sharp[0]:.4g} at batch {first['batch_size']} to {sharp[-1]:.4g} at batch "
            f"{last['batch_size']} ({trend(rho_sharp)}), the generalisation gap (validation minus training loss) from "
            f"{gap[0]:.4g} to {gap[-1]:.4g} ({trend(rho_gap)}), and validation accuracy from "
            f"{float(first['val_accuracy']):.4f} to {float(last['val_accuracy']):.4f}. ")
    flatter, better = rho_sharp > 0, rho_gap > 0
    if math.isnan(rho_sharp) or math.isnan(rho_gap):
        verdict = "too few sizes to tell"
    elif flatter and better:
        verdict = "borne out here: larger batches ended sharper and with a larger gap"
    elif not flatter and not better:
        verdict = "not borne out here: larger batches ended flatter and with a smaller gap"
    elif flatter:
        verdict = "half borne out here: larger batches ended sharper, but their gap was not larger"
    else:
        verdict = "half borne out here: larger batches had the larger gap, but did not end sharper"
    return text + f"The claim that small batches find flatter minima that generalise better (Keskar et al. 2017) is {verdict}."


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

    page = Page(f"batch-size: {workload_label(config['workload'])}, {config['optimizer']}")
    page.heading("Protocol")
    rule = config["lr_rule"]
    if rule == "tuned":
        lr_text = (f"every batch size got the same tuning budget of {config['budget']} learning rates on a log grid "
                   "around the optimizer's default, chosen on final validation loss")
    else:
        factor = "B / B_ref" if rule == "linear" else "sqrt(B / B_ref)"
        lr_text = (f"the rate was tuned ({config['budget']} rates) at the reference size {config['ref_size']} and "
                   f"scaled by {factor} for the other sizes ({rule} rule)")
    protocol_name = protocol.get("protocol", config.get("protocol", "same-epochs"))
    if protocol_name == "same-loss":
        page.paragraph(
            f"Each batch size trained (seeds {protocol['seeds']}, one plain model each, reshuffled every epoch) until "
            f"its full training loss fell to {protocol['target_loss']:g} (at most {config.get('max_updates')} "
            f"updates), as Keskar et al. (2017) compare minima; {lr_text}, each tuning run {config['epochs']} epochs "
            "long. The updates, epochs and seconds (the updates alone, one model) it took are measured; sharpness "
            "(the largest Hessian eigenvalue of the full training loss, Lanczos) and the generalisation gap are read "
            "where each run stopped, and averaged over seeds.")
    else:
        page.paragraph(
            f"Each batch size trained for {config['epochs']} epochs (reshuffled every epoch) with seeds "
            f"{protocol['seeds']}; {lr_text}. Time per update is measured on one plain model over up to "
            f"{protocol['timed_updates']} updates; time per epoch = time per update x updates per epoch; seconds to "
            f"target = updates to target x time per update. Sharpness is the largest Hessian eigenvalue of the full "
            f"training loss at the end (Lanczos), mean over seeds. Target training loss: "
            f"{protocol['target_loss']:.4g}. The sizes end at different training losses, so their sharpness and "
            "gap are not measured at comparable points (--protocol same-loss is).")
    page.finding(finding(summary, protocol_name, float(protocol["target_loss"]), float(protocol["n_train"])))
    if protocol_name != "same-loss":
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
    if protocol_name == "same-loss":
        ax.loglog(sizes, [float(r["seconds_to_target"]) for r in summary], "o-", label="seconds to the loss")
        ax.set_ylabel("seconds (one model)")
        twin = ax.twinx()
        twin.loglog(sizes, [float(r["updates_to_target"]) for r in summary], "s--", color="#d62728",
                    label="updates to the loss")
        twin.set_ylabel("updates")
        twin.legend(loc="upper center", fontsize=8)
        caption = f"What reaching the training loss {protocol['target_loss']:g} cost, per batch size (mean over seeds)."
    else:
        ax.loglog(sizes, [float(r["seconds_per_epoch"]) for r in summary], "o-", label="per epoch")
        ax.loglog(sizes, [float(r["seconds_per_update"]) for r in summary], "s--", label="per update")
        ax.set_ylabel("seconds")
        caption = "Time per epoch and per update vs batch size (one model)."
    ax.set_xlabel("batch size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize=8)
    page.figure(fig, caption, save_to=run.file("time_vs_batch.png"))

    for x, xlabel, name in (("step", "updates", "loss_by_updates.png"), ("seconds", "seconds (one model)",
                                                                         "loss_by_seconds.png")):
        fig, ax = plt.subplots(figsize=(7, 4))
        for index, label in enumerate(labels):
            rows = [r for r in curves if r["batch_size"] == label]
            colour = f"C{index % 10}"
            for number, seed in enumerate(sorted({int(r["seed"]) for r in rows})):
                mine = sorted((r for r in rows if int(r["seed"]) == seed), key=lambda r: int(r["step"]))
                xs = np.array([float(r[x]) for r in mine])
                ys = np.array([float(r["train_loss"]) for r in mine])
                ax.plot(xs[1:], ys[1:], color=colour, lw=1, alpha=0.8, label=f"batch {label}" if number == 0 else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        page.figure(fig, f"Training loss by {xlabel}, one line per seed.", save_to=run.file(name))

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in summary:
        ax.errorbar(float(row["sharpness"]), float(row["loss_gap"]), xerr=float(row["sharpness_std"]), fmt="o")
        ax.annotate(row["batch_size"], (float(row["sharpness"]), float(row["loss_gap"])),
                    textcoords="offset points", xytext=(5, 4))
    ax.set_xlabel("sharpness (largest Hessian eigenvalue)")
    ax.set_ylabel("generalisation gap (validation - training loss)")
    ax.grid(alpha=0.3)
    page.figure(fig, "Sharpness vs generalisation gap, one point per batch size (error bar: std over seeds).",
                save_to=run.file("sharpness_vs_gap.png"))
    if run.exists("log.txt"):
        page.heading("Log")
        page.code(run.file("log.txt").read_text(encoding="utf-8"))
    return page
