"""Trace of a symmetric operator from products only: Hutchinson and Hutch++.

* Hutchinson (1989): tr(A) = E[zᵀ A z] for Rademacher z; with m probes the variance is
  2 (||A||_F² − Σ_i A_ii²) / m, so the error shrinks like 1/√m.
* Hutch++ (Meyer, Musco, Musco & Woodruff 2021, "Hutch++: optimal stochastic trace
  estimation", SOSA): spend m/3 products on a sketch Q = orth(A S), take tr(Qᵀ A Q) exactly
  (m/3 products) and Hutchinson with m/3 probes on the deflated (I − QQᵀ) A (I − QQᵀ). For a
  matrix with decaying spectrum the error shrinks like 1/m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from descentlab.curvature.linop import as_operator

__all__ = ["TraceEstimate", "trace", "TRACE_METHODS"]

TRACE_METHODS = ("hutch++", "hutchinson", "exact")


@dataclass(frozen=True)
class TraceEstimate:
    """A trace estimate.

    Attributes:
        value: the estimate.
        std_error: its standard error from the spread of the random part (0 when exact).
        n_matvecs: operator products used.
        method: ``"hutch++"``, ``"hutchinson"`` or ``"exact"``.
    """

    value: float
    std_error: float
    n_matvecs: int
    method: str


def trace(op: Any, n_probes: int = 30, method: str = "hutch++", seed: int = 0) -> TraceEstimate:
    """Estimate tr(op) with ``n_probes`` products.

    Args:
        op: a :class:`~descentlab.curvature.HessianOperator`, a dense tensor, or anything
            with ``shape`` and ``@``.
        n_probes: total products (for ``"hutch++"``: a third sketch, a third for the sketch's
            exact part, a third Hutchinson probes; at least 3).
        method: ``"hutch++"`` (default), ``"hutchinson"``, or ``"exact"`` (n products with the
            identity, or the diagonal of a dense tensor).
        seed: seeds the Rademacher probes.
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"method must be one of {', '.join(TRACE_METHODS)}, got {method!r}")
    A = as_operator(op)
    n, dtype, device = A.n, A.dtype, A.device
    if method == "exact":
        if torch.is_tensor(A.op):
            return TraceEstimate(float(torch.diagonal(A.op).sum()), 0.0, 0, "exact")
        return TraceEstimate(float(torch.diagonal(A.dense()).sum()), 0.0, A.n_matvecs, "exact")
    minimum = 3 if method == "hutch++" else 1
    if not isinstance(n_probes, int) or n_probes < minimum:
        raise ValueError(f"n_probes must be an integer >= {minimum} for {method}, got {n_probes!r}")
    gen = torch.Generator().manual_seed(int(seed))

    def rademacher(cols: int) -> torch.Tensor:
        return (torch.randint(0, 2, (n, cols), generator=gen) * 2 - 1).to(device, dtype)

    if method == "hutchinson":
        Z = rademacher(n_probes)
        samples = (Z * (A @ Z)).sum(dim=0).double()
        return TraceEstimate(samples.mean().item(), _se(samples), A.n_matvecs, method)

    s = n_probes // 3
    Q, _ = torch.linalg.qr(A @ rademacher(s))
    exact_part = float(torch.trace(Q.T @ (A @ Q)))
    G = rademacher(n_probes - 2 * s)
    G = G - Q @ (Q.T @ G)  # Hutchinson on (I - QQᵀ) A (I - QQᵀ)
    samples = (G * (A @ G)).sum(dim=0).double()
    return TraceEstimate(exact_part + samples.mean().item(), _se(samples), A.n_matvecs, method)


def _se(samples: torch.Tensor) -> float:
    m = samples.numel()
    return samples.std(unbiased=True).item() / math.sqrt(m) if m > 1 else math.nan
