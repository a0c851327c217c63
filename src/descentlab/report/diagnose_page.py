"""The report page of a ``diagnose`` run: the loss with its stalls, and per stall its verdict,
the evidence, the remedy, and the figure that shows that verdict's evidence.

Figures follow the verdict: the Hessian spectrum at every stall where it was measured; the loss
along the escape direction only at a saddle; the sharpness against the stability threshold
``limit / lr`` over the run's rate for ``unstable`` and ``diverged``; the gradient's
signal-to-noise ratio against the batch size for ``noise_floor``; the rate over the run for
``no_learning_rate``; for a cause in the network (an exploding or vanishing gradient, dead or
saturated units, unscaled inputs, and a divergence) the relative gradient through the depth and
the activations' dead and saturated shares.

With sharpness tracking (``sharpness.csv``) the page shows the sharpness against the stability
threshold over the run, with the loss below it, and says whether the run reached the edge of
stability and hovered there. Where remedies were tried at a stall, it tabulates the trials and
draws their loss curves from the fork point.

Reads only the run directory: ``config.json``, ``metrics.csv`` (the training loop's),
``tracked.csv`` (the loss on the monitor's fixed sample, what its plateau test read), ``stalls.json`` (one :class:`~descentlab.critical.Stall` per stall, with its verdict and
evidence), ``sharpness.csv`` (when tracked) and ``status.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from descentlab.critical.output_floor import output_range
from descentlab.critical.sharpness import FIELDS as SHARPNESS_FIELDS
from descentlab.critical.sharpness import SharpnessPoint, edge_of_stability
from descentlab.critical.stall import Stall, evidence_text
from descentlab.critical.verdicts import AT_LIMIT
from descentlab.rundir import RunDir
from descentlab.report.html import Page, format_value
from descentlab.report.text_table import text_table

__all__ = ["build", "verdict_rows", "verdict_table", "remedy_lines", "trial_lines", "sharpness_line", "load_stalls",
           "load_sharpness"]

_TABLE_COLUMNS = ("stall", "step", "loss", "verdict", "evidence", "action")
_PAGE_COLUMNS = ("stall", "step", "loss", "grad norm", "lambda_min", "lambda_max", "sharpness / limit",
                 "gradient SNR", "verdict", "remedy", "action")


def load_stalls(run: RunDir) -> list[Stall]:
    """The stalls a diagnose run recorded (none when it has no ``stalls.json`` yet)."""
    return [Stall.from_dict(s) for s in run.read_json("stalls.json")] if run.exists("stalls.json") else []


def _action(stall: Stall) -> str:
    if stall.escaped:
        return f"escaped: loss {stall.escape_loss_before:.4g} -> {stall.escape_loss_after:.4g}"
    if stall.escape_loss_before is not None:
        return "escape: no step lowered the loss"
    back = (stall.evidence or {}).get("rollback")
    if back:
        return f"rolled back to step {back['to_step']}, rate x {back['lr_factor']:.3g}"
    if stall.remedy_applied and stall.remedy_applied != "keep":
        return f"continued with {stall.remedy_applied}"
    return "-"


def verdict_rows(stalls: Iterable[Stall]) -> list[dict[str, Any]]:
    """One row per stall with every column of the report's table."""
    rows = []
    for index, stall in enumerate(stalls, start=1):
        ev = stall.evidence or {}
        rate, noise = ev.get("rate") or {}, ev.get("noise") or {}
        ratio = f"{rate['sharpness']:.3g} / {rate['limit']:.3g}" if rate.get("sharpness") is not None else "-"
        snr = noise.get("snr")
        verdict = stall.verdict or stall.status
        rows.append(dict(zip(_PAGE_COLUMNS, (
            index, stall.step, stall.loss, stall.grad_norm, stall.min_eigenvalue, stall.max_eigenvalue, ratio,
            "-" if snr is None else snr, verdict, stall.remedy or "-", _action(stall)))))
        rows[-1]["evidence"] = evidence_text(stall) if stall.verdict else (stall.status if stall.status != verdict else "-")
    return rows


