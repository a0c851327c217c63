"""Figures of a surface run, drawn from plain arrays (what a ``surface`` run directory holds).

- :func:`contour_figure`: contour map, critical points marked by kind, every path overlaid;
- :func:`loss_figure`: loss (or the gap to the global minimum, log scale) against step;
- :func:`lift_figure`: the "dimension lift": a 1-D slice through a saddle along its
  positive-curvature eigenvector has a local minimum there, yet in 2-D the point is a saddle;
- :func:`animate_paths`: an animated GIF, one frame per ``every`` steps (matplotlib's
  ``PillowWriter``);
- :func:`basin_figure`: which minimum heavy-ball SGD ended in from every start, one panel per
  (momentum, learning rate).

Every function takes numpy arrays and dicts, never a surface object, so the report can
re-draw a run from its files alone.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from descentlab import files

__all__ = ["MARKERS", "contour_figure", "loss_figure", "lift_figure", "animate_paths", "path_colors", "frame_count",
           "drawable", "basin_figure", "BASIN_COLOURS"]

#: Colours of the basin map: the minima in order of their loss (deepest first), then unsettled, diverged.
BASIN_COLOURS = ("#1f4e9c", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948")
_UNSETTLED_COLOUR, _DIVERGED_COLOUR = "#bdbdbd", "#000000"

#: kind -> (marker, colour, label) used in every figure and the legend.
MARKERS: dict[str, tuple[str, str, str]] = {
    "local_min": ("o", "#2ca02c", "minimum"),
    "local_max": ("^", "#d62728", "maximum"),
    "saddle": ("X", "#ff7f0e", "saddle"),
    "flat": ("s", "#7f7f7f", "flat"),
}
_PLURAL = {"minimum": "minima", "maximum": "maxima", "saddle": "saddles", "flat": "flat points"}

Paths = Mapping[str, Mapping[str, np.ndarray]]  # optimizer -> {"x", "y", "loss"} arrays by step


#: Path colours: none is a marker colour (green, red, orange), none vanishes on the grey map.
PALETTE = ("#1f77b4", "#9467bd", "#e377c2", "#8c564b", "#17becf", "#000000", "#bcbd22", "#3f51b5",
           "#795548", "#00897b", "#c2185b", "#5d4037")


def path_colors(names: Sequence[str]) -> dict[str, str]:
    """One fixed colour per optimizer, in order."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _levels(z: np.ndarray) -> np.ndarray:
    # quantile levels follow the surface's own scale: Rosenbrock's valley and Rastrigin's
    # ripples both get lines where the eye needs them
    finite = z[np.isfinite(z)]
    return np.unique(np.quantile(finite, np.linspace(0.0, 1.0, 36)))


#: Values beyond this magnitude are not drawn: a diverged path (nesterov from far out reaches
#: 1e300) would otherwise overflow matplotlib's tick and path arithmetic.
DRAWABLE = 1e30


def drawable(values: Any) -> np.ndarray:
    """``values`` as floats, with non-finite and astronomically large ones as NaN (a gap in the line)."""
    values = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(values) & (np.abs(values) < DRAWABLE), values, np.nan)


def _draw_surface(ax, grid: Mapping[str, np.ndarray], points: Sequence[Mapping[str, Any]],
                  curves: Sequence[Mapping[str, Any]], window, fast: bool = False):
    """Draw the surface's filled contours, critical curves and points; returns the filled
    contours (for a colour bar), or None when ``fast`` draws an image instead."""
    levels = _levels(grid["z"])
    filled = None
    if fast:
        # an image with the same banded colours draws much faster than filled contours,
        # which matters when every GIF frame redraws the whole figure
        from matplotlib.colors import BoundaryNorm

        (x0, x1), (y0, y1) = (grid["x"].min(), grid["x"].max()), (grid["y"].min(), grid["y"].max())
        ax.imshow(grid["z"], origin="lower", extent=(x0, x1, y0, y1), cmap="Greys_r", alpha=0.3,
                  norm=BoundaryNorm(levels, 256), interpolation="nearest", aspect="auto")
        ax.contour(grid["x"], grid["y"], grid["z"], levels=levels[::3], colors="#6b6b6b", linewidths=0.4, alpha=0.7)
    else:
        filled = ax.contourf(grid["x"], grid["y"], grid["z"], levels=levels, cmap="Greys_r", alpha=0.3)
        ax.contour(grid["x"], grid["y"], grid["z"], levels=levels[::2], colors="#6b6b6b", linewidths=0.4, alpha=0.7)
    for curve in curves:
        marker, color, label = MARKERS.get(curve["kind"], MARKERS["flat"])
        xs, ys = np.asarray(curve["x"], dtype=float), np.asarray(curve["y"], dtype=float)  # None -> NaN breaks the line
        ax.plot(xs, ys, "--", color=color, lw=1.6, label=f"curve of {_PLURAL[label]} (degenerate)")
    seen: set[str] = set()
    for point in points:
        if not point.get("isolated", True):
            continue  # drawn as its curve
        marker, color, label = MARKERS.get(point["kind"], MARKERS["flat"])
        name = label + (" (degenerate)" if point["degenerate"] else "")
        ax.scatter([point["x"]], [point["y"]], marker=marker, s=80, zorder=5,
                   edgecolors=color if point["degenerate"] else "black",
                   facecolors="none" if point["degenerate"] else color, linewidths=1.6,
                   label=None if name in seen else name)
        seen.add(name)
    (x0, x1), (y0, y1) = window
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_aspect("equal" if (x1 - x0) / (y1 - y0) < 3 else "auto")
    return filled


