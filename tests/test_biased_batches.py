"""Batches that are not a sample of the data (one batch drawn before the loop and used at every
step): the loop's batch losses against the tracked loss as the run's history records them,
written out by hand; the `biased_batches` verdict and its requested shuffle on README's loop; a
loss the loop scales and dropout's training-mode losses, which keep their ratio, left alone."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.history import RunHistory
from descentlab.critical.verdicts import BATCH_RATIO
from descentlab.engine import LoopState
from descentlab.experiments.zoo import _batches

from helpers import watched_steps


def test_the_batch_record_is_the_latest_ratio_over_the_first():
    history = RunHistory()
    for step, batch, tracked in [(10, 1.8, 2.0), (20, 0.6, 1.5), (30, 0.1, 1.0), (40, 0.05, 1.0)]:
        history.observe_batches(step, batch, tracked)
    record = history.batch_record()
    first = 1.8 / 2.0
    assert record["first_ratio"] == pytest.approx(first, rel=1e-15)
    assert record["ratio"] == pytest.approx(max(0.1 / 1.0, 0.05 / 1.0) / first, rel=1e-15)
    assert (record["batch_loss"], record["tracked"]) == (0.05, 1.0)
    state = history.state_dict()
    again = RunHistory()
    again.load_state_dict(state)
    assert again.batch_record() == record
    short = RunHistory()
    short.observe_batches(10, 1.0, 1.0)
    short.observe_batches(20, 0.1, 1.0)
    assert short.batch_record() is None  # two checks: no ratio over time yet


def test_a_fixed_batch_is_drawn_again_until_the_loop_is_asked_to_shuffle():
    loop = LoopState(nn.Linear(1, 1), batch_size=4)
    draws = _batches(20, loop, torch.Generator().manual_seed(0), "fixed")
    first = next(draws)
    assert all(torch.equal(next(draws), first) for _ in range(10))
    loop.shuffle = True
    seen = torch.cat([first] + [next(draws) for _ in range(4)])  # the rest of the first permutation
    assert sorted(seen.tolist()) == list(range(20))


def _digits():
    from copy import deepcopy

    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target)


def _loop(*, fixed, scale=1.0, dropout=0.0, steps=600, remedies=False):
    """README's loop on the digits, SGD lr 0.1 momentum 0.9, batches of 64 (one drawn once and used at
    every step where ``fixed``, else a fresh one each step), the loss passed to the monitor times
    ``scale``. Returns the monitor and the loop."""
    X, y = _digits()
    torch.manual_seed(0)
    hidden = [nn.Linear(64, 64), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
    model = nn.Sequential(*hidden, nn.Linear(64, 10))
    loop = LoopState(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), batch_size=64,
                     n_train=len(X))
    monitor = StallMonitor(F.cross_entropy, (X, y), budget=None, remedies=remedies, apply_remedy=remedies)
    monitor.on_train_start(loop)
    generator = torch.Generator().manual_seed(1)
    once = torch.randint(0, len(X), (64,), generator=generator)

    def step_loss():
        index = once if fixed and not loop.shuffle else torch.randint(0, len(X), (64,), generator=generator)
        model.train()
        return scale * F.cross_entropy(model(X[index]), y[index])

    watched_steps(loop, monitor, step_loss, steps)
    return monitor, loop


def test_one_batch_used_at_every_step_is_named_and_the_loop_is_asked_to_shuffle():
    """The batch is fitted (its loss 0.004) while the data's stays near 0.5 (read as a noise floor at
    the plateau of step 200 before): `biased_batches` as soon as the ratio shows it, under 0.2 of the
    start's, and with the remedy applied the loop's `shuffle` is set (no trial: every trial draws
    shuffled batches of its own)."""
    monitor, loop = _loop(fixed=True, remedies=True)
    stall = monitor.stalls[0]
    batches = stall.evidence["batches"]
    assert stall.verdict == "biased_batches" and batches["ratio"] <= BATCH_RATIO
    assert stall.reason == "batches" and stall.step <= 100  # when it shows, not at a plateau (step 200)
    assert batches["batch_loss"] < 0.05 * batches["tracked"]
    assert "DataLoader(shuffle=True)" in stall.remedy and stall.remedy_applied == "shuffle" and loop.shuffle
    X, y = _digits()
    with torch.no_grad():
        loop.model.eval()
        assert F.cross_entropy(loop.model(X), y).item() < 0.5 * batches["tracked"]  # shuffled from then on


@pytest.mark.parametrize("scale, dropout", [(0.25, 0.0), (1.0, 0.5)], ids=["loss/4", "dropout"])
def test_a_loss_the_loop_scales_or_trains_with_dropout_keeps_its_ratio(scale, dropout):
    """A loop that passes its loss divided by 4 (gradient accumulation's scaling), and one whose
    training-mode loss carries dropout (it grows above the eval-mode data's as the net fits): their
    batch-to-data ratios stay far above a fifth of their first."""
    monitor, _ = _loop(fixed=False, scale=scale, dropout=dropout, steps=400)
    assert all(s.verdict != "biased_batches" for s in monitor.stalls)
    record = monitor.history.batch_record()
    assert record["first_ratio"] == pytest.approx(scale, rel=0.5)
    assert record["ratio"] > 0.5


def test_batch_norm_whose_running_statistics_lag_its_batches_is_not_told_biased_batches():
    """A BatchNorm CNN with slow running statistics (momentum 0.01) at SGD 0.05: early on the
    tracked loss, on the running statistics, is 5x and more the batches' loss, on their own, and
    the record's ratio falls below ``BATCH_RATIO`` (checked). The data's loss as training computes
    it, on the batch's statistics (measured here on all the data, without touching the running
    ones), is the batches': no stall."""
    from copy import deepcopy

    from sklearn.datasets import load_digits

    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32).view(-1, 1, 8, 8), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16, momentum=0.01), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32, momentum=0.01), nn.ReLU(),
                          nn.Flatten(), nn.Linear(32 * 64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # no cap: the tracked loss reads the whole sample, not a part sized by the clock (which a loaded
    # machine shrinks until the record's ratio may not cross the line in 120 steps)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=32, budget=None)
    generator = torch.Generator().manual_seed(1)
    seen = None
    for step in range(1, 121):
        index = torch.randint(0, len(X), (32,), generator=generator)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        monitor.update(step, loss.detach(), model)
        record = monitor.history.batch_record()
        if seen is None and record is not None and record["ratio"] <= BATCH_RATIO:  # the record alone says biased
            copy = deepcopy(model).train()  # the oracle: all the data, each batch of 32 on its own statistics
            with torch.no_grad():
                trained = sum(F.cross_entropy(copy(X[i:i + 32]), y[i:i + 32], reduction="sum").item()
                              for i in range(0, len(X), 32)) / len(X)
            seen = (record, trained)
    assert seen is not None
    record, trained = seen
    # the data, as training computes it, is near the batches (not 5x above them, as on the running statistics)
    assert trained < 2 * record["batch_loss"] and record["tracked"] > 4 * record["batch_loss"]
    assert [s.verdict for s in monitor.stalls] == []


def test_batch_norm_fitted_to_one_batch_is_told_biased_batches_on_the_batch_statistics_too():
    """The same CNN trained on one batch of 32, drawn once before the loop: on the batch's own
    statistics too (the data as training computes it, measured here on all the data in batches of
    32 on a copy) the data's loss stays far above the batch's. The record, checked on the batch
    statistics before a diagnosis is asked, names it."""
    from copy import deepcopy

    from sklearn.datasets import load_digits

    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32).view(-1, 1, 8, 8), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.Flatten(), nn.Linear(32 * 64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=32, max_stalls=1)
    index = torch.randperm(len(X), generator=torch.Generator().manual_seed(1))[:32]
    for step in range(1, 301):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        if monitor.update(step, loss.detach(), model) is not None:
            break
    stall = monitor.stalls[0]
    copy = deepcopy(model).train()  # the oracle: all the data, each batch of 32 on its own statistics
    with torch.no_grad():
        trained = sum(F.cross_entropy(copy(X[i:i + 32]), y[i:i + 32], reduction="sum").item()
                      for i in range(0, len(X), 32)) / len(X)
        batch = F.cross_entropy(copy(X[index]), y[index]).item()
    assert stall.verdict == "biased_batches"
    assert trained > 5 * batch
    assert stall.evidence["batches"]["tracked_batch_statistics"] > 5 * stall.evidence["batches"]["batch_loss"]