def verdict_table(stalls: Sequence[Stall]) -> str:
    """The stalls as an aligned plain-text table: step, loss, verdict, evidence, action (or one
    line saying no stall was found)."""
    rows = verdict_rows(stalls)
    if not rows:
        return "no stall: the tracked loss kept going down (no plateau met the test)"
    return text_table([list(_TABLE_COLUMNS)] + [[format_value(row[c]) for c in _TABLE_COLUMNS] for row in rows])


def remedy_lines(stalls: Sequence[Stall]) -> list[str]:
    """``remedy N: ...`` for every diagnosed stall."""
    return [f"remedy {i}: {s.remedy}" for i, s in enumerate(stalls, start=1) if s.remedy]


def build(run: RunDir) -> Page:
    """The diagnose page of ``run``."""
    config = run.config
    stalls = load_stalls(run)
    rows = run.read_csv("metrics.csv") if run.exists("metrics.csv") else []
    status = run.read_json("status.json") if run.exists("status.json") else {"status": "running"}
    train = config.get("train", {})
    page = Page(f"diagnose: {config.get('workload_description') or _workload_name(config)}")
    page.paragraph(
        f"Optimizer {train.get('optimizer')} (lr {train.get('lr') if train.get('lr') is not None else 'default'}), "
        f"batch size {train.get('batch_size') or 'full'}, {config.get('total_steps')} steps, seed {train.get('seed')}. "
        f"Run status: {status.get('status')} at step {status.get('step')}."
    )
    page.finding(_headline(stalls, rows))
    page.heading("Verdict")
    page.table(verdict_rows(stalls), _PAGE_COLUMNS)
    page.heading("Loss")
    tracked = run.read_csv("tracked.csv") if run.exists("tracked.csv") else []
    page.figure(_loss_figure(rows, stalls, tracked, smooth=train.get("batch_size") is not None),
                "Training loss per step (the mini-batch's, with its moving average), the tracked loss "
                "(on the monitor's fixed sample: what the plateau test reads), validation loss at evaluation steps; "
                "dashed lines: stalls the monitor noticed, with their verdicts; arrows: what an escape step did.",
                save_to=run.file("loss.png"))
    points = load_sharpness(run)
    if points:
        _sharpness_section(page, run, points, tracked)
    for index, stall in enumerate(stalls, start=1):
        if stall.status != "diagnosed":
            continue
        page.heading(f"Stall {index} at step {stall.step}: {stall.verdict}")
        page.paragraph(f"Evidence: {evidence_text(stall)}. Remedy: {stall.remedy}.")
        rate = (stall.evidence or {}).get("rate") or {}
        if rate.get("formula"):
            page.paragraph(f"Stability rule: {rate['formula']}.")
        if stall.eigenvalues:
            page.figure(_spectrum_figure(stall), "Hessian spectrum at the stall: density of all eigenvalues when "
                        "the Hessian was formed, and the extreme eigenvalues found (both ends).",
                        save_to=run.file(f"stall-{index}-spectrum.png"))
        if stall.verdict == "saddle" and stall.slice_t:
            page.figure(_slice_figure(stall), "Loss along the unit eigenvector u of the most negative eigenvalue, "
                        "L(theta + t u), with the second-order prediction L + 1/2 lambda_min t^2.",
                        save_to=run.file(f"stall-{index}-slice.png"))
        if stall.verdict in ("unstable", "diverged") and rate.get("sharpness") is not None:
            page.figure(_sharpness_figure(stall, rows), "The stability threshold limit / lr over the run (the "
                        "sharpness the rate allows) and the sharpness measured at the stall: above the line the "
                        "step overshoots the valley.", save_to=run.file(f"stall-{index}-sharpness.png"))
        if stall.verdict == "noise_floor" and ((stall.evidence or {}).get("noise") or {}).get("snr") is not None:
            page.figure(_noise_figure(stall), "Gradient signal-to-noise ratio ||grad L||^2 / tr Sigma_B against the "
                        "batch size B, from the per-sample gradient variance measured at the stall.",
                        save_to=run.file(f"stall-{index}-noise.png"))
        if stall.verdict == "no_learning_rate" and rows:
            page.figure(_rate_figure(stall, rows), "The learning rate over the run.",
                        save_to=run.file(f"stall-{index}-rate.png"))
        outputs = ((stall.evidence or {}).get("layers") or {}).get("outputs") or {}
        if stall.verdict == "bounded_outputs" and outputs.get("floor") is not None and rows:
            held = (f", {outputs['at_bound']:.0%} of them held at the bound, where it passes no gradient"
                    if outputs.get("at_bound") else "")
            page.figure(_floor_figure(stall, rows), "The training loss over the run and the floor the bounded "
                        f"outputs put under it ({outputs['family']} at {outputs['by']}, every output in "
                        f"{output_range(outputs)}{held}): no step can take the loss below the line.",
                        save_to=run.file(f"stall-{index}-floor.png"))
        if stall.verdict in _NETWORK_VERDICTS and (stall.evidence or {}).get("layers"):
            page.figure(_layers_figure(stall), "Per layer, from the input to the output: the relative gradient "
                        "||dL/dW|| / ||W|| of every weight layer (a vanishing gradient falls toward the input, an "
                        "exploding one grows), and the share of each activation's units that are dead (ReLU, zero on "
                        "every sample) or saturated (sigmoid/tanh, in the flat tails on most samples).",
                        save_to=run.file(f"stall-{index}-layers.png"))
            notes = (stall.evidence["layers"].get("notes") or [])
            if notes:
                page.paragraph("Not measured: " + "; ".join(notes) + ".")
        if stall.trials:
            _trials_section(page, run, index, stall)
    page.heading("Configuration")
    page.code(json.dumps(config, indent=2, sort_keys=True))
    return page


