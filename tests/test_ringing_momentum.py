"""Momentum near 1 rings: its half-life against the iteration matrix and torch's SGD on a quadratic,
the verdict it gives, the ``lower-momentum`` remedy against torch's own optimizers, and a loop at
momentum 0.99 named and repaired (its loss against the same loop at 0.9)."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.critical.remedies import remedies_for
from descentlab.critical.stability import ring_half_life
from descentlab.critical.verdicts import RING_STEPS, decide, remedy, ringing
from descentlab.engine.changes import apply_change
from helpers import digits_mlp_loop


def _heavy_ball(a, beta, damp=0.0):
    # (theta, eta b) -> b' = beta b + (1 - damp) lam theta, theta' = theta - eta b'; a = eta lam
    return np.array([[1 - a * (1 - damp), -beta], [a * (1 - damp), beta]])


@pytest.mark.parametrize("beta, a", [(0.9, 0.5), (0.99, 0.01), (0.99, 2.0), (0.999, 1e-4), (0.999, 3.0)])
def test_a_ringing_iteration_contracts_by_the_root_of_its_momentum_whatever_the_rate(beta, a):
    assert (1 - beta ** 0.5) ** 2 < a < (1 + beta ** 0.5) ** 2  # the complex band
    radius = max(abs(np.linalg.eigvals(_heavy_ball(a, beta))))
    assert radius == pytest.approx(beta ** 0.5, rel=1e-12)
    # Adam with its preconditioner frozen is heavy ball with dampening beta1 on a: the same modulus
    assert max(abs(np.linalg.eigvals(_heavy_ball(a / (1 - beta), beta, beta)))) == pytest.approx(beta ** 0.5)
    assert radius ** ring_half_life(beta) == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("beta", [0.95, 0.99])
def test_torchs_sgd_on_a_quadratic_halves_its_oscillation_in_the_half_life(beta):
    # f = h x^2 / 2 at lr * h = 0.5: the peaks of |x| over one period, a half-life apart, halve
    h, lr = 2.0, 0.25
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([x], lr=lr, momentum=beta)
    path = []
    for _ in range(2000):
        opt.zero_grad()
        (0.5 * h * x.pow(2).sum()).backward()
        opt.step()
        path.append(abs(x.item()))
    period = math.ceil(2 * math.pi / math.acos((1 + beta - lr * h) / (2 * beta ** 0.5)))
    life = ring_half_life(beta)
    start = 200
    later = start + round(life)
    ratio = max(path[later:later + period]) / max(path[start:start + period])
    assert ratio == pytest.approx(0.5 * beta ** ((later - start - life) / 2), rel=1 - beta ** (period / 2))


def test_ring_half_life_has_its_closed_form_and_its_bounds():
    assert ring_half_life(0.0) == 0.0 and ring_half_life(1.0) == math.inf
    assert ring_half_life(0.9) == pytest.approx(2 * math.log(2) / -math.log(0.9))
    assert ring_half_life(0.95) < RING_STEPS < ring_half_life(0.99)  # the threshold sits between the two
    with pytest.raises(ValueError, match="momentum"):
        ring_half_life(1.5)


def _evidence(momentum, value=1.8, *, ratio=0.12, critical=False, dead=0.0):
    return {"loss": {"value": value, "best": 0.36, "initial": 2.31},
            "rate": {"lr": 0.1, "peak_lr": 0.1, "rule": "heavy-ball", "limit": 2 * (1 + momentum), "scale": 1.0,
                     "preconditioned": False, "sharpness": ratio * 2 * (1 + momentum), "ratio": ratio,
                     "largest_stable_lr": 0.1 / ratio, "momentum": momentum},
            "gradient": {"norm": 2.0, "tolerance": 0.02, "critical": critical},
            "layers": {"layers": [], "units": [{"name": "1", "family": "relu", "dead": dead}]},
            "noise": {"snr": 1.3, "batch_size": 64}}


def test_ringing_momentum_with_the_loss_given_back_is_unstable_and_nothing_else_is():
    assert decide(_evidence(0.99)) == "unstable" and ringing(_evidence(0.99))
    text = remedy("unstable", _evidence(0.999))
    assert "lower the momentum to 0.9" in text and f"{ring_half_life(0.999):,.0f} steps" in text
    assert decide(_evidence(0.9)) == "slow"  # rings 13 steps: not the cause
    assert decide(_evidence(0.999, value=0.39)) == "slow"  # within 10 % of its best: nothing given back
    assert decide(_evidence(0.999, dead=0.6)) == "dead_units"  # a cause in the network comes first
    assert decide({**_evidence(0.999), "curvature": {"kind": "saddle"}} | {
        "gradient": {"norm": 1e-4, "tolerance": 0.02, "critical": True}}) == "saddle"
    past = _evidence(0.999, ratio=1.5)  # past the limit as well: the rate's remedy
    assert decide(past) == "unstable" and remedy("unstable", past).startswith("lower the rate")


def _stepped(opt, model, X, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(model(X), y).backward()
        opt.step()


@pytest.mark.parametrize("kind", ["sgd", "nesterov", "adam"])
def test_lower_momentum_is_offered_where_momentum_rings_and_steps_as_torchs_own_optimizer(kind):
    make = {"sgd": lambda p, b: torch.optim.SGD(p, lr=0.05, momentum=b),
            "nesterov": lambda p, b: torch.optim.SGD(p, lr=0.05, momentum=b, nesterov=True),
            "adam": lambda p, b: torch.optim.Adam(p, lr=0.05, betas=(b, 0.9))}[kind]
    torch.manual_seed(0)
    model, X, y = nn.Linear(3, 2), torch.randn(16, 3), torch.randn(16, 2)
    opt = make(model.parameters(), 0.999)
    _stepped(opt, model, X, y, 7)
    names = lambda evidence: [r.name for r in remedies_for("unstable", evidence, opt, batch_size=None,  # noqa: E731
                                                           n_data=16, trial_steps=20)]
    assert "lower-momentum" not in names(_evidence(0.9))
    lower = {r.name: r for r in remedies_for("unstable", _evidence(0.999), opt, batch_size=None, n_data=16,
                                             trial_steps=20)}["lower-momentum"]
    twin = copy.deepcopy(model)
    fresh = make(twin.parameters(), 0.9)  # the oracle: torch's optimizer at 0.9, built at the same weights
    apply_change(lower.change, opt, model=model)
    _stepped(opt, model, X, y, 5)
    _stepped(fresh, twin, X, y, 5)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def _digits_loop(momentum, *, apply_remedy):
    return digits_mlp_loop(lambda params: torch.optim.SGD(params, lr=0.1, momentum=momentum), remedies=apply_remedy)


def test_a_loop_at_momentum_0_99_is_named_unstable_and_its_lower_momentum_ends_with_the_loop_at_0_9():
    left, stalls = _digits_loop(0.99, apply_remedy=False)
    assert stalls and stalls[0].verdict == "unstable" and stalls[0].evidence["rate"]["ratio"] < 1
    assert stalls[0].evidence["rate"]["ring_half_life"] == pytest.approx(ring_half_life(0.99))
    repaired, stalls = _digits_loop(0.99, apply_remedy=True)
    assert stalls[0].remedy_applied == "lower-momentum"
    counterpart, none = _digits_loop(0.9, apply_remedy=False)
    assert none == []  # the same loop at 0.9: no alarm
    assert repaired < 1.1 * counterpart and repaired < 0.25 * left
