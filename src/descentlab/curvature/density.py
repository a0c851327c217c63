"""Spectral density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

For a random unit probe v, m Lanczos steps give a tridiagonal T = U diag(θ) Uᵀ; the Gauss
quadrature nodes θ_i with weights τ_i = U_{1i}² satisfy vᵀ f(H) v ≈ Σ τ_i f(θ_i), and
E[vᵀ f(H) v] = (1/n) tr f(H) = ∫ f dμ, where μ is the spectral measure (1/n) Σ δ_{λ_j}. So
the average over probes of Σ τ_i δ_{θ_i} estimates μ (Lin, Saad & Yang 2016, "Approximating
spectral densities of large matrices", SIAM Review 58(1); Ghorbani, Krishnan & Xiao 2019).

All probes run together: every step is one batched product ``op @ V`` of ``n_probes`` columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from descentlab.curvature.linop import as_operator

__all__ = ["Density", "MassAbove", "mass_above", "spectral_density", "slq_nodes"]


@dataclass(frozen=True)
class MassAbove:
    """An SLQ estimate of the fraction of eigenvalues above a threshold.

    Attributes:
        value: the quadrature weight of nodes above the threshold, averaged over probes.
        std_error: the standard error of that average over probes (the sampling error).
        lower, upper: the Chebyshev-Markov-Stieltjes bracket, averaged over probes: for each
            probe's Gauss rule, the true mass above ``t`` lies between the weight of the nodes
            above ``t`` without the first of them, and that weight plus the last node at or
            below ``t``. It bounds the quadrature's own bias, which the standard error does
            not see, and is wide when many eigenvalues sit near the threshold.
    """

    value: float
    std_error: float
    lower: float
    upper: float


def mass_above(nodes: torch.Tensor, weights: torch.Tensor, threshold: float) -> MassAbove:
    """Fraction of eigenvalues > ``threshold`` from SLQ nodes and weights (one row per probe)."""
    order = nodes.argsort(dim=1)
    nodes, weights = nodes.gather(1, order).double(), weights.gather(1, order).double()
    above = nodes > threshold
    per_probe = (weights * above).sum(dim=1)
    # rows are sorted, so "above" is False...False True...True: find the two nodes beside t
    n_below = (~above).sum(dim=1)
    columns = torch.arange(nodes.shape[1], device=nodes.device)
    first_above = columns[None, :] == n_below[:, None]
    last_below = columns[None, :] == (n_below[:, None] - 1)
    lower = per_probe - (weights * first_above).sum(dim=1)
    upper = per_probe + (weights * last_below).sum(dim=1)
    n_probes = nodes.shape[0]
    se = per_probe.std(unbiased=True).item() / math.sqrt(n_probes) if n_probes > 1 else math.nan
    return MassAbove(per_probe.mean().item(), se, lower.clamp(min=0).mean().item(), upper.clamp(max=1).mean().item())


@dataclass(frozen=True, eq=False, repr=False)
class Density:
    """An SLQ estimate of the eigenvalue distribution.

    Attributes:
        nodes: ``(n_probes, m)`` Ritz values (quadrature nodes) of each probe.
        weights: ``(n_probes, m)`` their weights; each row sums to 1.
        grid: ``(n_grid,)`` points where the smoothed density is evaluated.
        values: ``(n_grid,)`` the density, Σ over probes and nodes of weight · N(grid; node,
            sigma²), divided by ``n_probes``; it integrates to 1 over the grid.
        sigma: width of the Gaussian smoothing.
        n_matvecs: operator products used.

    To draw it: ``descentlab.report.spectrum_plot.plot_density(density)`` (plotting lives in
    the report layer).
    """

    nodes: torch.Tensor
    weights: torch.Tensor
    grid: torch.Tensor
    values: torch.Tensor
    sigma: float
    n_matvecs: int

    @property
    def n_probes(self) -> int:
        return int(self.nodes.shape[0])

    def mass_above(self, threshold: float) -> MassAbove:
        """Estimated fraction of eigenvalues > ``threshold``, with its error (see :func:`mass_above`)."""
        return mass_above(self.nodes, self.weights, threshold)

    def __repr__(self) -> str:
        lo, hi = self.nodes.min().item(), self.nodes.max().item()
        return (
            f"Density(n_probes={self.n_probes}, n_steps={self.nodes.shape[1]}, "
            f"support=[{lo:.4g}, {hi:.4g}], sigma={self.sigma:.3g}, n_matvecs={self.n_matvecs})"
        )


def slq_nodes(op: Any, n_steps: int, n_probes: int, seed: int = 0):
    """Quadrature nodes and weights of ``n_probes`` Rademacher probes after ``n_steps`` Lanczos
    steps each (full re-orthogonalisation, all probes in one batched product per step).

    Returns ``(nodes, weights, n_matvecs)`` with ``nodes``/``weights`` of shape
    ``(n_probes, m)``, m = min(n_steps, n).
    """
    A = as_operator(op)
    n, dtype, device = A.n, A.dtype, A.device
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    if not isinstance(n_probes, int) or n_probes < 1:
        raise ValueError(f"n_probes must be a positive integer, got {n_probes!r}")
    m = min(n_steps, n)
    gen = torch.Generator().manual_seed(int(seed))
    Z = (torch.randint(0, 2, (n, n_probes), generator=gen) * 2 - 1).to(device, dtype)
    Q = torch.zeros(n_probes, m, n, dtype=dtype, device=device)  # one basis per probe
    alpha = torch.zeros(n_probes, m, dtype=dtype, device=device)
    beta = torch.zeros(n_probes, m, dtype=dtype, device=device)
    q = (Z / Z.norm(dim=0)).T  # (p, n)
    alive = torch.ones(n_probes, dtype=torch.bool, device=device)
    start = A.n_matvecs
    steps = m
    eps = torch.finfo(dtype).eps
    for j in range(m):
        Q[:, j] = q
        w = (A @ q.T).T  # (p, n), one batched product
        alpha[:, j] = (w * q).sum(dim=1)
        # full re-orthogonalisation against every earlier basis vector of the same probe, twice
        for _ in range(2):
            w = w - torch.einsum("pj,pjn->pn", torch.einsum("pjn,pn->pj", Q[:, : j + 1], w), Q[:, : j + 1])
        b = w.norm(dim=1)
        if j + 1 == m:
            break
        scale = alpha[:, : j + 1].abs().max(dim=1).values.clamp_min(1e-300)
        alive = alive & (b > 1e3 * eps * scale)
        if not alive.any():
            steps = j + 1
            break
        beta[:, j] = torch.where(alive, b, torch.zeros_like(b))
        q = torch.where(alive[:, None], w / b.clamp_min(1e-300)[:, None], torch.zeros_like(w))
    # a probe whose Krylov space closed early has zero couplings: its T splits into blocks,
    # and the block holding e_1 carries all the weight, which is what the quadrature needs
    alpha, beta = alpha[:, :steps], beta[:, : steps - 1]
    T = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    nodes, U = torch.linalg.eigh(T)
    weights = U[:, 0, :] ** 2
    return nodes, weights, A.n_matvecs - start


def spectral_density(
    op: Any,
    n_steps: int = 100,
    n_probes: int = 8,
    seed: int = 0,
    *,
    sigma: float | None = None,
    n_grid: int = 1000,
) -> Density:
    """Stochastic Lanczos quadrature estimate of the eigenvalue density of ``op``.

    Args:
        op: a :class:`~descentlab.curvature.HessianOperator`, a dense symmetric tensor, or
            anything with ``shape`` and ``@``.
        n_steps: Lanczos steps per probe (capped at n; products = n_steps · n_probes).
        n_probes: independent Rademacher probes.
        seed: seeds the probes.
        sigma: Gaussian smoothing width (default 1% of the node range).
        n_grid: grid points; the grid covers the nodes plus 5 sigma on each side.

    Returns:
        :class:`Density`.
    """
    if not isinstance(n_grid, int) or n_grid < 2:
        raise ValueError(f"n_grid must be an integer >= 2, got {n_grid!r}")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    nodes, weights, n_matvecs = slq_nodes(op, n_steps, n_probes, seed)
    lo, hi = nodes.min().item(), nodes.max().item()
    width = hi - lo
    if sigma is None:
        sigma = 0.01 * width if width > 0 else max(abs(hi), 1.0) * 1e-3
    grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, n_grid, dtype=nodes.dtype, device=nodes.device)
    diff = (grid[:, None, None] - nodes[None]) / sigma
    kernel = torch.exp(-0.5 * diff**2) / (sigma * math.sqrt(2 * math.pi))
    values = (kernel * weights[None]).sum(dim=(1, 2)) / nodes.shape[0]
    return Density(nodes, weights, grid, values, float(sigma), n_matvecs)
