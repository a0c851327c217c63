"""A one-cycle schedule whose peak is far too small: the loss never moves. Its plateau was found
during the warm-up, where ``slow`` is left untold (a rising rate is that remedy already), and the
plateau test then stayed quiet until the loss left that level, which it never did: no alarm in 400
steps. A plateau excused by a warm-up is now looked at again once the rate has stopped rising.
Oracles: the schedule's own rates, and the same run with a peak 10,000x higher, which falls."""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor

STEPS = 400


def _one_cycle(max_lr):
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=max_lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=STEPS)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, total_steps=STEPS,
                           budget=None)
    generator = torch.Generator().manual_seed(1)
    rates = {}
    for step in range(1, STEPS + 1):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        schedule.step()
        rates[step] = optimizer.param_groups[0]["lr"]
        monitor.update(step, loss.detach(), model)
    return monitor, rates


def test_a_one_cycle_peak_far_too_small_is_told_slow_after_its_warm_up():
    monitor, rates = _one_cycle(1e-5)
    peak = max(rates, key=rates.get)  # 30 % of the run: step 120
    assert 100 <= peak <= 140
    told = [s for s in monitor.stalls if s.status == "diagnosed"]
    assert told and told[0].verdict == "slow"
    assert told[0].step >= peak + monitor.window  # after the warm-up, not during it
    assert rates[told[0].step] < rates[peak]
    assert monitor.tracked[-1][1] > 0.99 * monitor.tracked[0][1]  # the loss never moved: the verdict's premise
    healthy, _ = _one_cycle(0.1)
    assert not healthy.stalls and healthy.tracked[-1][1] < 0.2 * healthy.tracked[0][1]
