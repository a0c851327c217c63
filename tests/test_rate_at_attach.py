"""The rate's peak includes the rate the optimizer had when the monitor was given it.

``ReduceLROnPlateau(factor=0.1, patience=0)`` stepped on noisy batch losses cuts the rate at almost
every step: README's MLP at SGD 0.1 had 1e-8 by step 10, the monitor's first check, whose peak
was then 1e-8 too, so the plateau read ``slow`` ("raise the rate") where the schedule is the
cause. Oracle: the scheduler's own rates, read step by step in the same loop.
"""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.verdicts import LR_ZERO


def test_a_scheduler_that_cuts_the_rate_each_step_is_named_from_the_rate_the_run_began_at():
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=0)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64)
    generator = torch.Generator().manual_seed(1)
    rates = {}
    for step in range(1, 61):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        scheduler.step(loss.item())
        rates[step] = optimizer.param_groups[0]["lr"]
        monitor.update(step, loss.detach(), model)
    assert rates[10] <= LR_ZERO * 0.1 and max(rates[s] for s in range(10, 61, 10)) <= LR_ZERO * 0.1
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    assert stall.verdict == "no_learning_rate" and stall.evidence["rate"]["peak_lr"] == 0.1
    assert stall.remedy.startswith("fix the schedule")
