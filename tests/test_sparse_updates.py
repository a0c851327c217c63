"""A loop that calls the monitor every few steps (beside its logging: ``if step % 10 == 0``) or
attaches it to a resumed run (the first call at step 5,001). The checks' cadence is in steps: a
loop calling every 10 steps was checked every 100 (ten calls), so a 600-step run stalled at lr 1e-5
raised no alarm. Oracle: the same run with the monitor called at every step, whose tracked losses
are read at the same steps of the same trajectory."""

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor


def _run(call_every, first_step=1, steps=300, lr=1e-5):
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64,
                           total_steps=first_step - 1 + steps, budget=None, max_stalls=1)
    generator = torch.Generator().manual_seed(1)
    for step in range(first_step, first_step + steps):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        if step % call_every == 0:
            monitor.update(step, loss.detach(), model)
    return monitor


def test_a_loop_that_calls_every_10_steps_is_checked_every_10_steps():
    every_step, every_10 = _run(1), _run(10)
    assert every_step.stalls and every_step.stalls[0].verdict == "slow"
    # the checks read the same steps (a first call at step 10 has no tracked loss before it: from 20)
    read = dict(every_step.tracked)
    assert [s for s, _ in every_10.tracked][:3] == [20, 30, 40]
    for step, value in every_10.tracked:
        if step in read:
            assert value == pytest.approx(read[step], rel=1e-6)
    assert every_10.stalls and every_10.stalls[0].verdict == "slow"
    assert every_10.stalls[0].step <= every_step.stalls[0].step + 20


def test_a_resumed_run_counts_its_steps_from_the_first_call():
    resumed = _run(1, first_step=5001)
    assert [s for s, _ in resumed.tracked][:3] == [5010, 5020, 5030]
    assert resumed.stalls and resumed.stalls[0].verdict == "slow" and resumed.stalls[0].step <= 5001 + 100