def _workload_name(config: dict) -> str:
    spec = config.get("workload", {})
    return spec.get("workload") or f"{spec.get('model')} on {spec.get('data')}"


def _headline(stalls: Sequence[Stall], rows: Sequence[dict]) -> str:
    if not rows:
        return "No training step was recorded."
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    text = f"Training loss {first:.4g} -> {last:.4g} in {rows[-1]['step']} steps. "
    if not stalls:
        return text + "The loss never stalled."
    diagnosed = [s for s in stalls if s.status == "diagnosed"]
    text += f"{len(stalls)} stall(s), {len(diagnosed)} diagnosed"
    if diagnosed:
        s = diagnosed[0]
        text += f"; at step {s.step}: {s.verdict} ({evidence_text(s)})"
        if s.escaped:
            text += f", and the escape step lowered the loss from {s.escape_loss_before:.4g} to {s.escape_loss_after:.4g}"
    return text + "."


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """The mean of the last ``window`` values at each position (fewer at the start): the trend
    of a noisy mini-batch loss, lagging it by about ``window / 2`` steps."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    ends = np.arange(1, len(values) + 1)
    return ((sums[ends] - sums[ends - counts]) / counts).tolist()


def _loss_figure(rows: Sequence[dict], stalls: Sequence[Stall], tracked: Sequence[dict] = (), smooth: bool = False):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    steps = [int(r["step"]) for r in rows]
    losses = [float(r["train_loss"]) for r in rows]
    ax.plot(steps, losses, color="#9bb7e0", lw=1.0, label="train loss (mini-batch)" if smooth else "train loss")
    if smooth and len(losses) > 10:
        window = max(5, len(losses) // 20)
        ax.plot(steps, moving_average(losses, window), color="#5a7fb8", lw=1.6,
                label=f"train loss, mean of the last {window} steps")
    if tracked:
        ax.plot([int(r["step"]) for r in tracked], [float(r["loss"]) for r in tracked], color="#1f4e9c", lw=2,
                label="tracked loss (fixed sample)")
    val = [(int(r["step"]), float(r["val_loss"])) for r in rows if r.get("val_loss") not in ("", None)]
    if val:
        ax.plot(*zip(*val), "o-", color="#e09b2d", ms=3, lw=1, label="validation loss")
    for index, stall in enumerate(stalls, start=1):
        ax.axvline(stall.step, color="#d8542f", ls="--", lw=1)
        # the label runs down the stall's line from just under the top of the axes: always inside them
        ax.annotate(f"stall {index}: {stall.verdict or stall.status}", xy=(stall.step, 0.97),
                    xycoords=("data", "axes fraction"), xytext=(-3, 0), textcoords="offset points", rotation=90,
                    ha="right", va="top", fontsize=8, color="#a33", annotation_clip=True)
        if stall.escaped:
            ax.annotate("", xy=(stall.step, stall.escape_loss_after), xytext=(stall.step, stall.escape_loss_before),
                        arrowprops={"arrowstyle": "->", "color": "#2a9d4b", "lw": 2})
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def _spectrum_figure(stall: Stall):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 3.6))
    if stall.spectrum:
        values = np.asarray(stall.spectrum)
        ax.hist(values, bins=min(80, max(10, len(values) // 8)), color="#9bb7e0", edgecolor="#5a7fb8", log=True,
                label=f"all {len(values)} eigenvalues")
        ax.set_ylabel("count (log scale)")
    else:
        ax.set_yticks([])
    extremes = np.asarray(stall.eigenvalues)
    if extremes.size:
        ymax = ax.get_ylim()[1] if stall.spectrum else 1.0
        ax.vlines(extremes, 0 if not stall.spectrum else 0.8, ymax, colors=np.where(extremes < 0, "#d8542f", "#2a9d4b"),
                  lw=1.5, label="extreme eigenvalues found")
    ax.axvline(0.0, color="#333", lw=0.8)
    ratio = "" if stall.minimum_ratio is None else f", minimum ratio {stall.minimum_ratio:.3g}"
    ax.set_title(f"step {stall.step} ({stall.verdict}): lambda_min {stall.min_eigenvalue:.3g}, "
                 f"lambda_max {stall.max_eigenvalue:.3g}{ratio}")
    ax.set_xlabel("Hessian eigenvalue")
    # outside the axes, right: the extreme eigenvalues sit at both edges of the plot
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def _slice_figure(stall: Stall):
    import matplotlib.pyplot as plt
    import numpy as np

    t = np.asarray(stall.slice_t)
    loss = np.asarray(stall.slice_loss)
    centre = float(loss[len(loss) // 2]) if len(loss) % 2 else stall.loss
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(t, loss, color="#2f7bd8", lw=2, label="loss along u")
    if stall.min_eigenvalue is not None and math.isfinite(stall.min_eigenvalue):
        ax.plot(t, centre + 0.5 * stall.min_eigenvalue * t**2, "--", color="#d8542f", lw=1.2,
                label=f"L + 1/2 lambda_min t^2 (lambda_min = {stall.min_eigenvalue:.3g})")
    ax.axvline(0.0, color="#333", lw=0.8)
    if stall.escaped and stall.escape_step is not None:
        ax.axvline(stall.escape_step, color="#2a9d4b", lw=1, ls=":", label=f"escape step t = {stall.escape_step:.3g}")
        ax.plot([stall.escape_step], [stall.escape_loss_after], "o", color="#2a9d4b", ms=6)
    ax.set_ylim(min(loss.min(), centre) - 0.05 * abs(centre), max(loss.max(), centre) + 0.05 * abs(centre) + 1e-9)
    ax.set_xlabel("t (distance along the unit eigenvector)")
    ax.set_ylabel("loss")
    ax.set_title(f"stall at step {stall.step}: the downhill side of the saddle")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _finish(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Labels, title, a log-scale grid and the legend of a verdict's figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8)


def _sharpness_figure(stall: Stall, rows: Sequence[dict]):
    """The stability threshold as a curvature, ``limit / lr(t)`` over the run's rates, and the
    curvature measured at the stall, ``sharpness / lr`` (λ_max for SGD, preconditioned for
    adaptive rates): above the line a step overshoots the valley."""
    import matplotlib.pyplot as plt

    rate = stall.evidence["rate"]
    lr_stall = rate["lr"]
    per_lr = rate["sharpness"] / lr_stall if lr_stall else math.nan  # lambda_max, or its preconditioned version
    fig, ax = plt.subplots(figsize=(7.5, 4))
    lrs = [(int(r["step"]), float(r["lr"])) for r in rows if r.get("lr") not in ("", None) and float(r["lr"]) > 0]
    if lrs:
        ax.plot([s for s, _ in lrs], [rate["limit"] / lr for _, lr in lrs], color="#2a9d4b", lw=1.5,
                label=f"stability threshold {rate['limit']:.3g} / lr")
    ax.plot([stall.evidence.get("diverged", {}).get("checkpoint_step", stall.step) if stall.verdict == "diverged"
             else stall.step], [per_lr], "o", color="#d8542f", ms=8,
            label=f"sharpness / lr at the {'last good point' if stall.verdict == 'diverged' else 'stall'}: {per_lr:.3g}")
    ax.set_yscale("log")
    _finish(ax, "step", "curvature (lambda_max, preconditioned for adaptive rates)",
            f"stall at step {stall.step}: {stall.verdict}, sharpness {rate['sharpness']:.3g} vs limit {rate['limit']:.3g}")
    return fig


def _noise_figure(stall: Stall):
    import matplotlib.pyplot as plt
    import numpy as np

    noise = stall.evidence["noise"]
    g2, s2, n = noise["grad_norm_sq"], noise["per_sample_variance"], noise["n_data"]
    sizes = np.unique(np.geomspace(1, n, 60).round().astype(int))
    with np.errstate(divide="ignore", invalid="ignore"):  # B = N: no noise (and 0/0 when the gradient is 0 too)
        snr = g2 / (s2 / sizes * np.clip(1 - sizes / n, 0, None))
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.plot(sizes, snr, color="#2f7bd8", lw=2, label="||grad L||^2 / tr Sigma_B")
    ax.axhline(1.0, color="#333", lw=0.8, ls="--", label="SNR = 1")
    ax.plot([noise["batch_size"]], [noise["snr"]], "o", color="#d8542f", ms=8,
            label=f"this run: batch {noise['batch_size']}, SNR {noise['snr']:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _finish(ax, "batch size B", "gradient signal-to-noise ratio",
            f"stall at step {stall.step}: noise floor (SNR 1 at B = {noise.get('critical_batch') or math.nan:.0f})")
    return fig


_NETWORK_VERDICTS = ("exploding_gradient", "bounded_outputs", "dead_units", "saturated_units", "vanishing_gradient",
                     "unscaled_inputs", "symmetric_units", "diverged")


def _layers_figure(stall: Stall):
    """The depth profile (relative gradient per weight layer, log scale) beside the activations'
    dead and saturated shares."""
    import matplotlib.pyplot as plt

    layers = stall.evidence["layers"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    weights = layers.get("layers") or []
    values = [w["relative"] if w["relative"] and w["relative"] > 0 else math.nan for w in weights]
    left.plot(range(len(weights)), values, "o-", color="#2f7bd8", lw=2, label="||dL/dW|| / ||W||")
    left.set_xticks(range(len(weights)), [w["name"] or "(model)" for w in weights], rotation=45, fontsize=8)
    if any(math.isfinite(v) for v in values):
        left.set_yscale("log")
    zero = [i for i, w in enumerate(weights) if not w["relative"]]
    for i in zero:  # no point on a log scale: said where it would be
        left.annotate("0", (i, 0.5), xycoords=("data", "axes fraction"), ha="center", color="#d8542f", fontsize=11)
    _finish(left, "weight layer (input -> output)", "relative gradient", "gradient through the depth")
    units = layers.get("units") or []
    shares = [(u["name"], u.get("dead"), u.get("saturated")) for u in units]
    positions = range(len(shares))
    right.bar(positions, [d or 0 for _, d, _ in shares], color="#d8542f", label="dead (ReLU)")
    right.bar(positions, [s or 0 for _, _, s in shares], bottom=[d or 0 for _, d, _ in shares], color="#e9a23b",
              label="saturated (sigmoid/tanh)")
    right.set_xticks(list(positions), [n for n, _, _ in shares], rotation=45, fontsize=8)
    right.set_ylim(0, 1)
    _finish(right, "activation (call order)", "share of units", "units passing no gradient")
    fig.suptitle(f"stall at step {stall.step}: {stall.verdict}")
    fig.tight_layout()
    return fig


def _floor_figure(stall: Stall, rows: Sequence[dict]):
    """The training loss over the run against the floor a bounded output puts under it."""
    import matplotlib.pyplot as plt

    outputs = stall.evidence["layers"]["outputs"]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.plot([int(r["step"]) for r in rows], [float(r["train_loss"]) for r in rows], color="#2f7bd8", lw=2,
            label="training loss")
    ax.axhline(outputs["floor"], color="#d8542f", ls="--", lw=1.5,
               label=f"floor {outputs['floor']:.3g} ({outputs['loss']}, outputs in {output_range(outputs)})")
    ax.axvline(stall.step, color="#333", ls=":", lw=1)
    _finish(ax, "step", "loss", f"stall at step {stall.step}: bounded outputs")
    return fig


def _rate_figure(stall: Stall, rows: Sequence[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.plot([int(r["step"]) for r in rows], [float(r["lr"]) for r in rows], color="#2f7bd8", lw=2)
    ax.axvline(stall.step, color="#d8542f", ls="--", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"stall at step {stall.step}: no learning rate")
    ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------------- sharpness over training
def load_sharpness(run: RunDir) -> list[SharpnessPoint]:
    """The sharpness estimates of a run (``sharpness.csv``; none when it was not tracked)."""
    if not run.exists("sharpness.csv"):
        return []
    points = []
    for row in run.read_csv("sharpness.csv"):
        values: dict[str, Any] = {}
        for name in SHARPNESS_FIELDS:
            text = row.get(name, "")
            if name in ("step", "n_matvecs"):
                values[name] = int(text)
            elif name == "rule":
                values[name] = text
            elif name == "converged":
                values[name] = text == "True"
            else:
                values[name] = float(text) if text not in ("", None) else None
        values["sharpness"] = math.nan if values["sharpness"] is None else values["sharpness"]
        points.append(SharpnessPoint(**values))
    return points


def sharpness_line(points: Sequence[SharpnessPoint], losses: Sequence[tuple[int, float]], tracking_seconds: float,
                   train_seconds: float | None = None) -> str:
    """One line on the tracked sharpness: its cost, where it went, and whether it reached the
    edge of stability and stayed there while the loss fell."""
    if not points:
        return "sharpness: not measured"
    summary = edge_of_stability(points, losses)
    gaps = sorted({b.step - a.step for a, b in zip(points, points[1:])}) or [0]
    every = f"{gaps[0]}" if len(gaps) == 1 else f"{gaps[0]}-{gaps[-1]}"  # spread out by the budget
    samples = {p.samples for p in points} - {None}
    on = f" on {samples.pop()} samples" if len(samples) == 1 else ""
    ms = 1e3 * tracking_seconds / len(points)
    ms_text = f"{ms:.0f}" if ms >= 10 else f"{ms:.2g}"  # 120, not 1.2e+02
    cost = f"every {every} steps{on}, {summary['products_per_estimate']:.2g} products and {ms_text} ms per estimate"
    if train_seconds:
        share = 100 * tracking_seconds / train_seconds
        cost += f", {share:.0f} % of the training time" if share >= 10 else f", {share:.2g} % of the training time"
    first, last = points[0], points[-1]
    text = f"sharpness ({cost}): {first.sharpness:.3g} at step {first.step}"
    threshold = last.threshold
    if summary["reached_step"] is None:
        text += f" -> {last.sharpness:.3g} at step {last.step}"
        if summary["max_ratio"] is not None:
            text += f", at most {summary['max_ratio']:.0%} of the stability threshold ({threshold:.3g} at the end)"
        return text
    text += (f", reached {AT_LIMIT:.0%} of the stability threshold {threshold:.3g} at step {summary['reached_step']}, "
             f"peaked at {summary['peak_ratio']:.3g}x at step {summary['peak_step']}")
    if summary["settled_step"] is not None:
        text += (f", and from step {summary['settled_step']} on stayed within {summary['band']:.0%} of it at "
                 f"{summary['within_band']:.0%} of the estimates (median {summary['median_ratio']:.3g}x)")
    if "loss_rises" in summary:
        text += (f", while the loss fell {summary['loss_at_reach']:.3g} -> {summary['loss_end']:.3g} with "
                 f"{summary['loss_rises']} rises in {summary['loss_checks']} checks")
    return text


def _sharpness_section(page: Page, run: RunDir, points: Sequence[SharpnessPoint], tracked: Sequence[dict]) -> None:
    losses = [(int(r["step"]), float(r["loss"])) for r in tracked]
    summary = edge_of_stability(points, losses)
    page.heading("Sharpness over training")
    rule = points[-1].rule or "none (no optimizer given)"
    page.paragraph(f"{len(points)} estimates (Lanczos warm-started from the previous eigenvector, relative residual "
                   f"1e-2, {summary.get('products_per_estimate', 0):.2g} Hessian-vector products each on average) on the "
                   f"monitor's fixed sample; stability rule: {rule}. " + sharpness_line(points, losses, sum(
                       p.seconds for p in points)).split(": ", 1)[1] + ".")
    page.figure(_sharpness_over_training(points, losses), "Top: the sharpness (lambda_max of the Hessian; of the "
                "preconditioned Hessian P^-1 H for adaptive optimizers) and the stability threshold the rate allows "
                "(2/lr for gradient descent, 2(1+beta)/lr for heavy-ball momentum, 2(1+beta1)/((1-beta1) lr) for "
                "Adam); lambda_min when tracked. Bottom: the tracked loss.", save_to=run.file("sharpness.png"))
    if run.exists("sharpness_seeds.json"):  # descentlab diagnose --seeds N
        from descentlab.report.edge_seeds import seed_lines

        lines = seed_lines(run.read_json("sharpness_seeds.json"))
        page.paragraph(lines[0][0].upper() + lines[0][1:] + " (the other seeds' runs are under seeds/).")
        for line in lines[1:]:
            page.finding(line[0].upper() + line[1:] + ".")


def _sharpness_over_training(points: Sequence[SharpnessPoint], losses: Sequence[tuple[int, float]]):
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    steps = [p.step for p in points]
    top.plot(steps, [p.sharpness for p in points], color="#2f7bd8", lw=2, label="sharpness")
    short = [(p.step, p.sharpness) for p in points if not p.converged]
    if short:  # a Rayleigh quotient: the top eigenvalue is at least this; its residual bounds no distance to the top
        top.plot(*zip(*short), ls="none", marker="^", mfc="white", color="#2f7bd8", ms=6,
                 label="cut short by the budget: a lower bound (lambda_max is at least this)")
    with_threshold = [(p.step, p.threshold) for p in points if p.threshold is not None]
    if with_threshold:
        top.plot(*zip(*with_threshold), color="#d8542f", lw=1.5, ls="--", label="stability threshold (limit / lr)")
        top.fill_between([s for s, _ in with_threshold], [0.9 * t for _, t in with_threshold],
                         [1.1 * t for _, t in with_threshold], color="#d8542f", alpha=0.1, label="within 10 %")
    if any(p.lambda_min is not None for p in points):
        top.plot(steps, [p.lambda_min if p.lambda_min is not None else math.nan for p in points], color="#2a9d4b",
                 lw=1.2, label="lambda_min")
        top.axhline(0.0, color="#333", lw=0.6)
    top.set_ylabel("curvature")
    top.grid(alpha=0.3)
    top.legend(loc="best", fontsize=8)
    if losses:
        bottom.plot(*zip(*losses), color="#1f4e9c", lw=1.2)
        bottom.set_yscale("log")
    bottom.set_xlabel("step")
    bottom.set_ylabel("tracked loss")
    bottom.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- remedy trials
_TRIAL_COLUMNS = ("remedy", "change", "loss after", "decrease", "seconds", "per second")


def _trial_columns(trials: dict) -> list[str]:
    """The columns, the rate's named for what it is: orders of magnitude (``ln``) where every
    trial's loss was positive, else the plain decrease."""
    rate = "ln-decrease per second" if trials.get("logarithmic", True) else "decrease per second"
    return [rate if c == "per second" else c for c in _TRIAL_COLUMNS]


