"""A loss that creeps, in a loop that calls ``update``: the run's length given to the monitor.

Two loops nobody designed, each a digits MLP (64-64-64-10, SGD 0.1 momentum 0.9, batches of 64)
whose loss fell 3-4 % in 800 steps while the monitor said nothing: gradients clipped to a norm of
0.001 (``clip_grad_norm_``), and a linear warm-up of 100,000 steps (counted in epochs, stepped per
batch). A creep is a plateau only where the run's length is known (at that pace the loss would end
the run where it is), and ``update`` had no way to be told it; ``StallMonitor(total_steps=...)`` now
does, and a rate still rising past half the run is no warm-up that excuses the creep. Oracles:
``clip_grad_norm_``'s own norm, ``LinearLR``'s own rates, the loops without the fault.
"""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.history import RunHistory
from descentlab.critical.verdicts import warming


def _run(steps, *, total=True, clip=None, warm_up=None):
    data = load_digits()
    X, y = torch.tensor(data.data / 16, dtype=torch.float32), torch.tensor(data.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    schedule = None if warm_up is None else torch.optim.lr_scheduler.LinearLR(optimizer, 1e-3, total_iters=warm_up)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64,
                           total_steps=steps if total else None)
    generator, rates, norms = torch.Generator().manual_seed(1), {}, []
    for step in range(1, steps + 1):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[index]), y[index])
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            norms.append(float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()))
        optimizer.step()
        if schedule is not None:
            schedule.step()
        rates[step] = optimizer.param_groups[0]["lr"]
        monitor.update(step, loss.detach(), model)
    return monitor, rates, norms


def test_gradients_clipped_far_below_their_norm_are_named_once_the_run_has_a_length():
    monitor, _, norms = _run(300, clip=1e-3)
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    assert stall.verdict == "slow" and "raise the gradient clipping's threshold" in stall.remedy
    gradient = stall.evidence["gradient"]
    assert min(norms) <= gradient["loop_norm"] <= max(norms) <= 1e-3  # what clip_grad_norm_ left the steps
    assert gradient["loop_ratio"] < 0.01
    unknown, _, _ = _run(300, clip=1e-3, total=False)
    assert not [s for s in unknown.stalls if s.status == "diagnosed"]  # a creep without a length: no plateau


def test_a_warm_up_longer_than_the_run_is_told_past_half_of_it():
    monitor, rates, _ = _run(600, warm_up=100_000)
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    assert stall.verdict == "slow" and stall.remedy.startswith("shorten the warm-up")
    assert stall.step >= 300
    first = monitor.history.first_lr
    assert first == rates[min(s for s, _ in monitor.tracked)]  # the scheduler's own rate at the first check
    assert stall.evidence["rate"]["first_lr"] == first < stall.evidence["rate"]["lr"] == rates[stall.step]
    short, _, _ = _run(600, warm_up=50)  # a warm-up that ends: the run trains, nothing to tell
    assert not any((s.remedy or "").startswith("shorten the warm-up") for s in short.stalls)


def test_a_rate_that_rose_and_now_holds_or_decays_is_no_warm_up_under_way():
    history = RunHistory()
    for step, lr in ((10, 0.1), (20, 0.5), (30, 1.0)):
        history.observe_rate(step, lr)
    assert history.rising  # rose at the last check: a warm-up under way
    history.observe_rate(40, 1.0)
    assert not history.rising  # held since: warmed up (a cosine's tail, a constant rate)
    history.observe_rate(50, 0.9)
    assert not history.rising
    rate = {"lr": 1.0, "first_lr": 0.1, "peak_lr": 1.0}
    assert warming({"rate": {**rate, "rising": True}}) and not warming({"rate": {**rate, "rising": False}})
    restored = RunHistory()
    restored.load_state_dict(history.state_dict())
    assert restored.rate_at == 50 and restored.rose_at == 30 and not restored.rising
