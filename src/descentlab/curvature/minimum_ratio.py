"""The minimum ratio: the fraction of Hessian eigenvalues that are positive.

A ratio of 1 means a local minimum (every direction curves up); below 1, a saddle with
(1 − ratio)·n directions of zero or negative curvature. Exact from the dense Hessian for
small models; for large ones estimated from the SLQ density (the weight of quadrature nodes
above the threshold, averaged over probes, with the standard error over probes and the
quadrature's Chebyshev-Markov-Stieltjes bracket, which also covers its bias).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from descentlab.curvature.density import mass_above, slq_nodes
from descentlab.curvature.linop import as_operator

__all__ = ["MinimumRatio", "minimum_ratio", "EXACT_LIMIT"]

#: ``method="auto"`` is exact up to this many parameters (dense Hessian + eigvalsh).
EXACT_LIMIT = 4_000


@dataclass(frozen=True)
class MinimumRatio:
    """The fraction of eigenvalues > ``tol``.

    Attributes:
        value: the fraction, in [0, 1].
        std_error: 0 when exact; otherwise the standard error over SLQ probes. It does not
            include the quadrature's own bias, which can be far larger when many eigenvalues
            sit near ``tol``: see ``lower`` and ``upper``.
        lower, upper: equal to ``value`` when exact; otherwise the Chebyshev-Markov-Stieltjes
            bracket of the quadrature (:class:`~descentlab.curvature.density.MassAbove`).
        exact: True when computed from all eigenvalues of the dense Hessian.
        tol: the threshold used (eigenvalues must exceed it to count as positive).
        n: the operator size.
        n_matvecs: operator products used.
    """

    value: float
    std_error: float
    lower: float
    upper: float
    exact: bool
    tol: float
    n: int
    n_matvecs: int

    @property
    def method(self) -> str:
        return "exact" if self.exact else "estimated"


def minimum_ratio(
    op: Any,
    tol: float | None = None,
    method: str = "auto",
    *,
    n_steps: int = 100,
    n_probes: int = 16,
    seed: int = 0,
    exact_limit: int = EXACT_LIMIT,
) -> MinimumRatio:
    """Fraction of eigenvalues of ``op`` greater than ``tol``.

    Args:
        op: a :class:`~descentlab.curvature.HessianOperator`, a dense symmetric tensor, or
            anything with ``shape`` and ``@``.
        tol: threshold; ``None`` means ``n · ε · ||H||₂`` for the exact method (the usual
            numerical-rank tolerance, so round-off zeros do not count as positive) and
            ``1e-6 · ||H||₂`` (from the quadrature nodes) for the estimate.
        method: ``"exact"``, ``"estimated"``, or ``"auto"`` (exact when n <= ``exact_limit``).
        n_steps, n_probes, seed: SLQ settings for the estimate.
        exact_limit: largest n that ``"auto"`` computes exactly (default ``EXACT_LIMIT``).
    """
    if method not in ("auto", "exact", "estimated"):
        raise ValueError(f"method must be 'auto', 'exact' or 'estimated', got {method!r}")
    if tol is not None and not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    A = as_operator(op)
    exact = method == "exact" or (method == "auto" and A.n <= exact_limit)
    if exact:
        eig = torch.linalg.eigvalsh(A.dense())
        if tol is None:
            tol = A.n * torch.finfo(eig.dtype).eps * eig.abs().max().item()
        value = (eig > tol).double().mean().item()
        used = 0 if torch.is_tensor(A.op) else A.n  # dense() is n rows of the exact Hessian
        return MinimumRatio(value, 0.0, value, value, True, float(tol), A.n, used)
    nodes, weights, n_matvecs = slq_nodes(A, n_steps, n_probes, seed)
    if tol is None:
        tol = 1e-6 * nodes.abs().max().item()
    mass = mass_above(nodes, weights, tol)
    return MinimumRatio(mass.value, mass.std_error, mass.lower, mass.upper, False, float(tol), A.n, n_matvecs)