def _trial_rows(trials: dict) -> list[dict[str, Any]]:
    rate = _trial_columns(trials)[-1]
    by_name = {t["remedy"]: t for t in trials["trials"]}
    rows = []
    for name in trials["ranking"]:
        trial = by_name[name]
        after = trial["losses"][-1]
        rows.append({"remedy": name + (" (best)" if name == trials.get("winner") else ""), "change": trial["text"],
                     "loss after": "diverged" if after is None else after,
                     "decrease": "-" if trial["decrease"] is None else trial["decrease"], "seconds": trial["seconds"],
                     rate: "-" if trial["rate"] is None else trial["rate"]})
    return rows


def trial_lines(stalls: Sequence[Stall]) -> list[str]:
    """Per stall with remedy trials: a heading line and an aligned table, best first."""
    lines: list[str] = []
    for index, stall in enumerate(stalls, start=1):
        trials = stall.trials
        if not trials:
            continue
        if trials.get("status") != "ran":
            lines.append(f"remedy trials at stall {index}: {trials.get('status')}")
            continue
        how = "as one stacked ensemble" if trials["stacked"] else f"one after another ({trials['reason']})"
        start = trials["trials"][0]["losses"][0]
        lines.append(f"remedy trials at stall {index} (step {trials['fork_step']}): {trials['steps']} steps each from "
                     f"loss {start:.4g} (on {trials['eval_samples']} training samples), same data and seed, {how}")
        columns = [c for c in _trial_columns(trials) if c != "change"]  # the winner's change is said below
        rows = _trial_rows(trials)
        lines.extend(text_table([columns] + [[format_value(row[c]) for c in columns] for row in rows]).splitlines())
        winner = trials.get("winner")
        change = next((t["text"] for t in trials["trials"] if t["remedy"] == winner), "")
        if stall.remedy_applied:
            lines.append(f"continued with: {stall.remedy_applied} ({change})")
        elif winner == "escape" and stall.escaped:
            lines.append(f"best: escape ({change}; applied: the default action at a saddle)")
        elif winner:
            why = trials.get("not_applied") or "report only; --apply-remedy continues with it"
            lines.append(f"best: {winner} ({change}; {why})")
        else:
            lines.append("best: none of the remedies lowered the loss")
    return lines


