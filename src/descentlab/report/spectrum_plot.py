"""Figures of a Hessian spectrum: the SLQ density with Ritz values and extreme eigenvalues marked.

Every function returns a matplotlib ``Figure`` (the caller embeds or saves it); nothing here
computes curvature, it only draws what it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["plot_density", "plot_eigenvalues", "plot_layer_spectra"]


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


def _axes(ax: Any, figsize=(7.0, 4.0)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_density(
    density: Any,
    *,
    eigenvalues: Sequence[float] | Any = None,
    ax: Any = None,
    log: bool = True,
    title: str = "Hessian eigenvalue density (stochastic Lanczos quadrature)",
):
    """Draw a :class:`~descentlab.curvature.Density`: the smoothed curve, the quadrature nodes as
    ticks along the bottom (darker = heavier weight), and ``eigenvalues`` (e.g. extreme
    eigenvalues from ``lanczos``) as vertical dashed lines. Zero is marked, since its sign
    decides the kind of a critical point. Returns the Figure.
    """
    fig, ax = _axes(ax)
    grid, values = _numpy(density.grid), _numpy(density.values)
    floor = max(values.max() * 1e-8, 1e-12) if values.size else 1e-12
    ax.plot(grid, np.maximum(values, floor) if log else values, color="#2f7bd8", lw=1.6, label="density")
    if log:
        ax.set_yscale("log")
    nodes, weights = _numpy(density.nodes).ravel(), _numpy(density.weights).ravel()
    if nodes.size:
        alpha = 0.15 + 0.85 * weights / max(weights.max(), 1e-300)
        colors = np.zeros((nodes.size, 4))
        colors[:, 3] = np.clip(alpha, 0, 1)
        ax.scatter(nodes, np.full(nodes.size, 0.0), marker="|", s=80, c=colors, transform=ax.get_xaxis_transform(),
                   label="Ritz values (quadrature nodes)")
    if eigenvalues is not None:
        for i, lam in enumerate(_numpy(eigenvalues).ravel()):
            ax.axvline(lam, color="#d8452f", ls="--", lw=0.9, label="extreme eigenvalues" if i == 0 else None)
    ax.axvline(0.0, color="#555", lw=0.8, ls=":")
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")
    ax.set_title(title)
    # outside the axes, right: the largest eigenvalue's line runs along the right edge inside them
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def plot_eigenvalues(values: Sequence[float] | Any, *, ax: Any = None, title: str = "Extreme Hessian eigenvalues"):
    """Stem plot of eigenvalues sorted ascending, negative ones in red, positive in blue."""
    fig, ax = _axes(ax, figsize=(7.0, 3.2))
    vals = np.sort(_numpy(values).ravel())
    idx = np.arange(vals.size)
    colors = np.where(vals < 0, "#d8452f", "#2f7bd8")
    ax.vlines(idx, 0, vals, colors=colors, lw=2)
    ax.scatter(idx, vals, c=colors, s=18, zorder=3)
    ax.axhline(0.0, color="#555", lw=0.8)
    ax.set_xlabel("index (ascending)")
    ax.set_ylabel("λ")
    ax.set_title(title)
    return fig


def plot_layer_spectra(rows: Sequence[Any], *, title: str = "Hessian blocks of each parameter group"):
    """Two panels, one row per parameter group: its block's extreme eigenvalues as a bar from
    λ_min to λ_max (symmetric log scale, negative ends in red), and its minimum ratio.

    ``rows``: :class:`~descentlab.curvature.LayerSpectrum` objects or dicts with the keys
    ``group`` (or ``name``), ``min_eigenvalue``, ``max_eigenvalue`` and ``minimum_ratio``.
    """
    import matplotlib.pyplot as plt

    def get(row, key):
        return row[key] if isinstance(row, dict) else getattr(row, key)

    names = [str(row["group"] if isinstance(row, dict) else row.name) for row in rows]
    low = np.array([get(r, "min_eigenvalue") for r in rows], dtype=float)
    high = np.array([get(r, "max_eigenvalue") for r in rows], dtype=float)
    ratio = np.array([get(r, "minimum_ratio") for r in rows], dtype=float)
    y = np.arange(len(rows))[::-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 0.5 * len(rows) + 1.6), sharey=True,
                                      gridspec_kw={"width_ratios": [3, 1]})
    left.hlines(y, low, high, color="#9bb7e0", lw=6)
    left.scatter(low, y, c=np.where(low < 0, "#d8452f", "#2f7bd8"), zorder=3, s=28, label="λ_min")
    left.scatter(high, y, c="#2a9d4b", zorder=3, s=28, marker="s", label="λ_max")
    scale = max(np.abs(np.concatenate([low, high])).max(), 1e-300)
    left.set_xscale("symlog", linthresh=max(scale * 1e-4, 1e-12))
    left.axvline(0.0, color="#555", lw=0.8, ls=":")
    left.set_yticks(y, names)
    left.set_xlabel("eigenvalue of the group's Hessian block")
    left.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=8, frameon=False)
    right.barh(y, ratio, color="#2f7bd8", height=0.5)
    right.set_xlim(0, 1)
    right.set_xlabel("minimum ratio")
    for yi, r in zip(y, ratio):
        inside = r > 0.75  # no room right of the bar: write it on the bar's end, in white
        right.text(r - 0.03 if inside else r + 0.03, yi, f"{r:.3g}", va="center", fontsize=8,
                   ha="right" if inside else "left", color="white" if inside else "black")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
