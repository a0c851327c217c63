"""Stability limits against the iteration matrices' spectral radius and against torch's own
optimizers on a quadratic; the sharpness against the exact Hessian's eigenvalues."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.critical.stability import (
    adam_limit,
    heavy_ball_limit,
    nesterov_limit,
    sharpness,
    stability_rule,
)
from descentlab.curvature import HessianOperator


def _radius(matrix):
    return max(abs(np.linalg.eigvals(np.asarray(matrix, dtype=float))))


def _heavy_ball(a, beta, damp=0.0):
    # (theta, b) -> b' = beta b + (1 - damp) lam theta, theta' = theta - eta b'; a = eta lam
    return [[1 - a * (1 - damp), -beta], [a * (1 - damp), beta]]  # state (theta, eta b)


def _nesterov(a, beta):
    # torch: b' = beta b + lam theta; theta' = theta - eta (lam theta + beta b')
    return [[1 - a * (1 + beta), -beta * beta], [a, beta]]


@pytest.mark.parametrize("beta, damp", [(0.0, 0.0), (0.5, 0.0), (0.9, 0.0), (0.9, 0.1), (0.99, 0.0)])
def test_heavy_ball_limit_is_where_the_iteration_stops_contracting(beta, damp):
    limit = heavy_ball_limit(beta) / (1 - damp)  # the limit on eta * lam for dampening damp
    assert _radius(_heavy_ball(limit * 0.999, beta, damp)) < 1 < _radius(_heavy_ball(limit * 1.001, beta, damp))


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.99])
def test_nesterov_limit_is_where_the_iteration_stops_contracting(beta):
    limit = nesterov_limit(beta)
    assert _radius(_nesterov(limit * 0.999, beta)) < 1 < _radius(_nesterov(limit * 1.001, beta))


@pytest.mark.parametrize("beta1", [0.0, 0.5, 0.9])
def test_adam_limit_matches_its_frozen_preconditioner_recursion(beta1):
    # m' = beta1 m + (1 - beta1) g, theta' = theta - s m' (s the preconditioned step, bias correction done):
    # heavy ball whose gradient enters with 1 - beta1 (torch's dampening = beta1) on a = s * lam
    limit = adam_limit(beta1)
    below = _heavy_ball(limit * 0.999, beta1, beta1)
    above = _heavy_ball(limit * 1.001, beta1, beta1)
    assert _radius(below) < 1 < _radius(above)
    assert adam_limit(0.9) == pytest.approx(38.0)  # Cohen et al. 2022's 38/eta


def _quadratic():
    """A linear least-squares model: L = mean((Xw - y)^2), H = 2 X^T X / n exactly."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(64, 5, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 1.0, 1.0, 0.5, 0.2], dtype=torch.float64)
    y = torch.randn(64, 1, generator=gen, dtype=torch.float64)
    model = nn.Linear(5, 1, bias=False).double()
    H = 2 * X.T @ X / len(X)
    return model, X, y, H


@pytest.mark.parametrize("options", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True},
                                     {"momentum": 0.5, "dampening": 0.3}])
def test_sgd_sharpness_and_its_limit_decide_convergence_of_torchs_sgd(options):
    model, X, y, H = _quadratic()
    lam = float(torch.linalg.eigvalsh(H)[-1])
    rule = stability_rule(torch.optim.SGD(model.parameters(), lr=1.0, **options), model)
    op = HessianOperator(model, F.mse_loss, (X, y))
    value, _, converged = sharpness(rule, op, tol=1e-8)
    assert converged
    assert value == pytest.approx(1.0 * rule.scale * lam, rel=1e-6)  # Lanczos at 1e-8 against eigvalsh
    largest = rule.largest_stable_lr(value)
    optimum = torch.linalg.lstsq(X, y).solution.T
    for factor, converges in ((0.95, True), (1.05, False)):
        trial, _, _, _ = _quadratic()
        optimizer = torch.optim.SGD(trial.parameters(), lr=largest * factor, **options)
        start = float((trial.weight.detach() - optimum).norm())
        for _ in range(600):
            optimizer.zero_grad()
            F.mse_loss(trial(X), y).backward()
            optimizer.step()
        # along the top eigenvector the error contracts (or grows) by the iteration's spectral radius,
        # at 5 % from the limit at least ~1.004 per step: 600 steps separate the two by > 10x
        ratio = float((trial.weight.detach() - optimum).norm()) / start
        assert (ratio < 1) == converges, (options, factor, ratio)


def test_adam_preconditioned_sharpness_against_dense_eigenvalues():
    model, X, y, H = _quadratic()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.999))
    for _ in range(7):
        optimizer.zero_grad()
        F.mse_loss(model(X), y).backward()
        optimizer.step()
    rule = stability_rule(optimizer, model)
    assert rule.name == "adam" and rule.limit == pytest.approx(38.0)
    state = optimizer.state[model.weight]
    t = float(state["step"])
    d = (state["exp_avg_sq"] / (1 - 0.999 ** t)).sqrt().reshape(-1) + 1e-8
    steps = 0.01 / (1 - 0.9 ** t) / d
    oracle = float(torch.linalg.eigvalsh(steps.sqrt()[:, None] * H * steps.sqrt()[None, :])[-1])
    value, _, _ = sharpness(rule, HessianOperator(model, F.mse_loss, (X, y)), tol=1e-8)
    assert value == pytest.approx(oracle, rel=1e-6)


def test_wrappers_are_read_through_and_unknown_optimizers_get_the_gd_rule():
    from descentlab.optim import make_optimizer

    model, X, y, _ = _quadratic()
    rule = stability_rule(make_optimizer("lookahead:momentum", model.parameters(), lr=0.1), model)
    assert rule.name == "heavy-ball" and rule.limit == pytest.approx(3.8)
    adadelta = torch.optim.Adadelta(model.parameters(), lr=1.0)
    rule = stability_rule(adadelta, model)
    assert rule.name == "gd" and "Adadelta has no state yet" in rule.formula and rule.unmodelled is None
    rprop = torch.optim.Rprop(model.parameters())
    F.mse_loss(model(X), y).backward()
    rprop.step()
    rule = stability_rule(rprop, model)
    assert rule.name == "gd" and "Rprop is not modelled" in rule.formula and rule.unmodelled == "Rprop"
