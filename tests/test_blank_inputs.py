"""Inputs the units cannot see, and a first interval whose loss fell steeply.

A ReLU MLP fed the digits multiplied by 0 (an image read as zeros), or divided by 4,000 (a scale
applied twice), gives every unit the same value on every sample: half of them are zero there, by
the sign of their bias, so the monitor read them as dead units and offered LeakyReLU and
re-initialising (before, both loops were named ``dead_units`` at step 30). The inputs are the cause:
constant ones are named with "check how the inputs are loaded" and no remedy to try, tiny ones
with "standardize the inputs". Oracles: numpy's spreads of the inputs, and the loss a network
that gives every sample one output can reach at best, the entropy of the labels' frequencies.

A network started at weights of spread 3 begins at a loss of ~8,000 and is at 2.7 by step 10: the
mean of the first interval's batch losses was 3,000x the tracked loss at its end, and every later
ratio read as batches fitted far below the data (``biased_batches`` at step 40, the batches and the
data both at 2.33). Oracle: a loop whose batch is the whole data cannot fit batches that are not it.
"""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.history import SECOND_NEAR, RunHistory
from descentlab.critical.layer_signals import input_scales
from descentlab.critical.verdicts import biased, blank


def _digits():
    digits = load_digits()
    return torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)


def _run(X, y, *, steps=200, batch=64, std=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    if std is not None:
        for layer in model[::2]:
            nn.init.normal_(layer.weight, std=std)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=batch, remedies=True)
    generator = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        index = torch.randint(0, len(X), (batch,), generator=generator) if batch < len(X) else slice(None)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        monitor.update(step, loss.detach(), model)
    return monitor


def test_inputs_that_do_not_vary_are_measured_as_such():
    X = torch.zeros(300, 5, dtype=torch.float64)
    X[:, 2] = 7.0
    X[:2, 4] = 1.0  # on 2 of 300 samples: rare, left out as well
    found = input_scales(X)
    assert np.ptp(X.numpy()[:, :4], axis=0).max() == 0
    assert (found.features, found.constant, found.rare) == (0, 4, 5) and math.isnan(found.span)
    assert blank(found.__dict__) and not blank(input_scales(_digits()[0]).__dict__)


def test_inputs_of_zeros_are_named_with_no_remedy_to_try():
    X, y = _digits()
    monitor = _run(X * 0, y)
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    assert stall.verdict == "unscaled_inputs"
    assert "none of them varies" in stall.remedy and stall.trials is None
    counts = np.bincount(y.numpy(), minlength=10) / len(y)
    floor = float(-(counts * np.log(counts)).sum())  # the best loss of one output for every sample
    assert stall.loss >= floor - 1e-6 and stall.loss <= 1.01 * math.log(10)


def test_inputs_too_small_for_the_units_are_named_before_the_units_they_silence():
    X, y = _digits()
    monitor = _run(X / 4000, y)
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    spreads = (X / 4000).double().numpy().std(axis=0, ddof=1)
    assert np.median(spreads[spreads > 0]) < 1 / 30
    units = stall.evidence["layers"]["units"]
    assert max(u["dead"] for u in units) >= 0.5  # read alone, the units are dead
    assert stall.verdict == "unscaled_inputs" and stall.remedy.startswith("standardize the inputs")
    last = {t["remedy"]: t["losses"][-1] for t in stall.trials["trials"]}
    assert min(last["standardize"], last["standardize-reinit"]) < 0.5 * last["keep"]  # what helps is the scale


def test_a_steep_first_interval_does_not_read_as_batches_fitted_below_the_data():
    X, y = _digits()
    monitor = _run(X[:512], y[:512], steps=100, batch=512, std=3.0)  # the batch is the whole data
    first = monitor.history.batch_losses[0]
    assert first[1] > 100 * first[2]  # the first interval's batches far above its end
    assert "biased_batches" not in [s.verdict for s in monitor.stalls]


@pytest.mark.parametrize("records, expected", [
    ([(8455.3, 2.676), (2.464, 2.428), (2.428, 2.389), (2.327, 2.333)], False),  # a steep first interval
    ([(64 * 2.3, 2.3), (64 * 2.2, 2.2), (64 * 2.1, 2.1), (64 * 2.0, 2.0)], False),  # a summed loss
    ([(2.0, 2.3), (1.0, 2.3), (0.3, 2.25), (0.2, 2.25)], True),  # one batch repeated
    ([(1.869, 1.203), (0.1517, 2.074), (0.0002, 4.179), (1e-5, 5.189)], True),  # the zoo's CNN on one batch
])
def test_the_batches_first_ratio_is_the_loops_scale(records, expected):
    history = RunHistory()
    for step, (batch, tracked) in enumerate(records, start=1):
        history.observe(10 * step, tracked, nn.Linear(1, 1), lr=0.1)
        history.observe_batches(10 * step, batch, tracked)
    record = history.batch_record()
    first, second = (b / t for b, t in records[:2])
    scale = second if first > 1 and SECOND_NEAR <= second < first else first
    assert record["first_ratio"] == pytest.approx(scale)
    assert record["ratio"] == pytest.approx(max(b / t for b, t in records[-2:]) / scale)
    assert biased({"batches": record, "loss": history.loss_record(records[-1][1])}) is expected
