"""What the mini-batch noise costs the loss, and a plateau that only looks like a noise floor.

An SNR below 1 was read as a noise floor on its own. But the noise holds the loss up by
``(η_eff / 4) tr Σ_B`` (:func:`~descentlab.critical.verdicts.noise_excess`), whatever the curvature:
a run crawling along flat directions with SNR 0.33 loses almost nothing to it. The digits MLP with
label smoothing 0.9 (its loss floor, the smoothed labels' entropy, is 2.2662) sat at 2.278 at
step 270 and was named ``saddle`` five times (negative eigenvalues of -5e-4 against a gradient
of 0.01; each escape lowered the loss by under 1e-3), then, with the shallow saddle passed over,
``noise_floor``; the noise held it up by 8e-5 there. Oracles: SGD with heavy ball on a quadratic
valley with Gaussian noise, simulated (its mean excess over the minimum); and from step 270, the
same run with every sample in the batch (no noise) and with a 10x rate.
"""

import math

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.diagnosis import escape_reach
from descentlab.critical.verdicts import NOISE_SHARE, noise_excess, noise_holds


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_noise_excess_is_sgds_stationary_excess_on_a_quadratic(momentum):
    lr, d, chains, steps, burn = 0.01, 40, 64, 16_000, 4_000
    curvature = torch.logspace(-1, 0.5, d, dtype=torch.float64)  # λ from 0.1 to 3.2: η_eff λ <= 0.32
    sigma = torch.linspace(0.5, 1.5, d, dtype=torch.float64)  # noise spread per eigendirection
    generator = torch.Generator().manual_seed(0)
    theta = torch.zeros(chains, d, dtype=torch.float64)
    velocity = torch.zeros_like(theta)
    excess = []
    for step in range(steps):
        gradient = curvature * theta + sigma * torch.randn(chains, d, generator=generator, dtype=torch.float64)
        velocity = momentum * velocity + gradient  # torch.optim.SGD's heavy ball (dampening 0)
        theta = theta - lr * velocity
        if step >= burn:
            excess.append(float((0.5 * curvature * theta * theta).sum(dim=1).mean()))
    simulated = sum(excess) / len(excess)
    # heavy ball's exact stationary variance along λ: η σ² (1 + β) / (λ (1 - β) (2 (1 + β) - η λ))
    a = lr * curvature
    exact = float((0.5 * curvature * lr * sigma ** 2 * (1 + momentum)
                   / (curvature * (1 - momentum) * (2 * (1 + momentum) - a))).sum())
    evidence = {"rate": {"rule": "heavy-ball" if momentum else "gd", "lr": lr, "scale": 1.0, "momentum": momentum,
                         "preconditioned": False},
                "noise": {"noise_sq": float((sigma ** 2).sum())}}
    estimate = noise_excess(evidence)
    assert simulated == pytest.approx(exact, rel=0.05)  # the simulation is the closed form's
    worst = float((2 * (1 + momentum) / (2 * (1 + momentum) - a)).max())  # the (η λ small) limit's own error
    assert estimate == pytest.approx(exact, rel=worst - 1 + 1e-9)


def test_a_preconditioned_rule_has_no_excess_measured():
    evidence = {"rate": {"rule": "adam", "lr": 1e-3, "scale": 1.0, "momentum": 0.9, "preconditioned": True},
                "noise": {"noise_sq": 1.0, "snr": 0.1}, "loss": {"value": 1.0}}
    assert noise_excess(evidence) is None and noise_holds(evidence)  # the lectures' SNR test alone


def test_escape_reach_is_the_quadratic_models_gain_over_the_gradients():
    gradient, low, r = 0.01, -5e-4, 1.0
    loss = lambda t: gradient * t[0] + 0.5 * (0.9 * t[0] ** 2 + low * t[1] ** 2)  # noqa: E731
    zero = torch.zeros(2, dtype=torch.float64)
    along_curvature = float(loss(zero) - loss(torch.tensor([0.0, r], dtype=torch.float64)))
    along_gradient = gradient * r  # the first-order fall down the gradient
    assert escape_reach(low, gradient, r) == pytest.approx(along_curvature / along_gradient)
    assert escape_reach(low, 0.0, r) == math.inf


def _smoothed_run(steps, *, lr_after=None, batch_after=None, monitored=False):
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.9)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor = StallMonitor(loss_fn, (X, y), optimizer=optimizer, batch_size=64) if monitored else None
    generator = torch.Generator().manual_seed(1)
    batch = 64
    for step in range(1, steps + 1):
        if step == 271:
            batch = batch_after or batch
            for group in optimizer.param_groups:
                group["lr"] = lr_after or group["lr"]
        index = torch.randint(0, len(X), (batch,), generator=generator) if batch < len(X) else slice(None)
        optimizer.zero_grad()
        loss = loss_fn(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        if monitor is not None:
            monitor.update(step, loss.detach(), model)
    with torch.no_grad():
        return monitor, float(F.cross_entropy(model(X), y, label_smoothing=0.9))


def test_a_crawl_along_flat_directions_is_slow_not_a_noise_floor_or_a_saddle():
    monitor, _ = _smoothed_run(300, monitored=True)
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    evidence = stall.evidence
    assert evidence["noise"]["snr"] < 1  # the lectures' SNR test alone says noise
    assert noise_excess(evidence) < NOISE_SHARE * stall.loss
    assert stall.verdict == "slow" and not stall.escaped
    _, keep = _smoothed_run(700)
    _, whole_batch = _smoothed_run(700, batch_after=1797)
    _, faster = _smoothed_run(700, lr_after=1.0)
    assert abs(whole_batch - keep) < 1e-3 * keep  # no noise: no lower
    assert faster < keep - 1e-3  # a larger rate: lower
