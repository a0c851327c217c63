"""The report page of a ``batch-size`` run: protocol, findings with their intervals, tables and figures.

Reads only the run directory: ``config.json``, ``protocol.json``, ``summary.csv``,
``seeds.csv``, ``curves.csv`` and ``log.txt``. The finding (sharpness, Keskar's ε-sharpness and
the generalisation gap against the batch size and against lr/B, beside the claim that small
batches find flatter minima that generalise better, Keskar et al. 2017) is computed from
``seeds.csv``, one point per run: rank correlations with bootstrap intervals over the runs and
the difference between the largest and the smallest batch with Welch's interval; a trend or a
difference is stated only where its interval excludes 0 (:mod:`descentlab.intervals`).
"""

from __future__ import annotations

import math

from descentlab.rundir import RunDir
from descentlab.report.html import Page, workload_label

__all__ = ["build", "findings", "QUANTITIES"]

#: What the finding sets against the batch size: seeds.csv column -> its name in the text.
QUANTITIES = {"sharpness": "sharpness (lambda_max)", "epsilon_sharpness": "epsilon-sharpness",
              "loss_gap": "generalisation gap (test - training loss)"}


def _size(label: str, n_full: float) -> float:
    return n_full if label == "full" else float(label)


def _trend(rho, against: str) -> str:
    """``"rises with the batch size"``, ``"falls ..."`` or ``"no trend detectable at this size"``."""
    if not rho.excludes(0.0):
        return "no trend detectable at this size"
    return f"{'rises' if rho.estimate > 0 else 'falls'} with {against}"


