"""A rate far too high (SGD 6.4, momentum 0.9, on a digits MLP) throws the loss up from 2.3 to 257
in its first steps, kills the hidden units, and leaves the loss at chance. A loop that calls
``update`` only has no reading of the start: the monitor's first tracked loss, 7.6 at step 10,
was taken as where the run began, so the loss at chance read as half-way down, no cause in the
network was looked for, and its plateau was told "raise the rate toward 16.1". The run's start is
now estimated from the loop's own batch losses (the first, at the initial parameters, against the
median of the last before the first reading). Oracles: the loss at the initial parameters on the
tracked samples, by hand; the hidden units counted dead by hand; the same loop with its start
recorded (``on_train_start``)."""

import copy

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from helpers import update_steps

from descentlab.critical import StallMonitor
from descentlab.engine import LoopState

STEPS = 200


def _run(lr, start_recorded=False):
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    initial = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, total_steps=STEPS)
    if start_recorded:
        monitor.on_train_start(LoopState(model, optimizer, batch_size=64, n_train=len(X), total_steps=STEPS))
    update_steps(model, optimizer, X, y, monitor, steps=STEPS, until_stall=True)
    return monitor, model, initial, X


def test_a_start_thrown_up_by_a_rate_far_too_high_is_estimated_and_the_dead_units_named():
    monitor, model, initial, X = _run(6.4)
    n = monitor.diagnoser.tracked_size
    Xs, ys = monitor.diagnoser.first(n)
    with torch.no_grad():
        began = float(F.cross_entropy(initial(Xs), ys))
        dead = float((model[1](model[0](X)) == 0).all(dim=0).double().mean())
    assert monitor.tracked[0][0] == 10 and monitor.tracked[0][1] > 3 * began  # the first reading: thrown up
    assert abs(monitor.history.initial - began) <= 0.25 * began
    assert dead >= 0.9
    stall = monitor.stalls[0]
    assert stall.verdict == "dead_units" and "lower the rate" in stall.remedy
    recorded, _, _, _ = _run(6.4, start_recorded=True)
    assert recorded.stalls[0].verdict == "dead_units"
    assert abs(recorded.history.initial - began) <= 1e-5 * began


def test_a_start_that_falls_is_the_first_reading():
    monitor, _, _, _ = _run(0.05)
    assert not monitor.stalls
    assert monitor.history.initial == monitor.tracked[0][1]
