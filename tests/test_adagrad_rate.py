"""Adagrad's stability limit read at its accumulator (``lr · λ_max(D⁻¹H) < 2``) bounds no rate: the
accumulator takes in each gradient before the step, so no coordinate moves more than the rate a
step, and a larger rate's gradients grow it. A digits MLP stalled under Adagrad at 1e-5 was told
"raise the rate toward 3.46e-05 (the largest stable rate here)", where rates 100 times that train
and none diverges. Oracles: torch's Adagrad run from the stall's point at those rates, and its
per-coordinate steps against the rate, step by step."""

import copy

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from helpers import update_steps

from descentlab.critical import StallMonitor


def _digits():
    digits = load_digits()
    return torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)


def _stalled():
    X, y = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adagrad(model.parameters(), lr=1e-5)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, total_steps=300)
    update_steps(model, optimizer, X, y, monitor, steps=300, until_stall=True)
    return monitor, model, optimizer


def _continue(model, optimizer, lr, steps=200):
    """Adagrad from where the monitor stopped, at ``lr``: the data's loss after ``steps`` and the
    largest per-coordinate step over the steps, in units of the rate."""
    X, y = _digits()
    model, optimizer_state = copy.deepcopy(model), copy.deepcopy(optimizer.state_dict())
    optimizer = torch.optim.Adagrad(model.parameters(), lr=lr)
    optimizer.load_state_dict(optimizer_state)
    for group in optimizer.param_groups:
        group["lr"] = lr
    generator = torch.Generator().manual_seed(2)
    largest = 0.0
    for _ in range(steps):
        index = torch.randint(0, len(X), (64,), generator=generator)
        before = [p.detach().clone() for p in model.parameters()]
        optimizer.zero_grad()
        F.cross_entropy(model(X[index]), y[index]).backward()
        optimizer.step()
        largest = max(largest, max(float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before)))
    with torch.no_grad():
        return float(F.cross_entropy(model(X), y)), largest / lr


def test_a_stall_under_adagrad_is_given_no_largest_stable_rate_and_none_bounds_it():
    monitor, model, optimizer = _stalled()
    stall = monitor.stalls[0]
    assert stall.verdict == "slow"
    rate = stall.evidence["rate"]
    assert rate["rule"] == "adagrad" and rate["bounded"] is False and rate["largest_stable_lr"] is None
    assert stall.remedy.startswith("raise the rate a few times at a time")
    frozen = rate["lr"] * rate["limit"] / rate["sharpness"]  # the limit read at the accumulator now
    assert frozen < 1e-4
    at_limit, _ = _continue(model, optimizer, frozen)
    above, step = _continue(model, optimizer, 100 * frozen)
    assert step <= 1.0 + 1e-5  # no coordinate moved more than the rate in any step
    assert above < at_limit < 2.35  # a hundred times that limit trains further, and does not diverge
