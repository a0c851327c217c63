"""Whether the Hessian sees the curvature that a step of the loop's rate meets.

A loss with kinks (L1, hinge, a ReLU network's pieces under either) has a Hessian of ~0 between
them, so the rate test reads its largest stable rate as far above the run's. A ReLU MLP fitting
standardized diabetes targets under L1, SGD 0.05 momentum 0.9, creeps at 0.475: the Hessian along
the step is -0.009 and its largest stable rate 6.4, yet a rate 4x larger ends higher (0.536
against 0.419). The curvature a step meets is measured instead of modelled: over one plain step
δ = -lr ∇L the gradient's change, projected on δ, is the *secant* curvature

    (∇L(θ + δ) - ∇L(θ)) · δ / |δ|²,

the Hessian's along it the *tangent* one, δᵀHδ / |δ|². On a smooth loss the two agree at the rate
of a run that is stable (0.91-1.03x on the digits MLP under cross-entropy, 1.01x for squared
error, 1.04x for Huber, measured with ``torch.func``); crossing kinks adds curvature the Hessian
never has (L1: 2.2 against 0.10 at lr 0.2, 9.4 against -0.009 at lr 0.05). Two gradients and one
Hessian-vector product on the monitor's sample.
"""

from __future__ import annotations

from typing import Any

import torch

from descentlab.curvature import HessianOperator

__all__ = ["step_curvature"]


def step_curvature(operator: HessianOperator, lr: float) -> dict[str, Any] | None:
    """The secant and tangent curvature along one plain step ``-lr ∇L`` of ``operator``'s loss from
    its point (see the module docstring): ``{"secant", "tangent", "lr"}``; ``None`` where that step
    is zero (a rate or a gradient of 0) or a loss one step away is not finite."""
    _, gradient = operator.loss_and_gradient()
    delta = -float(lr) * gradient
    length_sq = float(delta @ delta)
    if not length_sq > 0:
        return None
    value, moved = operator.at(operator.point + delta).loss_and_gradient()
    if not (torch.isfinite(value) and torch.isfinite(moved).all()):
        return None
    secant = float((moved - gradient) @ delta) / length_sq
    tangent = float(operator.matvec(delta) @ delta) / length_sq
    return {"secant": secant, "tangent": tangent, "lr": float(lr)}
