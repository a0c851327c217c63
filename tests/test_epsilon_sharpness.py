"""Keskar et al.'s ε-sharpness against the maximum of a quadratic over a box, found by hand."""

import itertools

import numpy as np
import pytest
import torch

from descentlab.curvature import EmpiricalLoss
from descentlab.curvature.epsilon_sharpness import epsilon_sharpness


def _least_squares(X, y, theta):
    """½ mean (Xθ − y)² as a model and loss: a quadratic with Hessian XᵀX/n and gradient Xᵀ(Xθ − y)/n."""
    model = torch.nn.Linear(X.shape[1], 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(theta[None])
    loss = lambda out, target: 0.5 * ((out[:, 0] - target) ** 2).mean()  # noqa: E731
    return EmpiricalLoss(model, loss, (X, y))


def test_a_separable_quadratic_reaches_its_closed_form_maximum():
    # X = diag(sqrt(n h)): Hessian diag(h). Per coordinate the maximum of g δ + ½ h δ² over |δ| <= b
    # (h >= 0) is |g| b + ½ h b², at the corner sign(g) b; the box is b = ε (|θ| + 1).
    gen = torch.Generator().manual_seed(0)
    h = torch.tensor([0.3, 2.0, 7.5, 0.01, 40.0], dtype=torch.float64)
    n = len(h)
    X = torch.diag((n * h).sqrt())
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    theta = torch.randn(n, generator=gen, dtype=torch.float64) * 3
    epsilon = 1e-2
    b = epsilon * (theta.abs() + 1)
    g = X.T @ (X @ theta - y) / n
    loss = 0.5 * ((X @ theta - y) ** 2).mean()
    rise = float((g.abs() * b + 0.5 * h * b**2).sum())
    found = epsilon_sharpness(_least_squares(X, y, theta), epsilon)
    assert found.loss == pytest.approx(float(loss), rel=1e-12)
    assert found.rise == pytest.approx(rise, rel=1e-9)
    assert found.value == pytest.approx(100 * rise / (1 + float(loss)), rel=1e-9)
    # at the minimum (g = 0) the maximum is ½ Σ h b², which a search started at δ = 0 would miss
    optimum = torch.linalg.solve(X, y)
    b = epsilon * (optimum.abs() + 1)
    at_minimum = epsilon_sharpness(_least_squares(X, y, optimum), epsilon)
    assert at_minimum.rise == pytest.approx(float((0.5 * h * b**2).sum()), rel=1e-6)


def test_a_coupled_quadratic_is_bounded_by_the_best_corner():
    # A convex quadratic's maximum over a box is at one of its corners: enumerate all 2^6 as the
    # oracle. The search may stop below it (a lower bound, as in the paper), never above, and never
    # below the corner it starts from (the one the gradient points to).
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(12, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(12, generator=gen, dtype=torch.float64)
    theta = torch.randn(6, generator=gen, dtype=torch.float64)
    epsilon = 5e-2
    b = (epsilon * (theta.abs() + 1)).numpy()
    f = lambda t: 0.5 * float(((X @ torch.as_tensor(t) - y) ** 2).mean())  # noqa: E731
    base = f(theta.numpy())
    corners = [f(theta.numpy() + np.array(signs) * b) - base for signs in itertools.product((-1, 1), repeat=6)]
    g = (X.T @ (X @ theta - y) / 12).numpy()
    start = f(theta.numpy() + np.where(g < 0, -1.0, 1.0) * b) - base
    found = epsilon_sharpness(_least_squares(X, y, theta), epsilon, iterations=10)
    assert start - 1e-12 <= found.rise <= max(corners) + 1e-12
    assert found.rise == pytest.approx(max(corners), rel=1e-6)  # here the start's corner is the best one


def test_arguments_are_checked():
    X = torch.eye(2, dtype=torch.float64)
    quantity = _least_squares(X, torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="epsilon"):
        epsilon_sharpness(quantity, 0.0)
    with pytest.raises(ValueError, match="iterations"):
        epsilon_sharpness(quantity, 1e-3, iterations=0)
