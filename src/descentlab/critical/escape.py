"""Step out of a saddle along the direction of most negative curvature.

If u is a unit eigenvector of the Hessian with eigenvalue λ < 0 (the lecture's escape), then

    L(θ + t·s·u) ≈ L(θ) + t·s·gᵀu + ½ λ t²    (||u|| = 1),

and choosing the sign s so that s·gᵀu <= 0 (the gradient does not oppose the step) makes both
terms non-positive: the loss is predicted to fall by at least −½ λ t². :func:`escape` tries the
step length ``t = max_step`` and halves it (``shrink``) until the actual loss satisfies the
sufficient-decrease condition of a curvilinear backtracking search (Moré & Sorensen 1979, "On
the use of directions of negative curvature in a modified Newton method", Math. Programming 16):

    L(θ + t·s·u) <= L(θ) + σ (t·s·gᵀu + ½ λ t²)    and    L(θ + t·s·u) < L(θ),

with σ = ``sufficient_decrease``. A step is applied only when one is found: the loss never
rises; otherwise the model is left exactly as it was and the result says so. Parameters are
written under ``torch.no_grad()`` with ``copy_`` (never through ``.data``), to the values whose
loss the search measured, so ``loss_after`` is the loss of the model as it is left.

The step needs negative curvature, not a critical point: at a point that is not critical the
sign rule still makes the first-order term help, and the acceptance test still guards the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from descentlab.critical.classify import CriticalPoint, FlatLoss, classify
from descentlab.curvature.losses import read_batches
from descentlab.critical.rules import zero_mask
from descentlab.params import Layout, flatten

__all__ = ["Escape", "escape"]


@dataclass(frozen=True, eq=False, repr=False)
class Escape:
    """The outcome of :func:`escape`.

    Attributes:
        applied: a step was taken (the model's parameters changed).
        loss_before: the dataset-mean loss at the start.
        loss_after: the loss after the step (``loss_before`` when none was applied).
        step_size: the step length t of the applied step (0 when none).
        eigenvalue: λ, the most negative eigenvalue (``None`` when there was none to step along).
        predicted_decrease: −½ λ t² for the applied step (0 when none): the drop the
            second-order model predicts from the curvature alone.
        actual_decrease: ``loss_before − loss_after``.
        slope: s·gᵀu, the directional derivative along the step direction (<= 0 by the sign choice).
        n_evaluations: loss evaluations the line search made.
        reason: why it ended, in words.
        direction: the unit step direction s·u, flat over ``names`` (``None`` when none).
        names: the parameter names of the flat vectors.
    """

    applied: bool
    loss_before: float
    loss_after: float
    step_size: float
    eigenvalue: float | None
    predicted_decrease: float
    actual_decrease: float
    slope: float
    n_evaluations: int
    reason: str
    direction: torch.Tensor | None = field(default=None, repr=False)
    names: tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:
        lam = "n/a" if self.eigenvalue is None else f"{self.eigenvalue:.6g}"
        return (
            f"Escape(applied={self.applied}, loss_before={self.loss_before:.6g}, loss_after={self.loss_after:.6g}, "
            f"step_size={self.step_size:.4g}, eigenvalue={lam}, predicted_decrease={self.predicted_decrease:.4g}, "
            f"actual_decrease={self.actual_decrease:.4g}, n_evaluations={self.n_evaluations}, reason={self.reason!r})"
        )


def escape(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    data: Any,
    point: CriticalPoint | None = None,
    *,
    max_step: float = 1.0,
    shrink: float = 0.5,
    max_trials: int = 30,
    sufficient_decrease: float = 0.1,
    **classify_options: Any,
) -> Escape:
    """Step along the most negative curvature direction if that lowers the loss (see the module docstring).

    Args:
        model: the model; its parameters change only when a step is applied.
        loss_fn: ``loss_fn(output, target)``, the mean loss over a batch.
        data: one ``(X, y)`` pair or an iterable of ``(X, y)`` batches.
        point: :func:`~descentlab.critical.classify`'s result at the model's *current*
            parameters (``ValueError`` if they have changed since); ``None``: classify now.
        max_step: the first (largest) step length tried, in parameter units (> 0).
        shrink: factor in (0, 1) applied to the step length after a rejected trial.
        max_trials: most step lengths tried (>= 1); the smallest is ``max_step · shrink^(max_trials-1)``.
        sufficient_decrease: σ in [0, 1) of the acceptance test.
        classify_options: passed to :func:`~descentlab.critical.classify` when ``point`` is ``None``.

    Returns:
        :class:`Escape`. When the Hessian has no negative eigenvalue (beyond the point's
        ``eig_tol``: :func:`descentlab.critical.rules.zero_mask`), or no trial lowers the loss
        enough, nothing is applied (``applied=False``, ``reason`` says which).
    """
    if not (_is_number(max_step) and math.isfinite(max_step) and max_step > 0):
        raise ValueError(f"max_step must be a positive number, got {max_step!r}")
    if not (_is_number(shrink) and 0 < shrink < 1):
        raise ValueError(f"shrink must be in (0, 1), got {shrink!r}")
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"max_trials must be an integer >= 1, got {max_trials!r}")
    if not (_is_number(sufficient_decrease) and 0 <= sufficient_decrease < 1):
        raise ValueError(f"sufficient_decrease must be in [0, 1), got {sufficient_decrease!r}")
    if point is not None and not isinstance(point, CriticalPoint):
        raise ValueError(f"point must be a CriticalPoint from classify (or None), got {type(point).__name__}")

    batches = read_batches(loss_fn, data)
    if point is None:
        point = classify(model, loss_fn, batches, **classify_options)
    elif classify_options:
        raise ValueError(f"classify options ({', '.join(classify_options)}) are used only when point is None")

    named = dict(model.named_parameters())
    missing = [n for n in point.names if n not in named]
    if missing:
        raise ValueError(f"point: the model has no parameter {missing[0]!r}; classify this model first")
    theta = flatten(named, Layout.of({n: named[n] for n in point.names}))
    if point.parameters is None or theta.shape != point.parameters.shape or not torch.equal(theta, point.parameters):
        raise ValueError("point: it was classified at other parameter values; "
                         "classify the model again (or pass point=None)")

    objective = FlatLoss(model, loss_fn, batches, point.names)
    before = float(objective(theta))
    evaluations = 1
    values = point.eigenpairs.values.double()
    index = int(torch.argmin(values))
    lam = float(values[index])
    # the rule's zero test: an eigenvalue within eig_tol of zero is no curvature to escape along
    if not lam < 0 or bool(zero_mask(values, point.eig_tol)[index]):
        reason = f"no negative curvature (lambda_min = {lam:.3g}, zero within eig_tol = {point.eig_tol:g} or above)"
        return Escape(False, before, before, 0.0, None, 0.0, 0.0, 0.0, evaluations, reason, None, point.names)

    u = point.eigenpairs.vectors[:, index].to(theta.device, theta.dtype)
    u = u / u.norm()
    gradient = point.gradient.to(theta.device, theta.dtype)
    sign = -1.0 if float(torch.dot(gradient, u)) > 0 else 1.0  # s·gᵀu <= 0: the gradient does not oppose the step
    direction = sign * u
    slope = float(torch.dot(gradient, direction))

    t = float(max_step)
    for _ in range(max_trials):
        candidate = theta + t * direction
        after = float(objective(candidate))
        evaluations += 1
        model_change = t * slope + 0.5 * lam * t * t
        if math.isfinite(after) and after < before and after <= before + sufficient_decrease * model_change:
            with torch.no_grad():
                for name, value in objective.unflatten(candidate).items():
                    named[name].copy_(value)
            return Escape(True, before, after, t, lam, -0.5 * lam * t * t, before - after, slope, evaluations,
                          f"lowered the loss with step t = {t:.3g}", direction, point.names)
        t *= shrink
    return Escape(False, before, before, 0.0, lam, 0.0, 0.0, slope, evaluations,
                  f"no step in [{t / shrink:.3g}, {max_step:.3g}] lowered the loss enough; model unchanged",
                  direction, point.names)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
