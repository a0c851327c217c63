"""Regression targets in raw units (prices ~2e5) against a network whose outputs start near 1:
the last layer would need weights 1e5 times its own, Adam's steps of 1e-3 take forever to get
there, and the gradient test relative to a loss of 5e10 reads every point as critical (before,
the monitor named a saddle there again and again). The targets' size against the outputs' is
measured, and the verdict is the data's scale with "standardize the targets". Oracles: numpy's
mean, spread and root-mean-square of the targets (the monitor's sample is the whole data here),
the outputs' root-mean-square from the model itself, and the same run on standardized targets."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.layer_signals import target_scales


def test_target_scales_are_the_targets_moments_against_the_outputs():
    torch.manual_seed(0)
    y, out = 3.0 + 2.0 * torch.randn(200, 2), 0.1 * torch.randn(200, 2)
    found = target_scales(out, y)
    Y, O = y.double().numpy(), out.double().numpy()
    assert found.mean == pytest.approx(Y.mean(), rel=1e-12)
    assert found.std == pytest.approx(Y.std(), rel=1e-9)
    assert found.rms == pytest.approx(math.sqrt((Y ** 2).mean()), rel=1e-12)
    assert found.ratio == pytest.approx(math.sqrt((Y ** 2).mean() / (O ** 2).mean()), rel=1e-12)
    assert target_scales(out, torch.randint(0, 3, (200, 2))) is None  # class labels: no regression
    assert target_scales(out[:, :1], y) is None  # not shaped like the outputs


def _run(standardize: bool):
    torch.manual_seed(0)
    X, w = torch.randn(512, 8), torch.randn(8, 1)
    y = (X @ w) * 50_000 + 200_000  # prices in dollars
    if standardize:
        y = (y - y.mean()) / y.std()
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = StallMonitor(F.mse_loss, (X, y), optimizer=optimizer, batch_size=64, max_stalls=1)
    generator = torch.Generator().manual_seed(1)
    outputs = None
    for step in range(1, 301):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = F.mse_loss(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        if monitor.update(step, loss.detach(), model) is not None:
            with torch.no_grad():
                outputs = model(X).double().numpy()
            break
    return monitor, y.double().numpy(), outputs


def test_regression_targets_in_raw_units_are_named_and_standardized_ones_are_not():
    monitor, Y, outputs = _run(standardize=False)
    stall = monitor.stalls[0]
    targets = stall.evidence["layers"]["targets"]
    assert stall.verdict == "unscaled_inputs"
    assert targets["mean"] == pytest.approx(Y.mean(), rel=1e-6)
    assert targets["rms"] == pytest.approx(math.sqrt((Y ** 2).mean()), rel=1e-6)
    assert targets["outputs_rms"] == pytest.approx(math.sqrt((outputs ** 2).mean()), rel=1e-4)
    assert stall.remedy.startswith(f"standardize the targets: train on (y - {Y.mean():.3g}) / {Y.std():.3g}")

    monitor, _, _ = _run(standardize=True)
    assert all(s.verdict != "unscaled_inputs" for s in monitor.stalls)
    assert all(np.isfinite(s.loss) for s in monitor.stalls)
