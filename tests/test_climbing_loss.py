"""Loops whose steps climb the loss (torch's ``maximize=True``, a negated loss backpropagated) and a
loss that reached 0 on every sample it counts: told as such, not as a rate to raise or a noise floor.

Oracles: torch's own optimizers and cross-entropy (the loss they reach, the gradient a loop hands
its optimizer), and the cosine of a vector with itself and its negative (±1)."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from sklearn.datasets import load_digits

from descentlab.critical import StallMonitor
from descentlab.critical.diagnosis import examine
from descentlab.critical.verdicts import noise_holds, remedy
from descentlab.curvature import EmpiricalLoss

from helpers import update_steps


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return torch.tensor(data.data / 16, dtype=torch.float32), torch.tensor(data.target)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def test_maximize_true_is_told_as_the_optimizer_climbing(digits):
    X, y = digits
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, maximize=True)
    with torch.no_grad():
        start = F.cross_entropy(model(X), y).item()
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, budget=None)
    update_steps(model, optimizer, X, y, monitor, steps=200, until_stall=True)
    with torch.no_grad():
        reached = F.cross_entropy(model(X), y).item()
    assert reached > 2 * start  # torch's own Adam with maximize=True climbs this loss
    stall = monitor.stalls[0]
    assert stall.verdict == "no_learning_rate"
    assert stall.evidence["rate"]["maximize"] is True
    assert stall.evidence["loss"]["value"] > stall.evidence["loss"]["initial"]
    assert stall.remedy.startswith("set maximize=False")
    assert stall.trials is None or not stall.trials.get("ranking")


def test_maximize_true_under_sgd_is_told_before_the_loss_overflows(digits):
    X, y = digits
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, maximize=True)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, budget=None)
    update_steps(model, optimizer, X, y, monitor, steps=100, until_stall=True)
    stall = monitor.stalls[0]
    assert math.isfinite(stall.loss)
    assert stall.verdict == "no_learning_rate" and stall.remedy.startswith("set maximize=False")
    # where the loss overflowed first (a diagnosis the budget put off), the divergence says the same
    diverged = {"diverged": {"step": 27, "checkpoint_step": 10}, "loss": {"value": 2.4, "initial": 2.4},
                "rate": {"lr": 0.1, "maximize": True, "sharpness": 0.05, "largest_stable_lr": 7.0}}
    assert remedy("diverged", diverged).startswith("set maximize=False")
    assert "the loss rose to non-finite values" in remedy("diverged", diverged)
    assert not remedy("diverged", {**diverged, "rate": {**diverged["rate"], "maximize": False}}).startswith("set")


def test_a_negated_loss_backpropagated_is_told_by_the_gradients_cosine(digits):
    X, y = digits
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, budget=None)
    update_steps(model, optimizer, X, y, monitor, steps=200, until_stall=True, sign=-1.0)
    stall = monitor.stalls[0]
    assert stall.verdict == "no_learning_rate"
    assert stall.evidence["gradient"]["loop_cosine"] <= -0.5
    assert stall.evidence["loss"]["value"] >= 2 * stall.evidence["loss"]["initial"]
    assert stall.remedy.startswith("backpropagate the loss itself, not its negative")


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_loop_cosine_is_that_of_the_gradient_the_loop_left(digits, sign):
    X, y = digits
    model = _mlp()
    sample = EmpiricalLoss(model, F.cross_entropy, [(X[:256], y[:256])])
    model.zero_grad()
    F.cross_entropy(model(X[:256]), y[:256]).backward()  # the same loss: its gradient, by autograd
    for p in model.parameters():
        p.grad.mul_(sign)
    evidence = examine(sample, optimizer=torch.optim.SGD(model.parameters(), lr=0.1)).evidence
    assert evidence["gradient"]["loop_cosine"] == pytest.approx(sign, abs=1e-5)
    torch.manual_seed(3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    loop = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    model_grad = torch.autograd.grad(F.cross_entropy(model(X[:256]), y[:256]), list(model.parameters()))
    expected = F.cosine_similarity(loop, torch.cat([g.reshape(-1) for g in model_grad]), dim=0).item()
    evidence = examine(sample, optimizer=torch.optim.SGD(model.parameters(), lr=0.1)).evidence
    assert evidence["gradient"]["loop_cosine"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("as_module", [True, False])
def test_a_weighted_loss_at_zero_is_a_minimum_that_counts_too_little(digits, as_module):
    X, y = digits
    weight = torch.zeros(10)
    weight[0] = 1.0  # only class 0 counts: the model fits it by calling everything 0
    loss_fn = (nn.CrossEntropyLoss(weight=weight) if as_module
               else (lambda out, t: F.cross_entropy(out, t, weight=weight)))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor = StallMonitor(loss_fn, (X, y), optimizer=optimizer, batch_size=64, budget=None)
    update_steps(model, optimizer, X, y, monitor, steps=300, loss_fn=loss_fn, until_stall=True)
    with torch.no_grad():
        assert loss_fn(model(X), y).item() == 0.0  # every counted sample fitted, as torch computes it
        assert F.cross_entropy(model(X), y).item() > 10  # and the model is useless on the rest
    stall = monitor.stalls[0]
    assert stall.status == "diagnosed"
    assert stall.verdict == "minimum"
    assert "the loss is 0 on the samples it counts" in stall.remedy


def test_noise_holds_nothing_up_at_a_loss_of_zero():
    def evidence(value, initial):
        return {"loss": {"value": value, "initial": initial},
                "rate": {"lr": 0.1, "rule": "gd", "momentum": 0.0}, "noise": {"noise_sq": 1e-4}}
    excess = 0.1 * 1e-4 / 4  # (lr / 4) tr Σ_B, written out
    assert not noise_holds(evidence(0.0, 0.0))  # no fall to weigh against
    assert noise_holds(evidence(-1.0, -1.0 + 50 * excess))  # 2 % of the fall
    assert not noise_holds(evidence(-1.0, -1.0 + 200 * excess))  # 0.5 % of the fall
    assert noise_holds(evidence(50 * excess, 1.0)) and not noise_holds(evidence(200 * excess, 1.0))
    assert math.isclose(excess, 2.5e-6)


def test_momentum_of_one_or_more_is_unstable_at_any_rate(digits):
    X, y = digits
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=1.05)  # torch accepts it
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, budget=None, remedies=True)
    update_steps(model, optimizer, X, y, monitor, steps=200, until_stall=True)
    stall = monitor.stalls[0]
    assert stall.verdict == "unstable"
    assert stall.remedy.startswith("lower the momentum below 1")
    trials = {t["remedy"]: t for t in stall.trials["trials"]}
    assert sorted(trials) == ["keep", "lower-momentum", "rollback"]  # rollback: the loss 3x its best
    assert all(trials[name]["change"]["change"]["momentum"] == 0.9 for name in ("lower-momentum", "rollback"))
    assert stall.trials["ranking"][-1] == "keep"


def test_a_schedule_that_goes_negative_is_told_as_climbing(digits):
    X, y = digits
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / 100)  # below 0 after 100
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, budget=None)
    update_steps(model, optimizer, X, y, monitor, steps=300, until_stall=True, scheduler=scheduler)
    assert optimizer.param_groups[0]["lr"] < 0  # torch's own schedule, past its end
    stall = monitor.stalls[0]
    assert stall.verdict == "no_learning_rate"
    assert stall.remedy.endswith("and a negative rate climbs the loss")
