"""A ``slow`` verdict that cannot tell a rate too small from batches that carry no signal.

A loop that draws each batch's labels at random (the monitor holds the true ones) sits at chance
with an SNR of 0.18, and was told ``slow``, "raise the rate toward 20.2", though a larger rate
ends higher. Nothing the monitor reads separates it from a rate far too small, so the remedy says
what it cannot tell where the loss never moved and the gradients are mostly noise. Oracle: the
same loop at a 10x rate, unmonitored.
"""

import math

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor

from helpers import update_steps


def _random_labels(steps, lr=0.1, monitored=False):
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64) if monitored else None
    generator = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        index = torch.randint(0, len(X), (64,), generator=generator)
        labels = torch.randint(0, 10, (64,), generator=generator)  # not the data's
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[index]), labels)
        loss.backward()
        optimizer.step()
        if monitor is not None:
            monitor.update(step, loss.detach(), model)
    with torch.no_grad():
        return monitor, float(F.cross_entropy(model(X), y))


def test_slow_says_what_it_cannot_tell_where_the_loss_never_moved_in_noise():
    monitor, _ = _random_labels(200, monitored=True)
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    assert stall.verdict == "slow" and stall.evidence["noise"]["snr"] < 1
    assert stall.loss > 0.99 * math.log(10)  # at chance: never moved
    assert "check that the loop trains on the data's own inputs and labels" in stall.remedy
    _, keep = _random_labels(800)
    _, faster = _random_labels(800, lr=1.0)
    assert faster > keep  # the rate alone would not help


def _shuffled_labels(steps, lr=0.1, monitored=False):
    """The digits MLP 64-64-10 on labels shuffled once (the same wrong label every epoch: a network
    can memorise them, slowly), README's loop at SGD ``lr`` momentum 0.9; the loss on all of them."""
    digits = load_digits()
    X = torch.tensor(digits.data / 16, dtype=torch.float32)
    y = torch.tensor(digits.target)[torch.randperm(len(X), generator=torch.Generator().manual_seed(5))]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64,
                           total_steps=steps) if monitored else None
    update_steps(model, optimizer, X, y, monitor, steps=steps)
    with torch.no_grad():
        return monitor, float(F.cross_entropy(model(X), y))


def test_labels_shuffled_once_get_the_same_caveat_on_slow_and_noise_floor():
    """Labels shuffled once creep down as the network memorises them (2.31 -> 2.22 in 400 steps): the
    loss moves, but stays within 5 % of where it began, and a larger rate ends higher, so both verdicts
    the run gets (``slow`` with SNR ~0, a ``noise_floor`` later) say what they cannot tell."""
    monitor, kept = _shuffled_labels(400, monitored=True)
    diagnosed = [s for s in monitor.stalls if s.status == "diagnosed"]
    assert {s.verdict for s in diagnosed} <= {"slow", "noise_floor"} and diagnosed
    for stall in diagnosed:
        initial = stall.evidence["loss"]["initial"]
        assert 0.95 * initial < stall.loss < 0.99 * initial  # moved, barely
        assert "check that the loop trains on the data's own inputs and labels" in stall.remedy
    assert any(s.verdict == "slow" for s in diagnosed)
    _, faster = _shuffled_labels(400, lr=0.5)
    assert faster > kept  # the raise slow names would not help
