"""Parameter groups at different rates: a body frozen at rate 0 under a head that trains. The monitor
read the first group's rate, 0, and told a healthy fine-tuning run "no_learning_rate: fix the
schedule so the rate lasts until the last step: it has been 0 since step 10". The run's rate is now
the largest of its groups'. Oracles: the unmonitored run, bit for bit; the exact Hessian of the
head's parameters (``torch.func.hessian``, float64), whose top eigenvalue sets the head's limit."""

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.func import functional_call, hessian
from torch.nn import functional as F

from helpers import update_steps

from descentlab.critical import StallMonitor
from descentlab.critical.stability import current_rate


def _run(lr, monitored=True, steps=400):
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.0}, {"params": model[2].parameters()}],
                                lr=lr, momentum=0.9)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64,
                           total_steps=steps) if monitored else None
    update_steps(model, optimizer, X, y, monitor, steps=steps, until_stall=lr < 1e-3)
    return monitor, model, optimizer


def test_a_body_frozen_at_rate_0_under_a_head_that_trains_raises_no_alarm():
    monitor, model, optimizer = _run(0.1)
    assert current_rate(optimizer) == 0.1
    assert not monitor.stalls
    assert monitor.tracked[-1][1] < 0.6 * monitor.tracked[0][1]  # the head trains
    _, alone, _ = _run(0.1, monitored=False)
    for a, b in zip(model.state_dict().values(), alone.state_dict().values()):
        assert torch.equal(a, b)


def test_its_stall_reads_the_heads_limit():
    monitor, model, _ = _run(1e-5)
    stall = monitor.stalls[0]
    assert stall.verdict == "slow"
    rate = stall.evidence["rate"]
    n = stall.evidence["curvature"]["samples"]
    Xs, ys = monitor.sample[0][:n].double(), monitor.sample[1][:n]
    model64 = model.double()
    head = {k: p.detach() for k, p in model64.named_parameters() if k.startswith("2.")}
    body = {k: p.detach() for k, p in model64.named_parameters() if k.startswith("0.")}
    h = hessian(lambda p: F.cross_entropy(functional_call(model64, {**body, **p}, (Xs,)), ys))(head)
    names = list(head)
    dense = torch.cat([torch.cat([h[a][b].reshape(head[a].numel(), head[b].numel()) for b in names], 1)
                       for a in names])
    top = float(torch.linalg.eigvalsh(dense)[-1])
    assert rate["lr"] == 1e-5
    assert rate["largest_stable_lr"] == pytest.approx(2 * (1 + 0.9) / top, rel=1e-2)  # heavy ball's limit


def test_a_remedys_rate_keeps_the_groups_ratios_and_a_frozen_body_frozen():
    """``Change(lr=...)`` sets the run's rate, its largest group's: a body at rate 0 stays at 0 and
    groups 10x apart stay 10x apart, by the rule's own arithmetic after one step (SGD without
    momentum: each weight moves by its group's rate times its gradient); a switch to Adam keeps the
    groups; every group takes the rate where all were at 0."""
    from descentlab.engine.changes import Change, apply_change

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    optimizer = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.0},
                                 {"params": model[1].parameters(), "lr": 0.01},
                                 {"params": model[2].parameters(), "lr": 0.1}])
    applied = apply_change(Change(lr=2.0), optimizer)
    X, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    before = [p.detach().clone() for p in model.parameters()]
    F.cross_entropy(model(X), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    applied.optimizer.step()
    for p, p0, g, lr in zip(model.parameters(), before, grads, [0.0, 0.0, 0.2, 0.2, 2.0, 2.0]):
        assert torch.allclose(p.detach(), p0 - lr * g, rtol=0, atol=1e-7)
    assert current_rate(applied.optimizer) == 2.0
    adam = apply_change(Change(optimizer="adam", lr=1e-3), applied.optimizer).optimizer
    assert [g["lr"] for g in adam.param_groups] == pytest.approx([0.0, 1e-4, 1e-3], rel=1e-12)
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    restored = apply_change(Change(lr=0.5), optimizer).optimizer
    assert [g["lr"] for g in restored.param_groups] == [0.5, 0.5, 0.5]