def _trials_section(page: Page, run: RunDir, index: int, stall: Stall) -> None:
    trials = stall.trials
    page.heading(f"Remedy trials at stall {index}")
    if trials.get("status") != "ran":
        page.paragraph(f"Remedy trials: {trials.get('status')}.")
        return
    how = "as one stacked ensemble (one vmapped forward and backward, each trial's own optimizer)" if trials["stacked"] \
        else f"one after another ({trials['reason']})"
    page.paragraph(f"Each remedy that fits the verdict ran for {trials['steps']} steps from a fork of the run at step "
                   f"{trials['fork_step']} (the same weights and optimizer state, the same batches in the same order), "
                   f"{how}; the loss is measured on {trials['eval_samples']} training samples. Ranked by the loss's "
                   f"decrease in orders of magnitude, ln(loss at the fork / loss after) (the plain decrease where a "
                   f"loss is not positive), per second of a run of that remedy alone.")
    page.table(_trial_rows(trials), _trial_columns(trials))
    page.figure(_trials_figure(trials), "Loss from the fork point (step 0 = the stall) under each remedy; the best "
                "one drawn thick.", save_to=run.file(f"stall-{index}-trials.png"))


def _trials_figure(trials: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    for trial in trials["trials"]:
        best = trial["remedy"] == trials.get("winner")
        losses = [math.nan if v is None else v for v in trial["losses"]]
        ax.plot(trial["steps"], losses, lw=2.5 if best else 1.2, label=trial["remedy"] + (" (best)" if best else ""))
    _finish(ax, "steps since the stall", "loss (training data)", f"remedy trials from step {trials['fork_step']}")
    return fig
