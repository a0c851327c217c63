"""torch.optim's classes, as the registry hands them out, equal the textbook formulas.

Each oracle below is the formula from the course / the paper written out in numpy float64;
the optimizer under test runs on the same random least-squares problem for 100 steps.
"""

import math
import sys

import numpy as np
import pytest
import torch
from optim_rounding import tolerance

from descentlab.optim import make_optimizer

STEPS = 100
RNG = np.random.default_rng(1234)
A = RNG.normal(size=(12, 7)) / 3
B = RNG.normal(size=12)
THETA0 = RNG.normal(size=7)


def grad(theta):
    """Gradient of 0.5 * ||A theta - b||^2."""
    return A.T @ (A @ theta - B)


def run_torch(name, paths=("default", "loop"), **hp):
    """100 steps of the registry's optimizer on the problem, for each kernel path asked for."""
    out = {}
    for path in paths:
        extra = {} if path == "default" else {"foreach": False}
        p = torch.tensor(THETA0, dtype=torch.float64, requires_grad=True)
        opt = make_optimizer(name, [p], **hp, **extra)
        for _ in range(STEPS):
            p.grad = torch.from_numpy(grad(p.detach().numpy()))
            opt.step()
        out[path] = p.detach().numpy()
    return out


def sgd_momentum(lr, lam):
    # the lecture's form: m <- lambda m - eta g; theta <- theta + m
    theta, m = THETA0.copy(), np.zeros(7)
    for _ in range(STEPS):
        m = lam * m - lr * grad(theta)
        theta = theta + m
    return theta


def nesterov(lr, lam):
    # gradient at the look-ahead point theta + lambda m; torch's weights are that look-ahead point
    theta, m = THETA0.copy(), np.zeros(7)
    for _ in range(STEPS):
        m = lam * m - lr * grad(theta + lam * m)
        theta = theta + m
    return theta + lam * m


def adagrad(lr, eps):
    theta, cache = THETA0.copy(), np.zeros(7)
    for _ in range(STEPS):
        g = grad(theta)
        cache += g * g
        theta = theta - lr * g / (np.sqrt(cache) + eps)
    return theta


def rmsprop(lr, alpha, eps):
    theta, v = THETA0.copy(), np.zeros(7)
    for _ in range(STEPS):
        g = grad(theta)
        v = alpha * v + (1 - alpha) * g * g
        theta = theta - lr * g / (np.sqrt(v) + eps)
    return theta


def adadelta(lr, rho, eps):
    # Zeiler 2012, Algorithm 1 (times lr, which torch keeps at 1.0 by default)
    theta, eg2, edx2 = THETA0.copy(), np.zeros(7), np.zeros(7)
    for _ in range(STEPS):
        g = grad(theta)
        eg2 = rho * eg2 + (1 - rho) * g * g
        dx = -np.sqrt(edx2 + eps) / np.sqrt(eg2 + eps) * g
        edx2 = rho * edx2 + (1 - rho) * dx * dx
        theta = theta + lr * dx
    return theta


