"""The second-order model of the loss along a direction, from the curvature layer.

Around theta, along a direction d,

    L(theta + t d) ~ L(theta) + t g.d + 1/2 t^2 d^T H d,

with g and H the gradient and Hessian of the loss over the data. The slope ``g.d`` says
whether the line leaves theta downhill; the curvature ``d^T H d`` whether it bends up or down
(negative: a way down from a saddle, ``lambda`` itself for a unit eigenvector). A slice of
the true loss drawn over this parabola shows how far the quadratic picture holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from descentlab.curvature import HessianOperator

__all__ = ["QuadraticModel", "quadratic_model"]


@dataclass(frozen=True)
class QuadraticModel:
    """``q(t) = loss + slope t + 1/2 curvature t^2``: the loss along a direction to second order.

    Attributes:
        loss: ``L(theta)``.
        slope: ``g.d``.
        curvature: ``d^T H d``.
    """

    loss: float
    slope: float
    curvature: float

    def __call__(self, t: torch.Tensor | float) -> torch.Tensor | float:
        """``q(t)`` at one ``t`` or at each of a tensor of them."""
        return self.loss + self.slope * t + 0.5 * self.curvature * t * t


def quadratic_model(model: nn.Module, loss_fn: Callable, data, direction: torch.Tensor) -> QuadraticModel:
    """The loss, slope and curvature of the loss over ``data`` along ``direction`` (flat, over
    ``model``'s trainable parameters) at the model's current parameters: one gradient and one
    Hessian-vector product (:class:`~descentlab.curvature.HessianOperator`)."""
    op = HessianOperator(model, loss_fn, data)
    gradient = op.gradient()
    d = torch.as_tensor(direction).reshape(-1).to(gradient)
    if d.numel() != op.n_params:
        raise ValueError(f"direction: {d.numel()} values, the model has {op.n_params} parameters")
    return QuadraticModel(float(op.loss()), float(gradient @ d), float(d @ (op @ d)))
