"""A few regression targets far out, which squared error sees alone.

Diabetes, its targets standardized, four of them then multiplied by 300 (a unit slip in four rows;
a sentinel such as -999 for a missing value does the same): squared error is theirs (their share
of the squared deviations 0.999), and the gradient steps they ask for threw a ReLU MLP's units
dead: the monitor said ``dead_units`` at step 30 (64 % dead; of its trials LeakyReLU,
re-initialising and carrying on all diverged within 50 steps). Oracles: numpy's median and median absolute deviation; a normal
sample (no target 30 robust spreads out in 10,000); the same loop with the four rows dropped.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.layer_signals import OUTLYING, target_scales
from descentlab.critical.verdicts import outlying_targets


def _diabetes(scaled_rows=4):
    data = load_diabetes()
    X = torch.tensor(data.data, dtype=torch.float32)
    X = (X - X.mean(0)) / X.std(0)
    y = torch.tensor(data.target, dtype=torch.float32)[:, None]
    y = (y - y.mean()) / y.std()
    rows = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:scaled_rows]
    y[rows] *= 300
    return X, y, rows


def _oracle(y: np.ndarray):
    deviation = np.abs(y - np.median(y))
    far = deviation >= OUTLYING * 1.4826 * np.median(deviation)
    return far.mean(), (deviation[far] ** 2).sum() / (deviation ** 2).sum()


def test_outlying_targets_are_counted_as_numpy_counts_them():
    _, y, _ = _diabetes()
    out = torch.zeros_like(y)
    found = target_scales(out, y, F.mse_loss)
    share, error = _oracle(y.double().numpy().ravel())
    assert found.outlying == pytest.approx(share)
    assert found.outlying_error == pytest.approx(error, rel=1e-4)  # torch's median of an even count is its lower middle
    assert 0 < share <= 0.01 and error > 0.99 and outlying_targets(found.__dict__)
    assert target_scales(out, y, F.l1_loss).outlying == 0  # only squared error is held by them
    normal = torch.randn(10_000, 1, generator=torch.Generator().manual_seed(0))
    assert target_scales(torch.zeros_like(normal), normal, F.mse_loss).outlying == 0


def _run(X, y, steps=60):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    monitor = StallMonitor(F.mse_loss, (X, y), optimizer=optimizer, batch_size=64, remedies=True)
    generator = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = F.mse_loss(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        monitor.update(step, loss.detach(), model)
        if monitor.control.should_stop:
            break
    return monitor


def test_a_few_far_targets_are_named_before_the_units_they_kill():
    X, y, rows = _diabetes()
    monitor = _run(X, y)
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    assert stall.verdict == "unscaled_inputs" and stall.remedy.startswith("look at the targets")
    assert stall.trials is None  # the data is the fix: nothing to try
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[rows] = False
    clean = _run(X[keep], y[keep])
    assert not any("look at the targets" in (s.remedy or "") for s in clean.stalls)
