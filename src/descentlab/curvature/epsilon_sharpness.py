"""Keskar et al.'s ε-sharpness: how far the loss can rise within a small box around θ.

Keskar, Mudigere, Nocedal, Smelyanskiy & Tang (ICLR 2017, "On large-batch training for deep
learning: generalization gap and sharp minima", Metric 2.1) measure the sharpness of a point θ
in the full space (A = I) as

    φ(θ, ε) = 100 · (max_{δ ∈ C_ε} L(θ + δ) − L(θ)) / (1 + L(θ)),
    C_ε = {δ : |δ_i| ≤ ε (|θ_i| + 1) for every i},

the largest relative rise of the loss in a box whose sides scale with the weights, in percent.
Like the paper, the maximum is found inexactly by a few iterations of L-BFGS-B (the paper
uses 10), here scipy's, on −L with the exact gradient. The search starts at the corner of the
box the gradient points to (δ_i = sign(g_i) · b_i): for a locally convex loss the maximum of
a quadratic over a box is at a corner, and this is the corner a first-order model picks, so a
point where the gradient is ~0 (a minimum) is not left at δ = 0, where L-BFGS-B would not move.
The found δ gives a lower bound on the maximum (exact for a separable quadratic); the result
is never below 0 (δ = 0 is in the box).

It sits beside λ_max (:func:`~descentlab.curvature.lanczos`): λ_max is the curvature of the
single steepest direction; ε-sharpness is the loss rise over a whole neighbourhood, which is
what Keskar et al. set against the batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from descentlab.curvature.empirical import EmpiricalLoss

__all__ = ["EpsilonSharpness", "epsilon_sharpness", "KESKAR_EPSILON"]

#: Keskar et al.'s box size (they report 1e-3 and 5e-4).
KESKAR_EPSILON = 1e-3


@dataclass(frozen=True)
class EpsilonSharpness:
    """One measurement.

    Attributes:
        value: φ(θ, ε) in percent: ``100 · rise / (1 + loss)``.
        rise: ``max L(θ + δ) − L(θ)`` found (≥ 0).
        loss: ``L(θ)``.
        epsilon: the box size ε.
        evaluations: loss-and-gradient passes over the data the search made.
    """

    value: float
    rise: float
    loss: float
    epsilon: float
    evaluations: int


def epsilon_sharpness(quantity: EmpiricalLoss, epsilon: float = KESKAR_EPSILON, *, iterations: int = 10
                      ) -> EpsilonSharpness:
    """Keskar et al.'s ε-sharpness of the loss ``quantity`` at its snapshot θ (see the module docstring).

    Args:
        quantity: the loss over the data at θ (an :class:`~descentlab.curvature.EmpiricalLoss`,
            e.g. ``EmpiricalLoss(model, loss_fn, (X, y))``).
        epsilon: the box size ε (> 0).
        iterations: L-BFGS-B iterations (>= 1; the paper uses 10).
    """
    import numpy as np
    from scipy.optimize import minimize

    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    theta = quantity.point.detach()
    half_width = (epsilon * (theta.abs() + 1)).double().cpu().numpy()
    evaluations = 0

    def negative(delta: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal evaluations
        evaluations += 1
        step = torch.as_tensor(delta, dtype=theta.dtype, device=theta.device)
        loss, gradient = quantity.at(theta + step).loss_and_gradient()
        return -float(loss), -gradient.double().cpu().numpy()

    base_loss, base_gradient = quantity.loss_and_gradient()
    base = float(base_loss)
    direction = np.where(base_gradient.double().cpu().numpy() < 0, -1.0, 1.0)
    found = minimize(negative, direction * half_width, jac=True, method="L-BFGS-B",
                     bounds=list(zip(-half_width, half_width)), options={"maxiter": iterations})
    evaluations += 1  # the pass at θ itself
    rise = max(0.0, -float(found.fun) - base)
    return EpsilonSharpness(value=100.0 * rise / (1.0 + base), rise=rise, loss=base, epsilon=float(epsilon),
                            evaluations=evaluations)
