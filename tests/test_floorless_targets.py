"""Targets at which the loss has no lowest value: labels -1/+1 given to binary cross-entropy.

``F.binary_cross_entropy_with_logits`` takes any float target. At t outside [0, 1] its value in
the score x, ``t·softplus(-x) + (1 - t)·softplus(x)``, falls linearly without end, so descent grows
the scores and the weights for as long as it runs. A ReLU MLP on the digits (is the digit below 5?)
with targets -1/+1 was named ``exploding_gradient`` at step 30, then ``accumulating_gradient`` at
step 40 (the loop's gradient, taken at weights a step before the monitor's, 500x a fresh one's),
then ``diverged`` with "restart with a rate below ...": three names, none the cause. Oracles: the
loss's closed form, numpy's count of the targets outside [0, 1], and the same loop with the
targets mapped to 0/1.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.output_floor import targets_without_floor


def _digits_below_five(minus_one: bool):
    digits = load_digits()
    X = torch.tensor(digits.data / 16, dtype=torch.float32)
    y = torch.tensor((digits.target < 5).astype(np.float32))[:, None]
    return X, (2 * y - 1 if minus_one else y)


def _run(X, y, steps=60):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.BCEWithLogitsLoss()
    monitor = StallMonitor(loss_fn, (X, y), optimizer=optimizer, batch_size=64, remedies=True)
    generator = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = loss_fn(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        monitor.update(step, loss.detach(), model)
        if monitor.control.should_stop:
            break
    return monitor


def test_the_loss_outside_0_1_falls_without_end():
    x = torch.tensor([-10.0, -100.0, -1000.0], dtype=torch.float64)
    for t in (-1.0, 2.0):
        scores = x if t < 0 else -x  # t < 0 falls as x -> -inf, t > 1 as x -> +inf
        target = torch.full_like(scores, t)
        loss = F.binary_cross_entropy_with_logits(scores, target, reduction="none")
        closed = t * F.softplus(-scores) + (1 - t) * F.softplus(scores)
        torch.testing.assert_close(loss, closed)
        slope = (loss[2] - loss[1]) / (scores[2] - scores[1]).abs()
        assert float(slope) == pytest.approx(-abs(t if t < 0 else t - 1), rel=1e-9)  # no floor: linear descent


@pytest.mark.parametrize("loss_fn, counted", [
    (F.binary_cross_entropy_with_logits, True),
    (nn.BCEWithLogitsLoss(reduction="sum"), True),
    (lambda x, t: (t * F.softplus(-x) + (1 - t) * F.softplus(x)).mean(), True),  # written out by hand
    (F.mse_loss, False),  # squared error has its floor at any target
])
def test_targets_without_floor_counts_what_numpy_counts(loss_fn, counted):
    generator = torch.Generator().manual_seed(0)
    out = torch.randn(200, 3, generator=generator)
    y = torch.randint(0, 2, (200, 3), generator=generator).float()
    y[:37, 0] = -1.0
    y[5:9, 2] = 1.5
    outside = int(np.count_nonzero((y.numpy() < 0) | (y.numpy() > 1)))
    assert targets_without_floor(loss_fn, out, y) == (outside if counted else 0)
    assert targets_without_floor(loss_fn, out, y.clamp(0, 1)) == 0  # in [0, 1]: the loss has its floor


def test_labels_minus_one_plus_one_are_named_with_the_targets_map():
    X, y = _digits_below_five(minus_one=True)
    monitor = _run(X, y)
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    share = stall.evidence["layers"]["targets"]["without_floor"]  # over the monitor's random sample
    assert share == pytest.approx(float(np.mean(y.numpy() < 0)), abs=0.1)
    assert stall.verdict == "unscaled_inputs" and stall.remedy.startswith("map the targets into [0, 1]")
    assert f"{share:.0%}" in stall.remedy and stall.trials is None  # the data is the fix: nothing to try
    assert all(s.verdict in ("unscaled_inputs", "diverged") for s in monitor.stalls if s.status == "diagnosed")


def test_the_same_loop_on_targets_0_1_is_not_told_so():
    X, y = _digits_below_five(minus_one=False)
    monitor = _run(X, y)
    assert all(((s.evidence or {}).get("layers") or {}).get("targets", {}).get("without_floor", 0) == 0
               for s in monitor.stalls)
    assert not any("map the targets" in (s.remedy or "") for s in monitor.stalls)
