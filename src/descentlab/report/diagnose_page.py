"""The report page of a ``diagnose`` run: the loss with its stalls, the spectrum at each stall,
the loss along the escape direction, and the verdict table.

Reads only the run directory: ``config.json``, ``metrics.csv`` (the training loop's),
``stalls.json`` (one :class:`~descentlab.critical.Stall` per plateau, with its eigenvalues and
the 1-D slice along the most negative eigenvector, saved at diagnosis time) and
``status.json``.
"""

from __future__ import annotations

import json

import math
from collections.abc import Iterable, Sequence
from typing import Any

from descentlab.critical.monitor import Stall
from descentlab.rundir import RunDir
from descentlab.report.html import Page, format_value

__all__ = ["build", "verdict_rows", "verdict_table", "load_stalls"]

_VERDICT_COLUMNS = ("stall", "step", "loss", "grad norm", "lambda_min", "lambda_max", "minimum ratio", "kind", "escape")


def load_stalls(run: RunDir) -> list[Stall]:
    """The stalls a diagnose run recorded (none when it has no ``stalls.json`` yet)."""
    return [Stall.from_dict(s) for s in run.read_json("stalls.json")] if run.exists("stalls.json") else []


def verdict_rows(stalls: Iterable[Stall]) -> list[dict[str, Any]]:
    """One row per stall: step, loss, grad norm, lambda_min, lambda_max, minimum ratio, kind, what escape did."""
    rows = []
    for index, stall in enumerate(stalls, start=1):
        kind = stall.kind or stall.status
        if stall.kind and stall.degenerate:
            kind += " (degenerate)"
        if stall.escaped:
            escape = f"loss {stall.escape_loss_before:.4g} -> {stall.escape_loss_after:.4g}"
        elif stall.escape_loss_before is not None:
            escape = "no step lowered the loss"
        else:
            escape = "-"
        rows.append(dict(zip(_VERDICT_COLUMNS, (index, stall.step, stall.loss, stall.grad_norm, stall.min_eigenvalue,
                                                stall.max_eigenvalue, stall.minimum_ratio, kind, escape))))
    return rows


def verdict_table(stalls: Sequence[Stall]) -> str:
    """The verdict rows as an aligned plain-text table (or one line saying no stall was found)."""
    rows = verdict_rows(stalls)
    if not rows:
        return "no stall: the loss kept improving (no plateau met the test)"
    cells = [list(_VERDICT_COLUMNS)] + [[format_value(row[c]) for c in _VERDICT_COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_VERDICT_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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
    page.table(verdict_rows(stalls), _VERDICT_COLUMNS)
    page.heading("Loss")
    page.figure(_loss_figure(rows, stalls), "Training loss per step (validation loss at evaluation steps); "
                "dashed lines: plateaus the monitor noticed, arrows: what the escape step did.",
                save_to=run.file("loss.png"))
    for index, stall in enumerate(stalls, start=1):
        if stall.status != "diagnosed":
            continue
        page.heading(f"Stall {index} at step {stall.step}: {stall.kind}{' (degenerate)' if stall.degenerate else ''}")
        page.figure(_spectrum_figure(stall), "Hessian spectrum at the stall: density of all eigenvalues when the "
                    "Hessian was formed, and the extreme eigenvalues found (both ends).",
                    save_to=run.file(f"stall-{index}-spectrum.png"))
        if stall.slice_t:
            page.figure(_slice_figure(stall), "Loss along the unit eigenvector u of the most negative eigenvalue, "
                        "L(theta + t u), with the second-order prediction L + 1/2 lambda_min t^2.",
                        save_to=run.file(f"stall-{index}-slice.png"))
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
    diagnosed = [s for s in stalls if s.status == "diagnosed"]
    text = f"Training loss {first:.4g} -> {last:.4g} in {rows[-1]['step']} steps. "
    if not stalls:
        return text + "The loss never stalled."
    saddles = [s for s in diagnosed if s.kind == "saddle"]
    text += f"{len(stalls)} plateau(s) noticed, {len(diagnosed)} diagnosed"
    if saddles:
        s = saddles[0]
        text += (f"; at step {s.step} a saddle (lambda_min {s.min_eigenvalue:.3g} < 0 < lambda_max "
                 f"{s.max_eigenvalue:.3g})")
        if s.escaped:
            text += f", and the escape step lowered the loss from {s.escape_loss_before:.4g} to {s.escape_loss_after:.4g}"
    return text + "."


def _loss_figure(rows: Sequence[dict], stalls: Sequence[Stall]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    steps = [int(r["step"]) for r in rows]
    ax.plot(steps, [float(r["train_loss"]) for r in rows], color="#2f7bd8", lw=1.6, label="train loss")
    val = [(int(r["step"]), float(r["val_loss"])) for r in rows if r.get("val_loss") not in ("", None)]
    if val:
        ax.plot(*zip(*val), "o-", color="#e09b2d", ms=3, lw=1, label="validation loss")
    for index, stall in enumerate(stalls, start=1):
        ax.axvline(stall.step, color="#d8542f", ls="--", lw=1)
        ax.annotate(f"stall {index}: {stall.kind or stall.status}", (stall.step, stall.loss), xytext=(6, 10),
                    textcoords="offset points", fontsize=8, color="#a33")
        if stall.escaped:
            ax.annotate("", xy=(stall.step, stall.escape_loss_after), xytext=(stall.step, stall.escape_loss_before),
                        arrowprops={"arrowstyle": "->", "color": "#2a9d4b", "lw": 2})
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
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
        ax.set_ylabel("")
        ax.set_yticks([])
    extremes = np.asarray(stall.eigenvalues)
    if extremes.size:
        ymax = ax.get_ylim()[1] if stall.spectrum else 1.0
        ax.vlines(extremes, 0 if not stall.spectrum else 0.8, ymax, colors=np.where(extremes < 0, "#d8542f", "#2a9d4b"),
                  lw=1.5, label="extreme eigenvalues found")
    ax.axvline(0.0, color="#333", lw=0.8)
    ratio = "" if stall.minimum_ratio is None else f", minimum ratio {stall.minimum_ratio:.3g}"
    ax.set_title(f"step {stall.step}: lambda_min {stall.min_eigenvalue:.3g}, lambda_max {stall.max_eigenvalue:.3g}{ratio}")
    ax.set_xlabel("Hessian eigenvalue")
    ax.legend(loc="best", fontsize=8)
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
