"""The report page of a ``landscape`` run: a 1-D slice, or contour and surface plots of a plane.

Reads only the run directory: ``config.json``, ``summary.json`` and the data files
``slice.csv`` (``t, loss``) or ``grid.csv`` (``a, b, loss``) plus ``trajectory.csv``
(``step, a, b, loss``) when a trajectory was projected.
"""

from __future__ import annotations

import numpy as np

from descentlab.rundir import RunDir
from descentlab.report.html import Page

__all__ = ["build", "log_scale"]


def build(run: RunDir) -> Page:
    """The landscape page of ``run``."""
    config = run.config
    summary = run.read_json("summary.json")
    page = Page(f"landscape: {summary.get('source', config.get('source', ''))}")
    page.paragraph(summary.get("description", ""))
    if run.exists("slice.csv"):
        _slice_section(run, page, summary)
    if run.exists("grid.csv"):
        _plane_section(run, page, summary)
    page.heading("Summary")
    page.table([{"quantity": key, "value": value} for key, value in summary.get("table", {}).items()])
    page.heading("Configuration")
    page.code("\n".join(f"{key}: {value}" for key, value in sorted(config.items())))
    return page


def _slice_section(run: RunDir, page: Page, summary: dict) -> None:
    import matplotlib.pyplot as plt

    rows = run.read_csv("slice.csv")
    t = np.array([float(r["t"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(t, loss, color="#2f7bd8", lw=2, label="loss")
    quadratic = summary.get("quadratic")
    if quadratic:
        # the second-order model L0 + (g.d) t + 1/2 (d^T H d) t^2 around t = 0
        model = quadratic["loss"] + quadratic["slope"] * t + 0.5 * quadratic["curvature"] * t**2
        ax.plot(t, model, "--", color="#d8542f", lw=1.5,
                label=f"second order: curvature {quadratic['curvature']:.4g}")
    # the loss sets the vertical range; the parabola may leave it (it is only a local model)
    spread = float(loss.max() - loss.min()) or 1.0
    ax.set_ylim(float(loss.min()) - 0.08 * spread, float(loss.max()) + 0.12 * spread)
    for marker in summary.get("markers", []):
        ax.axvline(marker["t"], color="#888", lw=0.8, ls=":")
        ax.annotate(marker["label"], (marker["t"], ax.get_ylim()[1]), xytext=(3, -12), textcoords="offset points",
                    ha="left", fontsize=8)
    ax.set_xlabel(summary.get("x_label", "t"))
    ax.set_ylabel("loss")
    ax.set_title(summary.get("title", "1-D slice"))
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    page.heading("1-D slice")
    page.figure(fig, summary.get("caption", ""), save_to=run.file("slice.png"))


#: A non-negative loss whose largest value is this many times its smallest positive one (or the
#: floor) is drawn on a log colour scale.
LOG_SPAN = 50.0


def log_scale(loss: np.ndarray) -> tuple[bool, float]:
    """``(use a log scale, floor)`` for a grid of losses: yes when no loss is negative and they
    span more than :data:`LOG_SPAN`; the floor (zeros are drawn there) is the smallest positive
    loss, and at least 1e-8 of the largest, so one exact zero cannot stretch the scale."""
    finite = loss[np.isfinite(loss)]
    if not finite.size or finite.min() < 0 or finite.max() <= 0:
        return False, 0.0
    positive = finite[finite > 0]
    floor = max(float(positive.min()), float(finite.max()) * 1e-8)
    return bool(finite.max() / floor > LOG_SPAN), floor


def _plane_section(run: RunDir, page: Page, summary: dict) -> None:
    import matplotlib.pyplot as plt
    from matplotlib import colors

    rows = run.read_csv("grid.csv")
    a_all = np.array([float(r["a"]) for r in rows])
    b_all = np.array([float(r["b"]) for r in rows])
    a, b = np.unique(a_all), np.unique(b_all)
    loss = np.full((len(b), len(a)), np.nan)
    loss[np.searchsorted(b, b_all), np.searchsorted(a, a_all)] = [float(r["loss"]) for r in rows]
    positive, floor = log_scale(loss)
    finite = loss[np.isfinite(loss)]
    if positive:
        # Losses spanning decades read better on log-spaced levels; exact zeros (the lecture's
        # curve of minima w1 w2 = 1 passes through grid points) are drawn at the floor.
        loss = np.where(np.isfinite(loss), np.maximum(loss, floor), loss)
        finite = loss[np.isfinite(loss)]
    levels = (np.geomspace(finite.min(), finite.max(), 30) if positive
              else np.linspace(finite.min(), finite.max(), 30)) if finite.size else 10
    norm = colors.LogNorm() if positive else None
    x_label, y_label = summary.get("a_label", "a"), summary.get("b_label", "b")

    fig, ax = plt.subplots(figsize=(6.8, 5.6))
    filled = ax.contourf(a, b, loss, levels=levels, cmap="viridis", norm=norm)
    ax.contour(a, b, loss, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    bar = fig.colorbar(filled, ax=ax, label="loss (log scale)" if positive else "loss")
    if positive:
        from matplotlib.ticker import LogFormatterSciNotation, LogLocator

        bar.locator, bar.formatter = LogLocator(), LogFormatterSciNotation()
        bar.update_ticks()
    ax.plot([0], [0], "w*", ms=12, mec="k", label="centre")
    for mark in summary.get("marks", []):
        ax.plot([mark["a"]], [mark["b"]], "o", color="white", mec="k", ms=7)
        ax.annotate(mark["label"], (mark["a"], mark["b"]), xytext=(5, 5), textcoords="offset points", fontsize=8,
                    color="white")
    if run.exists("trajectory.csv"):
        trajectory = run.read_csv("trajectory.csv")
        ta = [float(r["a"]) for r in trajectory]
        tb = [float(r["b"]) for r in trajectory]
        ax.plot(ta, tb, "-o", color="#ff5a36", ms=3, lw=1.5, label="training trajectory (projected)")
        ax.plot(ta[:1], tb[:1], "s", color="#ff5a36", ms=7, mec="k")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(summary.get("title", "loss on a plane"))
    ax.legend(loc="upper right", fontsize=8)
    page.heading("Contour plot")
    page.figure(fig, summary.get("caption", ""), save_to=run.file("contour.png"))

    fig = plt.figure(figsize=(7, 5.6))
    ax3 = fig.add_subplot(projection="3d")
    aa, bb = np.meshgrid(a, b)
    surface = np.log10(loss) if positive else loss
    ax3.plot_surface(aa, bb, surface, cmap="viridis", linewidth=0, antialiased=True)
    ax3.set_xlabel(x_label)
    ax3.set_ylabel(y_label)
    ax3.set_zlabel("log10 loss" if positive else "loss")
    ax3.set_title("surface")
    page.heading("Surface plot")
    page.figure(fig, "The same grid as a surface.", save_to=run.file("surface.png"))
