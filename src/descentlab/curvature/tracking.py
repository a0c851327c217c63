"""One extreme eigenvalue of a slowly changing operator, measured again and again: Lanczos
warm-started from the last eigenvector (the Hessian along training).

A few optimizer steps apart the Hessian moves little, so its top eigenvector is nearly the
last one. Started there, Lanczos (:func:`~descentlab.curvature.lanczos`) meets its residual
tolerance after a few products, where a cold start from a random vector needs many more
(``bench/tracking.py`` counts them).

**Accuracy.** For a symmetric H and a unit vector y with Rayleigh quotient θ and residual
r = Hy − θy, some eigenvalue λ satisfies |λ − θ| <= ||r|| (Parlett, *The Symmetric Eigenvalue
Problem*, Thm 4.5.1); Lanczos stops when ||r|| <= ``tol`` · |θ|, so ``tol = 1e-2`` bounds the
relative error by 1 %. The bound is first order; the error is in fact about ||r||²/gap, well
inside it (``bench/tracking.py`` measures it against a cold Lanczos at tolerance 1e-6). What the residual cannot tell is *which* eigenvalue θ is near: if
another eigenvalue overtakes the tracked one (eigenvalues cross), a warm start near the old
eigenvector converges to the old eigenvalue. So every ``check_every``-th estimate starts from
the last vector plus a random one of equal weight: the Krylov space then holds every
direction again, and Lanczos finds the end of the spectrum whichever eigenvector now holds it.

**Within a time.** An estimate may be given ``seconds``: it stops before the next product would
pass them (after ``least`` products at any rate) and returns the Ritz value as it stands,
``converged=False`` with its residual: a Rayleigh quotient, so a bound from the inside of the
spectrum (below λ_max, above λ_min), and the next estimate goes on from its vector.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch

from descentlab.checks import check_choice, check_int, check_number
from descentlab.curvature.lanczos import Eigenpairs, lanczos

__all__ = ["EigenTracker"]


class EigenTracker:
    """The extreme eigenpair at one end of a sequence of nearby symmetric operators.

    Each call runs :func:`~descentlab.curvature.lanczos` (``k=1``) on the operator it is given,
    warm-started from the eigenvector the previous call found (the first call, and every
    ``check_every``-th, start cold or mixed: see the module docstring).

    Args:
        which: ``"LA"`` (the largest eigenvalue, λ_max) or ``"SA"`` (the smallest, λ_min).
        tol: relative residual at which an estimate stops (1e-2: within 1 % of an eigenvalue).
        max_matvecs: most products per estimate; an estimate that does not converge in them is
            returned with ``converged=False`` (no warning).
        check_every: every this many estimates, start from the last vector plus an equal random
            one (0: never).
        seed: seeds the random start vectors.

    Attributes:
        last: the last :class:`~descentlab.curvature.Eigenpairs` (``None`` before the first call).
        n_estimates, n_matvecs: estimates made and products spent so far.
    """

    def __init__(self, which: str = "LA", tol: float = 1e-2, max_matvecs: int = 200, check_every: int = 10,
                 seed: int = 0) -> None:
        self.which = check_choice("which", which, ("LA", "SA"))
        self.tol = check_number("tol", tol, low_open=True)
        self.max_matvecs = check_int("max_matvecs", max_matvecs)
        self.check_every = check_int("check_every", check_every, low=0)
        self.seed = int(seed)
        self.last: Eigenpairs | None = None
        self.n_estimates = 0
        self.n_matvecs = 0
        self._v0: torch.Tensor | None = None

    def __call__(self, op: Any, seconds: float | None = None, least: int = 2) -> Eigenpairs:
        """The eigenpair of ``op`` at this tracker's end of the spectrum (see the class docstring),
        within ``seconds`` if given (after ``least`` products: see the module docstring)."""
        v0 = self._start(op)
        stop = None
        if seconds is not None:
            began, done = time.perf_counter(), [0]

            def stop(values: torch.Tensor, residuals: torch.Tensor) -> bool:
                done[0] += 1  # asked after each product
                elapsed = time.perf_counter() - began
                return done[0] >= least and elapsed * (done[0] + 1) / done[0] > seconds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-convergence is reported by ``converged``
            pairs = lanczos(op, k=1, which=self.which, tol=self.tol, max_iter=self.max_matvecs, v0=v0,
                            seed=self.seed + self.n_estimates, stop=stop)
        self.n_estimates += 1
        self.n_matvecs += pairs.n_matvecs
        vector = pairs.vectors[:, 0]
        if torch.isfinite(vector).all() and vector.norm() > 0:
            self._v0 = vector.detach().clone()
        self.last = pairs
        return pairs

    def _start(self, op: Any) -> torch.Tensor | None:
        n = int(op.shape[0])
        if self._v0 is None or self._v0.shape != (n,):
            return None  # cold: lanczos draws a seeded random vector
        v0 = self._v0
        if self.check_every and self.n_estimates % self.check_every == 0:
            noise = torch.randn(n, generator=torch.Generator().manual_seed(self.seed + self.n_estimates),
                                dtype=torch.float64).to(v0)
            v0 = v0 / v0.norm() + noise / noise.norm()
        return v0

    def reset(self) -> None:
        """Forget the warm start (the operator changed kind, e.g. a new preconditioner)."""
        self._v0 = None

    def state_dict(self) -> dict[str, Any]:
        """The warm start and the counters (a resumed run continues with the same numbers)."""
        return {"v0": self._v0, "n_estimates": self.n_estimates, "n_matvecs": self.n_matvecs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self._v0 = state["v0"]
        self.n_estimates, self.n_matvecs = int(state["n_estimates"]), int(state["n_matvecs"])
