"""Newton-type search for critical points of the loss over the data, from many starts at once.

Newton's method on ``grad F = 0`` has no preference for minima: from a nearby start it
converges quadratically to a non-degenerate critical point of *any* kind, which is why
Dauphin et al. (2014) used it to find the saddles of trained networks. The search here is a
trust-region Levenberg-Marquardt method on ``1/2 ||g||^2`` (Moré 1978; Nocedal & Wright 2006,
Algorithm 4.1): its Gauss-Newton model ``||g + H delta||^2`` has the exact Hessian ``H`` as
Jacobian, and its step is the Newton step ``-H^+ g`` whenever that fits in the trust region.

The objective is :class:`L2Objective`, ``F(theta) = L(theta) + weight_decay/2 ||theta||^2``,
where ``L`` is the loss over the data of an :class:`~descentlab.curvature.EmpiricalLoss`: its
batches, weighting, eval-mode policy and all-reduce, so the critical points found are those of
the same loss every other curvature quantity measures. Many points of one model (K networks of
the same architecture, as flat rows ``(K, P)``) move together: their gradients and exact
Hessians come from one ``vmap`` of ``torch.func.grad`` / ``jacrev(grad)`` over the rows, and
one batched ``torch.linalg.eigh`` per iteration gives every network's step. The Hessians are
dense: meant for small networks (a few thousand parameters at most).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
from torch.func import grad, jacrev, vmap

from descentlab.checks import check_int, check_number
from descentlab.curvature import EmpiricalLoss

__all__ = ["L2Objective", "NewtonSearch", "newton_to_critical"]

# Eigenvalues below this fraction of the largest |eigenvalue| are left out of H^+: a Newton
# step along an (exactly or numerically) flat direction would be 1/0.
_PINV_RTOL = 1e-10


class L2Objective:
    """``F(theta) = L(theta) + weight_decay/2 ||theta||^2`` of an :class:`~descentlab.curvature.EmpiricalLoss`,
    with its gradients and exact Hessians at many flat points at once.

    The L2 term is the one torch's ``weight_decay`` adds while training (its gradient
    ``weight_decay * theta``, its Hessian ``weight_decay * I``); it makes the critical points
    of small networks isolated where a hidden unit with zero outgoing weight would otherwise
    leave a flat family of them. ``weight_decay = 0`` is the plain loss.

    Args:
        risk: the loss over the data; its variables (``risk.names``) are the flat vector.
        weight_decay: the L2 coefficient, a finite number >= 0.
    """

    def __init__(self, risk: EmpiricalLoss, weight_decay: float = 0.0) -> None:
        if not isinstance(risk, EmpiricalLoss):
            raise ValueError(f"risk must be an EmpiricalLoss, got {type(risk).__name__}")
        self.risk = risk
        self.weight_decay = check_number("weight_decay", weight_decay)  # finite and >= 0

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """``F`` at one flat point, a 0-d tensor."""
        theta = torch.as_tensor(theta).to(self.risk.device, self.risk.dtype)
        return self.risk.loss(theta) + self._penalty(theta)

    def values(self, points: torch.Tensor) -> torch.Tensor:
        """``F`` at each row of ``points`` ``(K, P)``: ``(K,)``."""
        points = torch.as_tensor(points).to(self.risk.device, self.risk.dtype)
        return self.risk.losses(points) + self._penalty(points)

    def gradients(self, points: torch.Tensor) -> torch.Tensor:
        """``grad F`` at each row of ``points`` ``(K, P)``: ``(K, P)``."""
        with torch.no_grad():
            local = vmap(grad(self._local_loss))(points)
        return self.risk.allreduce(local) + self.weight_decay * points

    def hessians(self, points: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """The exact Hessian of ``F`` at each row of ``points`` ``(K, P)``: ``(K, P, P)``.

        ``chunk_size`` rows at a time (``None``: a size that bounds the memory of the
        ``P`` backward passes of every row, see :func:`_hessian_chunk`).
        """
        k, n_params = points.shape
        chunk = chunk_size or _hessian_chunk(n_params, self.risk.n_samples)
        with torch.no_grad():
            local = vmap(jacrev(grad(self._local_loss)), chunk_size=chunk)(points)
        eye = torch.eye(n_params, dtype=points.dtype, device=points.device)
        return self.risk.allreduce(local) + self.weight_decay * eye

    def _local_loss(self, theta: torch.Tensor) -> torch.Tensor:
        """This rank's share of ``L`` at one flat point, as a pure function of it (for ``torch.func``)."""
        parts = self.risk.split(theta)
        total = theta.new_zeros(())
        for X, y, w in self.risk.batches():
            total = total + w * self.risk.batch_loss(parts, X, y)
        return total

    def _penalty(self, theta: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.weight_decay * (theta * theta).sum(dim=-1)


@dataclass(frozen=True)
class NewtonSearch:
    """Where :func:`newton_to_critical` left K points.

    Attributes:
        theta: ``(K, P)`` final points.
        gradient: ``(K, P)`` ``grad F`` there.
        hessian: ``(K, P, P)`` the exact Hessian of ``F`` there (NaN for non-finite rows).
        steps: ``(K,)`` accepted steps.
    """

    theta: torch.Tensor
    gradient: torch.Tensor
    hessian: torch.Tensor
    steps: torch.Tensor

    def __repr__(self) -> str:
        norms = self.gradient.norm(dim=1)
        return (f"NewtonSearch({len(self.theta)} points of {self.theta.shape[1]} parameters, ||grad F|| in "
                f"[{float(norms.min()):.3g}, {float(norms.max()):.3g}], steps {self.steps.tolist()})")


def newton_to_critical(objective: L2Objective | EmpiricalLoss, starts: torch.Tensor, *, steps: int = 150,
                       radius: float = 0.1, grad_tol: float = 1e-8, progress: bool = False) -> NewtonSearch:
    """Newton-type iterations on ``grad F = 0`` from each row of ``starts`` at once, with exact Hessians.

    Args:
        objective: ``F``: an :class:`L2Objective`, or an :class:`~descentlab.curvature.EmpiricalLoss`
            (its plain loss).
        starts: ``(K, P)`` flat starting points (``(P,)``: one), over the objective's variables.
        steps: most iterations (all points together).
        radius: the initial trust radius, in parameter units.
        grad_tol: a point stops once ``||grad F|| <= grad_tol``.
        progress: a tqdm bar on stderr.

    Each point runs a trust-region Levenberg-Marquardt method on ``1/2 ||g||^2``:

    - the step solves ``min ||g + H delta||`` within ``||delta|| <= Delta``
      (:func:`_trust_region_steps`): the Newton step ``-H^+ g`` whenever it fits, so
      convergence near a non-degenerate critical point of *any* kind is quadratic;
    - ``rho`` = actual over predicted decrease of ``||g||^2``; the step is kept when
      ``rho > 0.1``; ``Delta`` is quartered when ``rho < 0.25`` and doubled when ``rho > 0.75``
      at the boundary (Nocedal & Wright 2006, Algorithm 4.1).

    A point stops at ``||g|| <= grad_tol``, after ``steps`` iterations, or when its radius
    falls below ``1e-12 (1 + ||theta||)`` (no step lowers ``||g||``: a gradient-flat region).
    Rows with non-finite values (a diverged training run) are left as they are.
    """
    if isinstance(objective, EmpiricalLoss):
        objective = L2Objective(objective)
    if not isinstance(objective, L2Objective):
        raise ValueError(f"objective must be an L2Objective or an EmpiricalLoss, got {type(objective).__name__}")
    check_int("steps", steps, low=0)
    radius = check_number("radius", radius, low=0.0, low_open=True)
    grad_tol = check_number("grad_tol", grad_tol)
    risk = objective.risk
    theta = torch.as_tensor(starts).detach().to(risk.device, risk.dtype).clone()
    if theta.dim() == 1:
        theta = theta.unsqueeze(0)
    if theta.dim() != 2 or theta.shape[1] != risk.n_params:
        raise ValueError(f"starts: expected shape (K, {risk.n_params}), got {tuple(torch.as_tensor(starts).shape)}")
    k, n_params = theta.shape
    g = objective.gradients(theta)
    finite = torch.isfinite(theta).all(dim=1) & torch.isfinite(g).all(dim=1)
    trust = torch.full((k,), radius, dtype=theta.dtype, device=theta.device)
    taken = torch.zeros(k, dtype=torch.long)
    bar = _bar(steps, "Newton on grad L = 0 (trust-region Levenberg-Marquardt, exact Hessians)", progress)
    for _ in range(steps):
        norms = g.norm(dim=1)
        rows = (finite & (norms > grad_tol) & (trust > 1e-12 * (1 + theta.norm(dim=1)))).nonzero().squeeze(1)
        bar.update(1)
        if not len(rows):
            break
        values, vectors = torch.linalg.eigh(objective.hessians(theta[rows]))
        step, predicted = _trust_region_steps(values, vectors, g[rows], trust[rows])
        trial = objective.gradients(theta[rows] + step)
        old = norms[rows] ** 2
        actual = old - (trial * trial).sum(dim=1)
        rho = torch.nan_to_num(actual / (old - predicted**2).clamp_min(1e-300), nan=-1.0)
        accept = rho > 0.1
        theta[rows[accept]] += step[accept]
        g[rows[accept]] = trial[accept]
        taken[rows[accept].cpu()] += 1
        boundary = step.norm(dim=1) >= 0.99 * trust[rows]
        trust[rows] = torch.where(rho < 0.25, trust[rows] / 4,
                                  torch.where((rho > 0.75) & boundary, trust[rows] * 2, trust[rows]))
    bar.close()
    H = torch.full((k, n_params, n_params), math.nan, dtype=theta.dtype, device=theta.device)
    ok = finite.nonzero().squeeze(1)
    if len(ok):
        H[ok] = objective.hessians(theta[ok])
    return NewtonSearch(theta=theta, gradient=g, hessian=H, steps=taken)


def _trust_region_steps(values: torch.Tensor, vectors: torch.Tensor, g: torch.Tensor,
                        radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``min ||g + H delta||`` subject to ``||delta|| <= radius`` for a batch, from ``H = Q diag(lam) Q^T``.

    The solution is the Levenberg-Marquardt step ``delta(mu) = -(H^2 + mu I)^{-1} H g``
    (Moré 1978) with ``mu = 0`` -- the Newton step ``-H^+ g`` -- when that fits in the radius,
    else the ``mu`` at which ``||delta(mu)|| = radius`` (bisection on ``log mu``: the length
    falls as ``mu`` grows). Returns the steps ``(K, P)`` and the model's ``||g + H delta||`` ``(K,)``.
    """
    coefficients = (vectors.transpose(1, 2) @ g.unsqueeze(-1)).squeeze(-1)
    keep = values.abs() > _PINV_RTOL * values.abs().amax(dim=1, keepdim=True)
    squares = values * values

    def along(mu: torch.Tensor) -> torch.Tensor:  # delta in the eigenbasis, for mu (K,) >= 0
        denominator = torch.where(keep, squares + mu.unsqueeze(1), torch.ones_like(squares))
        return torch.where(keep, -values / denominator * coefficients, torch.zeros_like(coefficients))

    mu = torch.zeros_like(radius)
    too_long = along(mu).norm(dim=1) > radius
    if too_long.any():
        scale = squares.amax(dim=1).clamp_min(1e-300)
        low, high = torch.log(scale * 1e-30), torch.log(scale * 1e30)
        for _ in range(100):  # 60 orders of magnitude to a relative 1e-12 of log mu
            middle = 0.5 * (low + high)
            longer = along(torch.exp(middle)).norm(dim=1) > radius
            low, high = torch.where(longer, middle, low), torch.where(longer, high, middle)
        mu = torch.where(too_long, torch.exp(high), mu)
    step = along(mu)
    residual = torch.where(keep, coefficients + values * step, coefficients).norm(dim=1)
    return (vectors @ step.unsqueeze(-1)).squeeze(-1), residual


def _hessian_chunk(n_params: int, n_samples: int) -> int:
    """Rows per vmapped ``jacrev(grad)``: it holds about ``rows * P * N`` activations per unit.

    ``rows * P * N`` is kept at most 5e4 (with at least one row): larger chunks spend more time in
    the kernel, page-faulting huge temporaries, than they save in calls (the timings on moons
    are in ``bench/RESULTS.md``).
    """
    return max(1, int(5e4 // max(1, n_params * n_samples)))


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not enabled, leave=False)
