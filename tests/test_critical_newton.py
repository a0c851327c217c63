"""The Newton search on the data layer: closed-form critical points, torch.func oracles, data-layer rules.

Oracles: a quadratic loss, whose critical point ``(A + lambda I)^-1 b`` and Hessian ``A + lambda I``
are closed forms (``torch.linalg.solve``); and a small network's loss written out by hand on all
the data at once, differentiated by ``torch.func.grad`` / ``torch.func.hessian``.
"""

import math

import pytest
import torch
from torch import nn
from torch.func import grad, hessian

from helpers import matrix_with_spectrum

from descentlab.critical.newton import L2Objective, newton_to_critical
from descentlab.curvature import EmpiricalLoss
from descentlab.errors import AdviceWarning

D = torch.float64


class Quadratic(nn.Module):
    """L(theta) = 1/2 theta^T A theta - b^T theta, whatever the data (the output is the loss)."""

    def __init__(self, A, b):
        super().__init__()
        self.register_buffer("A", A)
        self.register_buffer("b", b)
        self.theta = nn.Parameter(torch.zeros(len(b), dtype=D))

    def forward(self, x):
        return (0.5 * self.theta @ self.A @ self.theta - self.b @ self.theta).expand(x.shape[0])


def mean_output(output, target):
    return output.mean()


DATA = (torch.zeros(2, 1, dtype=D), torch.zeros(2, 1, dtype=D))
A = matrix_with_spectrum([-3.0, -0.5, 0.25, 1.0, 4.0], seed=1)  # indefinite: the critical point is a saddle
B = torch.tensor([1.0, -2.0, 0.5, 0.3, -1.0], dtype=D)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_one_newton_step_lands_on_the_quadratics_critical_point(weight_decay):
    # F = 1/2 theta^T (A + wd I) theta - b^T theta: grad F = 0 at (A + wd I)^-1 b, of any kind, and
    # the Newton step from anywhere within the trust radius lands there at once
    objective = L2Objective(EmpiricalLoss(Quadratic(A, B), mean_output, DATA), weight_decay)
    H = A + weight_decay * torch.eye(5, dtype=D)
    critical = torch.linalg.solve(H, B)
    starts = torch.stack([torch.zeros(5, dtype=D), torch.ones(5, dtype=D), critical + 0.3])
    search = newton_to_critical(objective, starts, radius=100.0, grad_tol=1e-10)
    assert search.steps.tolist() == [1, 1, 1]
    scale = float(torch.linalg.cond(H))  # the solve's relative error is about cond(H) * eps
    torch.testing.assert_close(search.theta, critical.expand(3, 5), rtol=0, atol=10 * scale * 2**-52)
    torch.testing.assert_close(search.hessian, H.expand(3, 5, 5), rtol=0, atol=1e-14)
    torch.testing.assert_close(search.gradient, search.theta @ H.T - B, rtol=0, atol=1e-13)


def test_from_far_the_trust_region_still_reaches_the_critical_point():
    objective = L2Objective(EmpiricalLoss(Quadratic(A, B), mean_output, DATA))
    critical = torch.linalg.solve(A, B)
    far = critical + torch.tensor([[20.0, -15.0, 10.0, 5.0, -30.0]], dtype=D)
    search = newton_to_critical(objective, far, radius=0.1, grad_tol=1e-10)
    assert 1 < int(search.steps[0]) < 150  # many bounded steps, not one
    torch.testing.assert_close(search.theta[0], critical, rtol=0, atol=1e-9)


def test_a_non_finite_start_is_left_as_it_is():
    objective = L2Objective(EmpiricalLoss(Quadratic(A, B), mean_output, DATA))
    starts = torch.stack([torch.zeros(5, dtype=D), torch.full((5,), math.nan, dtype=D)])
    search = newton_to_critical(objective, starts, radius=100.0)
    assert search.steps.tolist() == [1, 0]
    assert torch.isnan(search.theta[1]).all() and torch.isnan(search.hessian[1]).all()


def _net():
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.5), nn.Linear(4, 2)).double()


def _written_out(X, y, weight_decay):
    """F on all the data at once, dropout off (the data layer's eval-mode rule), by hand."""

    def F(flat):
        W1, b1, W2, b2 = torch.split(flat, [12, 4, 8, 2])
        logits = torch.tanh(X @ W1.reshape(4, 3).T + b1) @ W2.reshape(2, 4).T + b2
        return nn.functional.cross_entropy(logits, y) + 0.5 * weight_decay * flat.dot(flat)

    return F


def test_gradients_and_hessians_follow_the_data_layer_over_unequal_batches():
    # two batches of 3 and 7 samples, weighted 3/10 and 7/10 by the data layer: the same as all
    # ten samples in one batch; dropout in training mode is evaluated in eval mode (with a warning)
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(10, 3, generator=gen, dtype=D), torch.randint(0, 2, (10,), generator=gen)
    model = _net().train()
    with pytest.warns(AdviceWarning, match="Dropout"):
        risk = EmpiricalLoss(model, nn.functional.cross_entropy, [(X[:3], y[:3]), (X[3:], y[3:])])
    objective = L2Objective(risk, 0.05)
    F = _written_out(X, y, 0.05)
    points = 0.7 * torch.randn(3, 26, generator=gen, dtype=D)
    # the same float64 sums in another order and grouping: agree to a few ulps of O(1) terms
    torch.testing.assert_close(objective.values(points), torch.stack([F(p) for p in points]), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(objective.gradients(points), torch.stack([grad(F)(p) for p in points]),
                               rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(objective.hessians(points), torch.stack([hessian(F)(p) for p in points]),
                               rtol=1e-12, atol=1e-13)
    assert float(objective(points[1])) == pytest.approx(float(F(points[1])), rel=1e-13)
    assert model[2].training  # the model's own mode is left as it was


def test_the_search_reaches_a_true_critical_point_of_the_written_out_loss():
    gen = torch.Generator().manual_seed(1)
    X, y = torch.randn(12, 3, generator=gen, dtype=D), torch.randint(0, 2, (12,), generator=gen)
    model = _net().eval()
    objective = L2Objective(EmpiricalLoss(model, nn.functional.cross_entropy, (X, y)), 0.1)
    F = _written_out(X, y, 0.1)
    start = 0.5 * torch.randn(2, 26, generator=gen, dtype=D)
    search = newton_to_critical(objective, start, grad_tol=1e-10)
    for theta, H in zip(search.theta, search.hessian):
        # oracle: torch.func on the written-out loss at the point found
        assert float(grad(F)(theta).norm()) <= 1e-10 + 1e-14
        torch.testing.assert_close(H, hessian(F)(theta), rtol=1e-12, atol=1e-13)
    assert (search.steps >= 1).all() and (search.gradient.norm(dim=1) <= 1e-10).all()


def test_bad_arguments_name_themselves():
    risk = EmpiricalLoss(Quadratic(A, B), mean_output, DATA)
    with pytest.raises(ValueError, match="weight_decay"):
        L2Objective(risk, math.inf)
    with pytest.raises(ValueError, match="steps"):
        newton_to_critical(risk, torch.zeros(5, dtype=D), steps=-1)
    with pytest.raises(ValueError, match="grad_tol"):
        newton_to_critical(risk, torch.zeros(5, dtype=D), grad_tol=math.nan)
    with pytest.raises(ValueError, match="objective"):
        newton_to_critical(lambda theta: theta.sum(), torch.zeros(5, dtype=D))