def findings(rows: list[dict], protocol: str, target: float) -> list[str]:
    """The findings of ``seeds.csv`` rows (one per size and seed), beside the small-batch claim: where
    they were measured, one line per quantity of :data:`QUANTITIES`, and the verdict on the claim."""
    from descentlab.intervals import difference_interval, finding as stated, spearman_interval

    if not rows:
        return ["No runs."]
    labels = list(dict.fromkeys(r["batch_size"] for r in sorted(rows, key=lambda r: float(r["B"]))))
    if protocol == "same-loss":
        reached = sum(str(r["reached"]) == "True" for r in rows)
        where = f"At the same training loss ({target:g}, reached by {reached} of {len(rows)} runs)"
    else:
        where = "After the same number of epochs (training losses differ)"
    B = [float(r["B"]) for r in rows]
    noise = [float(r["lr_over_b"]) for r in rows]
    parts, rhos = [], {}
    for key, name in QUANTITIES.items():
        values = [float(r[key]) for r in rows]
        rho = spearman_interval(B, values)
        rhos[key] = rho
        first = [float(r[key]) for r in rows if r["batch_size"] == labels[0]]
        last = [float(r[key]) for r in rows if r["batch_size"] == labels[-1]]
        effect = difference_interval(last, first)
        by_noise = spearman_interval(noise, values)
        parts.append(f"{name}: Spearman rho with the batch size {rho.text(2)} over {rho.n} runs, "
                     f"{_trend(rho, 'the batch size')}; with lr/B {by_noise.text(2)}, {_trend(by_noise, 'lr/B')}; "
                     + stated(effect, f"batch {labels[-1]} against batch {labels[0]}") + ".")
    sharp, gap = rhos["sharpness"], rhos["loss_gap"]
    if len(labels) < 2 or not (math.isfinite(sharp.low) and math.isfinite(gap.low)):
        verdict = "cannot be judged here (too few sizes or runs for an interval)"
    else:
        halves = []
        for rho, what in ((sharp, "larger batches ended sharper"), (gap, "larger batches had a larger gap")):
            if not rho.excludes(0.0):
                halves.append(f"whether {what} is not detectable at this size")
            elif rho.estimate > 0:
                halves.append(f"{what} (detected)")
            else:
                halves.append(f"the opposite of '{what}' was detected")
        supported = sum(rho.excludes(0.0) and rho.estimate > 0 for rho in (sharp, gap))
        contradicted = sum(rho.excludes(0.0) and rho.estimate < 0 for rho in (sharp, gap))
        if contradicted:
            head = "contradicted here"
        else:
            head = {2: "borne out here", 1: "half borne out here", 0: "neither shown nor refuted at this size"}[
                supported]
        verdict = head + ": " + "; ".join(halves)
    return [f"{where}, over {len(labels)} batch sizes:", *parts,
            f"The claim that small batches find flatter minima that generalise better (Keskar et al. 2017) is "
            f"{verdict}."]


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
    per_seed = run.read_csv("seeds.csv")
    curves = run.read_csv("curves.csv")
    labels = [row["batch_size"] for row in summary]
    sizes = [_size(label, float(protocol["n_train"])) for label in labels]

    page = Page(f"batch-size: {workload_label(config['workload'])}, {config['optimizer']}")
    page.heading("Protocol")
    rule = config["lr_rule"]
    budget = (f"{config['budget']} learning rates on a log grid around the optimizer's default, each candidate "
              f"trained {protocol['tune_updates']} updates (the same number of updates at every size) from seed "
              f"{config['seed']} and chosen on its final validation loss; where the best rate was the grid's "
              "largest or smallest, a rate one grid step beyond it was tried, until the best had a tried rate on "
              "both sides")
    if rule == "tuned":
        lr_text = f"every batch size got the same tuning budget: {budget}"
    else:
        factor = "B / B_ref" if rule == "linear" else "sqrt(B / B_ref)"
        lr_text = (f"the rate was tuned at the reference size {config['ref_size']} ({budget}) and scaled by {factor} "
                   f"for the other sizes ({rule} rule)")
    measured = (f"Where each run stopped: sharpness (lambda_max, the largest Hessian eigenvalue of the full training "
                f"loss, Lanczos), Keskar et al.'s epsilon-sharpness (100 x the largest rise of the training loss in "
                f"the box |delta_i| <= {protocol['epsilon']:g} (|theta_i| + 1), over 1 + the loss, by 10 iterations "
                f"of L-BFGS-B), and the loss and accuracy on the training set, the {protocol['n_val']} validation "
                f"samples the rate was tuned on and {protocol['n_test']} held-out test samples; the generalisation "
                "gap is test minus training loss. Means over seeds with 95 % t intervals; lr/B is the noise scale "
                "of Smith & Le (2018).")
    protocol_name = protocol["protocol"]
    if protocol_name == "same-loss":
        page.paragraph(
            f"Each batch size trained (seeds {protocol['seeds']}, one plain model each, reshuffled every epoch) until "
            f"its full training loss fell to {protocol['target_loss']:g} (at most {config.get('max_updates')} "
            f"updates), as Keskar et al. (2017) compare minima; {lr_text}. The updates, epochs and seconds (the "
            "updates alone, one model) it took are measured. " + measured)
    else:
        page.paragraph(
            f"Each batch size trained for {config['epochs']} epochs (reshuffled every epoch) with seeds "
            f"{protocol['seeds']}; {lr_text}. Time per update is measured on one plain model over up to "
            f"{protocol['timed_updates']} updates; time per epoch = time per update x updates per epoch; seconds to "
            f"target = updates to target x time per update. Target training loss: {protocol['target_loss']:.4g}. "
            "The sizes end at different training losses, so their sharpness and gap are not measured at comparable "
            "points (--protocol same-loss is). " + measured)
    for label, edge in protocol["edges"].items():
        if edge:
            page.paragraph(f"Note: at batch {label} the chosen rate {protocol['chosen_lr'][label]:.3g} is still at "
                           f"the {edge} edge of its grid after {protocol['widenings'][label]} added rates.")
    for line in findings(per_seed, protocol_name, float(protocol["target_loss"])):
        page.finding(line)
    if protocol_name != "same-loss":
        fastest = min(summary, key=lambda r: float(r["seconds_per_epoch"]))
        page.finding(f"Fastest epoch: batch {fastest['batch_size']} "
                     f"({float(fastest['seconds_per_epoch']):.3g} s per epoch).")
    page.heading("Results")
    page.paragraph("One row per batch size, means over seeds (_low, _high: the 95 % t interval of the mean). "
                   "loss_gap = test - training loss; accuracy_gap = training - test accuracy.")
    page.table([{k: _number(v) for k, v in row.items()} for row in summary])
    page.heading("Runs")
    page.table([{k: _number(v) for k, v in row.items()} for row in per_seed])

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

    for x, xlabel, name, caption in (
            ("B", "batch size B", "sharpness_vs_batch.png", "against the batch size"),
            ("lr_over_b", "lr / B (Smith & Le's noise scale)", "sharpness_vs_noise.png", "against lr/B")):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for ax, (key, title) in zip(axes, QUANTITIES.items()):
            for index, row in enumerate(summary):
                mine = [r for r in per_seed if r["batch_size"] == row["batch_size"]]
                colour = f"C{index % 10}"
                ax.plot([float(r[x]) for r in mine], [float(r[key]) for r in mine], "o", color=colour, alpha=0.45,
                        ms=4)
                mean, low, high = float(row[key]), float(row[f"{key}_low"]), float(row[f"{key}_high"])
                error = [[mean - low], [high - mean]] if math.isfinite(low) else None
                ax.errorbar([float(row[x])], [mean], yerr=error, fmt="s", color=colour, capsize=4,
                            label=f"batch {row['batch_size']}")
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        page.figure(fig, f"Sharpness, epsilon-sharpness and the generalisation gap {caption}: one dot per run, the "
                    "mean over seeds with its 95 % interval.", save_to=run.file(name))

    fig, ax = plt.subplots(figsize=(6, 4))
    for index, row in enumerate(summary):
        mine = [r for r in per_seed if r["batch_size"] == row["batch_size"]]
        ax.plot([float(r["sharpness"]) for r in mine], [float(r["loss_gap"]) for r in mine], "o",
                color=f"C{index % 10}", label=f"batch {row['batch_size']}")
    ax.set_xlabel("sharpness (largest Hessian eigenvalue)")
    ax.set_ylabel("generalisation gap (test - training loss)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    page.figure(fig, "Sharpness vs generalisation gap, one point per run.", save_to=run.file("sharpness_vs_gap.png"))
    if run.exists("log.txt"):
        page.heading("Log")
        page.code(run.file("log.txt").read_text(encoding="utf-8"))
    return page
