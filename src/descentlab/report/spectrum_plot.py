"""Figures of a Hessian spectrum: the SLQ density with Ritz values and extreme eigenvalues marked.

Every function returns a matplotlib ``Figure`` (the caller embeds or saves it); nothing here
computes curvature, it only draws what it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["plot_density", "plot_eigenvalues"]


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
    ax.legend(loc="upper right", fontsize=8)
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