def adam(lr, b1, b2, eps, amsgrad=False, decoupled_wd=0.0):
    theta, m, v, vmax = THETA0.copy(), np.zeros(7), np.zeros(7), np.zeros(7)
    for t in range(1, STEPS + 1):
        g = grad(theta)
        theta = theta * (1 - lr * decoupled_wd)  # AdamW: shrink the weights, not the gradient
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)  # AMSGrad: keep the maximum of v (bias-corrected as Adam's v)
        m_hat = m / (1 - b1 ** t)
        v_hat = (vmax if amsgrad else v) / (1 - b2 ** t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


def nadam(lr, b1, b2, eps, psi=0.004):
    # Dozat 2016 with the momentum schedule mu_t = b1 (1 - 0.5 * 0.96^(t psi))
    theta, m, v, mu_prod = THETA0.copy(), np.zeros(7), np.zeros(7), 1.0
    for t in range(1, STEPS + 1):
        g = grad(theta)
        mu_t = b1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        mu_prod *= mu_t
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = mu_next * m / (1 - mu_prod * mu_next) + (1 - mu_t) * g / (1 - mu_prod)
        theta = theta - lr * m_hat / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return theta


def radam(lr, b1, b2, eps):
    # Liu et al. 2020, Algorithm 2 (eps added to sqrt(v) as torch does)
    theta, m, v = THETA0.copy(), np.zeros(7), np.zeros(7)
    rho_inf = 2 / (1 - b2) - 1
    for t in range(1, STEPS + 1):
        g = grad(theta)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        rho_t = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        if rho_t > 5:
            adaptive = math.sqrt(1 - b2 ** t) / (np.sqrt(v) + eps)
            r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            theta = theta - lr * m_hat * r * adaptive
        else:
            theta = theta - lr * m_hat
    return theta


CASES = [
    ("momentum", dict(lr=0.05, momentum=0.9), lambda: sgd_momentum(0.05, 0.9)),
    ("nesterov", dict(lr=0.05, momentum=0.8), lambda: nesterov(0.05, 0.8)),
    ("sgd", dict(lr=0.1), lambda: sgd_momentum(0.1, 0.0)),
    ("adagrad", dict(lr=0.3, eps=1e-10), lambda: adagrad(0.3, 1e-10)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-8), lambda: rmsprop(0.01, 0.9, 1e-8)),
    ("adadelta", dict(lr=1.0, rho=0.9, eps=1e-6), lambda: adadelta(1.0, 0.9, 1e-6)),
    ("adam", dict(lr=0.02, betas=(0.9, 0.99), eps=1e-8), lambda: adam(0.02, 0.9, 0.99, 1e-8)),
    ("amsgrad", dict(lr=0.02, betas=(0.9, 0.99), eps=1e-8), lambda: adam(0.02, 0.9, 0.99, 1e-8, amsgrad=True)),
    ("adamw", dict(lr=0.02, weight_decay=0.1), lambda: adam(0.02, 0.9, 0.999, 1e-8, decoupled_wd=0.1)),
    ("nadam", dict(lr=0.005), lambda: nadam(0.005, 0.9, 0.999, 1e-8)),
    ("radam", dict(lr=0.02), lambda: radam(0.02, 0.9, 0.999, 1e-8)),
]


@pytest.mark.parametrize("name, hp, oracle", CASES, ids=[c[0] for c in CASES])
def test_torch_class_equals_the_textbook_formula(name, hp, oracle):
    expected = oracle()
    assert not np.allclose(expected, THETA0, atol=1e-3)  # the run moved: the comparison means something
    tol = tolerance(oracle, sys.modules[__name__], STEPS)  # float64 rounding over the run: see optim_rounding
    if name == "nadam":
        # torch keeps NAdam's product of mu_t in float32, and that product scales every step:
        # float32's rounding (eps 1.2e-7, relative) bounds the relative error of the run.
        tol = max(tol, float(np.finfo(np.float32).eps))
    for path, theta in run_torch(name, **hp).items():
        np.testing.assert_allclose(theta, expected, rtol=tol, atol=tol, err_msg=f"{name} ({path} path)")


def test_registry_hands_out_the_fastest_path_and_torch_classes():
    p = [torch.zeros(3, requires_grad=True)]
    for name, cls, flag in [("adam", torch.optim.Adam, "fused"), ("adamw", torch.optim.AdamW, "fused"),
                            ("momentum", torch.optim.SGD, "fused"), ("adagrad", torch.optim.Adagrad, "fused"),
                            ("rmsprop", torch.optim.RMSprop, "foreach"), ("nadam", torch.optim.NAdam, "foreach"),
                            ("radam", torch.optim.RAdam, "foreach"), ("adadelta", torch.optim.Adadelta, "foreach")]:
        opt = make_optimizer(name, p)
        assert type(opt) is cls and opt.param_groups[0][flag] is True, name
    big = [torch.zeros(200_000, requires_grad=True)]  # few large CPU tensors: torch's for-loop path is faster
    assert make_optimizer("rmsprop", big).param_groups[0]["foreach"] is False
    assert make_optimizer("adam", big).param_groups[0]["fused"] is True
    # the caller's choice wins; complex params have no fused kernel and fall back
    assert make_optimizer("adam", p, foreach=False).param_groups[0]["fused"] in (None, False)
    assert make_optimizer("adam", [torch.zeros(3, dtype=torch.complex64, requires_grad=True)]).param_groups[0][
        "foreach"] is True


def test_registry_accepts_generators_groups_and_named_parameters():
    model = torch.nn.Linear(3, 2)
    for params in (model.parameters(), [{"params": model.weight}, {"params": [model.bias], "lr": 0.1}],
                   model.named_parameters()):
        opt = make_optimizer("adam", params)
        assert opt.param_groups[0]["fused"] is True
        assert sum(len(g["params"]) for g in opt.param_groups) == 2