def _colorbar(fig, ax, filled) -> None:
    """A horizontal colour bar of the loss under the map (the legend takes the right side); the
    levels are quantiles of the surface, so the ticks are few and rounded."""
    if filled is None:
        return
    bar = fig.colorbar(filled, ax=ax, orientation="horizontal", fraction=0.05, pad=0.1,
                       label="loss (bands: equal shares of the window's area)")
    levels = np.asarray(filled.levels)
    bar.set_ticks(levels[:: max(1, len(levels) // 6)], labels=[f"{v:.3g}" for v in levels[:: max(1, len(levels) // 6)]])
    bar.ax.tick_params(labelsize=7)


def contour_figure(grid: Mapping[str, np.ndarray], points: Sequence[Mapping[str, Any]],
                   curves: Sequence[Mapping[str, Any]], paths: Paths, window, title: str = ""):
    """Contour map with critical points (marker by kind; hollow = degenerate) and all paths."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6.8))
    filled = _draw_surface(ax, grid, points, curves, window)
    colors = path_colors(list(paths))
    for name, path in paths.items():
        x, y = drawable(path["x"]), drawable(path["y"])
        ax.plot(x, y, "-", color=colors[name], lw=1.8, label=name)
        ax.plot(x[-1:], y[-1:], "o", color=colors[name], ms=5, mec="black", mew=0.6)
    if paths:
        first = next(iter(paths.values()))
        ax.plot(first["x"][:1], first["y"][:1], "k*", ms=12, label="start")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    ax.set_title(title)
    _colorbar(fig, ax, filled)
    return fig


def loss_figure(paths: Paths, minimum: float | None):
    """Loss against step; with a known global minimum, the gap L − L* on a log axis."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colors = path_colors(list(paths))
    for name, path in paths.items():
        loss = drawable(path["loss"])
        steps = np.arange(len(loss))
        label = name + (" (diverged)" if np.isnan(loss[-1]) else "")
        if minimum is not None:
            ax.semilogy(steps, np.maximum(loss - minimum, 1e-16), color=colors[name], label=label)
        else:
            ax.plot(steps, loss, color=colors[name], label=label)
    if minimum is None:
        ax.set_yscale("symlog")
        ax.set_ylabel("loss")
    else:
        ax.set_ylabel(f"loss − global minimum ({minimum:.4g})")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return fig


def lift_figure(lift: Mapping[str, Any], grid: Mapping[str, np.ndarray], window):
    """Left: the 1-D slice through the saddle along the up-curving eigenvector (a minimum at
    t = 0) and along the down-curving one. Right: the same two lines on the 2-D map."""
    import matplotlib.pyplot as plt

    t = np.asarray(lift["t"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    left.plot(t, lift["loss_up"], color="#2ca02c", lw=2,
              label=f"along u₊ (λ = {lift['eigenvalues'][1]:.3g}): a minimum at t = 0")
    left.plot(t, lift["loss_down"], "--", color="#d62728", lw=1.5,
              label=f"along u₋ (λ = {lift['eigenvalues'][0]:.3g}): the way down")
    left.axvline(0.0, color="black", lw=0.6)
    left.set_xlabel("t")
    left.set_ylabel("L(p + t·u)")
    left.set_title("1-D slice: looks like a local minimum")
    left.legend(fontsize=8)
    _colorbar(fig, right, _draw_surface(right, grid, [], [], window))
    p = np.asarray(lift["point"])
    for key, color, style in (("up", "#2ca02c", "-"), ("down", "#d62728", "--")):
        u = np.asarray(lift[key])
        right.plot(p[0] + t * u[0], p[1] + t * u[1], style, color=color, lw=2)
    right.scatter([p[0]], [p[1]], marker=MARKERS["saddle"][0], s=110, color=MARKERS["saddle"][1],
                  edgecolors="black", zorder=5)
    right.set_title(f"2-D: a saddle at ({p[0]:.3g}, {p[1]:.3g})")
    fig.tight_layout()
    return fig


def frame_count(steps: int, every: int) -> int:
    """Frames of :func:`animate_paths`: steps 0, every, 2·every, … ≤ steps."""
    return steps // every + 1


def animate_paths(out: str | os.PathLike, grid: Mapping[str, np.ndarray], points: Sequence[Mapping[str, Any]],
                  curves: Sequence[Mapping[str, Any]], paths: Paths, window, *, every: int = 5,
                  fps: int = 12, title: str = "") -> int:
    """Write an animated GIF of the paths, one frame per ``every`` steps; returns the frame count.

    The GIF is rendered to a temporary file and moved into place atomically.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    steps = min(len(p["x"]) for p in paths.values()) - 1
    n_frames = frame_count(steps, every)
    # 800 x 560 pixels, the legend in 9 pt: readable at the size a page shows it
    fig, ax = plt.subplots(figsize=(8.0, 5.6), dpi=100)
    fig.subplots_adjust(left=0.08, right=0.72, bottom=0.1, top=0.92)
    _draw_surface(ax, grid, points, curves, window, fast=True)
    colors = path_colors(list(paths))
    for name in paths:
        ax.plot([], [], "-", color=colors[name], lw=1.8, label=name)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, frameon=False)
    ax.set_title(title)
    # Everything but the paths is drawn once and kept as a bitmap under a bare axes at the
    # same place: each frame then draws a few lines instead of the contours, ticks and legend.
    fig.canvas.draw()
    background = np.asarray(fig.canvas.buffer_rgba()).copy()
    position, xlim, ylim = ax.get_position(), ax.get_xlim(), ax.get_ylim()
    fig.clf()
    fig.figimage(background, 0, 0, origin="upper")
    ax = fig.add_axes(position, zorder=2)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_axis_off()
    coords = {name: (drawable(path["x"]), drawable(path["y"])) for name, path in paths.items()}
    lines = {name: ax.plot([], [], "-", color=colors[name], lw=1.8)[0] for name in paths}
    heads = {name: ax.plot([], [], "o", color=colors[name], ms=6, mec="black", mew=0.6)[0] for name in paths}
    # the step counter makes every frame different, so the GIF keeps all frames
    label = ax.text(0.02, 0.97, "", transform=ax.transAxes, va="top", fontsize=9,
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})

    def draw(frame: int):
        step = frame * every
        for name, (x, y) in coords.items():
            lines[name].set_data(x[: step + 1], y[: step + 1])
            heads[name].set_data(x[step: step + 1], y[step: step + 1])
        label.set_text(f"step {step}")
        return [*lines.values(), *heads.values(), label]

    animation = FuncAnimation(fig, draw, frames=n_frames, blit=False)
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "paths.gif"
        animation.save(target, writer=PillowWriter(fps=fps))
        files.write_bytes(out, target.read_bytes())
    plt.close(fig)
    return n_frames


def basin_figure(ends: np.ndarray, xs: np.ndarray, ys: np.ndarray, lrs: Sequence[float], momenta: Sequence[float],
                 minima: Sequence[Sequence[float]], losses: Sequence[float], start: Sequence[float] | None = None):
    """One panel per (momentum, learning rate): every start coloured by the minimum its run ended in
    (:data:`BASIN_COLOURS`, deepest minimum first; grey: still moving; black: diverged), the minima
    marked, and the paths' start as a star. ``ends`` is ``[momenta, lrs, ny, nx]`` of codes: the
    index of a minimum, -1 unsettled, -2 diverged."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    order = sorted(range(len(minima)), key=lambda k: losses[k])  # colour by depth, not by index
    colours = {k: BASIN_COLOURS[rank % len(BASIN_COLOURS)] for rank, k in enumerate(order)}
    codes = [-2, -1, *range(len(minima))]
    palette = ListedColormap([_DIVERGED_COLOUR, _UNSETTLED_COLOUR, *[colours[k] for k in range(len(minima))]])
    rows, cols = len(momenta), len(lrs)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 1.6, 1.9 * rows + 0.8), sharex=True, sharey=True,
                             squeeze=False)
    dx = (xs[-1] - xs[0]) / max(1, len(xs) - 1) / 2
    dy = (ys[-1] - ys[0]) / max(1, len(ys) - 1) / 2
    extent = (xs[0] - dx, xs[-1] + dx, ys[0] - dy, ys[-1] + dy)
    for i, beta in enumerate(momenta):
        for j, lr in enumerate(lrs):
            ax = axes[i][j]
            index = np.searchsorted(codes, ends[i, j])  # codes are sorted: -2, -1, 0, 1, ...
            ax.imshow(index, origin="lower", extent=extent, cmap=palette, vmin=-0.5, vmax=len(codes) - 0.5,
                      interpolation="nearest", aspect="auto")
            for k, (mx, my) in enumerate(minima):
                ax.plot(mx, my, "o", color="white", mec="black", ms=5)
            if start is not None:
                ax.plot(start[0], start[1], "*", color="white", mec="black", ms=10)
            if i == 0:
                ax.set_title(f"lr {lr:g}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"beta {beta:g}", fontsize=9)
    handles = [Patch(color=colours[k], label=f"minimum ({minima[k][0]:.3g}, {minima[k][1]:.3g}), loss {losses[k]:.3g}")
               for k in order]
    handles += [Patch(color=_UNSETTLED_COLOUR, label="still moving"), Patch(color=_DIVERGED_COLOUR, label="diverged")]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
