"""A weight decay that holds the weights: its pull against the loss's gradient through each
optimizer's own steps (SGD's and Adam's coupled decay, AdamW's decoupled one, per parameter group)
written out from the optimizer's state, the `weight_decay` verdict and its remedy on README's
loop, and the usual decays of healthy runs left alone."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.decay import decay_pull
from descentlab.critical.diagnosis import decay_evidence
from descentlab.critical.verdicts import DECAY_PULL
from descentlab.curvature import EmpiricalLoss
from descentlab.engine import Change, LoopState, apply_change

from helpers import watched_steps


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target)


def _stepped(make_optimizer, steps=5):
    """The MLP 64-16-10 after a few steps on the digits: (model, optimizer, θ, ∇L over all the data)."""
    X, y = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    optimizer = make_optimizer(model)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(X), y).backward()
        optimizer.step()
    optimizer.zero_grad()
    F.cross_entropy(model(X), y).backward()
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    gradient = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
    return model, optimizer, theta, gradient


def _names(model):
    return tuple(n for n, _ in model.named_parameters())


def test_sgds_coupled_pull_per_group_is_the_decays_norm_over_the_gradients():
    """Biases undecayed, weights at 0.3 and 0.05: the pull is ‖d ⊙ θ‖ / ‖∇L‖ (the rate and the
    momentum multiply both alike)."""
    def make(model):
        return torch.optim.SGD([{"params": [model[0].weight], "weight_decay": 0.3},
                                {"params": [model[2].weight], "weight_decay": 0.05},
                                {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0}],
                               lr=0.1, momentum=0.9)

    model, optimizer, theta, gradient = _stepped(make)
    f64 = torch.float64  # the model's order: 0.weight, 0.bias, 2.weight, 2.bias
    d = torch.cat([torch.full((64 * 16,), 0.3, dtype=f64), torch.zeros(16, dtype=f64),
                   torch.full((16 * 10,), 0.05, dtype=f64), torch.zeros(10, dtype=f64)])
    found = decay_pull(optimizer, model, _names(model), theta, gradient)
    assert found["decay"] == 0.3 and not found["decoupled"]
    assert found["pull"] == pytest.approx(float((d * theta).norm() / gradient.norm()), rel=1e-12)


def _adam_steps(optimizer, model):
    """Adam's per-coordinate step lr / (√(v / (1 - β₂ᵗ)) + ε), from its state, in the model's order."""
    group = optimizer.param_groups[0]
    beta2, eps = group["betas"][1], group["eps"]
    out = []
    for p in model.parameters():
        state = optimizer.state[p]
        t = float(state["step"])
        out.append((group["lr"] / ((state["exp_avg_sq"] / (1 - beta2 ** t)).sqrt() + eps)).reshape(-1))
    return torch.cat(out).double()


@pytest.mark.parametrize("kind", ["Adam", "AdamW"])
def test_adams_pull_goes_through_its_preconditioner_and_adamws_decay_does_not(kind):
    """Coupled (Adam): ‖s ⊙ d θ‖ / ‖s ⊙ ∇L‖ with Adam's steps s; decoupled (AdamW):
    ‖lr d θ‖ / ‖s ⊙ ∇L‖, its decay a plain shrink beside the preconditioned step."""
    model, optimizer, theta, gradient = _stepped(
        lambda m: getattr(torch.optim, kind)(m.parameters(), lr=1e-2, weight_decay=0.5))
    X, y = _digits()
    found = decay_evidence(optimizer, EmpiricalLoss(model, F.cross_entropy, (X, y)), gradient)
    s = _adam_steps(optimizer, model)
    decay_step = (1e-2 if kind == "AdamW" else s) * 0.5 * theta
    assert found["decoupled"] == (kind == "AdamW")
    assert found["pull"] == pytest.approx(float(decay_step.norm() / (s * gradient).norm()), rel=1e-5)


def test_no_decay_or_no_gradient_is_no_pull():
    model, optimizer, theta, gradient = _stepped(lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
    assert decay_pull(optimizer, model, _names(model), theta, gradient) is None
    decayed = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    assert decay_pull(decayed, model, _names(model), theta, torch.zeros_like(gradient)) is None


def _readme_loop(make_optimizer, *, steps, remedies=False):
    X, y = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    loop = LoopState(model, make_optimizer(model.parameters()), batch_size=64, n_train=len(X))
    monitor = StallMonitor(F.cross_entropy, (X, y), budget=None, remedies=remedies, apply_remedy=remedies)
    monitor.on_train_start(loop)
    generator = torch.Generator().manual_seed(1)

    def step_loss():
        index = torch.randint(0, len(X), (64,), generator=generator)
        return F.cross_entropy(model(X[index]), y[index])

    watched_steps(loop, monitor, step_loss, steps)
    with torch.no_grad():
        final = F.cross_entropy(model(X), y).item()
    return monitor, loop, final


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.3),
                                  lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=30.0)], ids=["SGD", "AdamW"])
def test_a_decay_that_holds_the_weights_is_named_and_lowering_it_trains(make):
    """SGD momentum 0.9 with decay 0.3 and AdamW with decay 30 hold the digits' loss near chance
    (2.30; read as a saddle and a slow run before); the first stall is `weight_decay` with its pull,
    a trial that lowers or drops the decay wins, and the run ends far below where it stalled."""
    monitor, loop, final = _readme_loop(make, steps=500, remedies=True)
    stall = monitor.stalls[0]
    assert stall.verdict == "weight_decay" and stall.evidence["decay"]["pull"] >= DECAY_PULL
    assert "lower the weight decay" in stall.remedy
    assert stall.remedy_applied in ("lower-decay", "no-decay", "no-decay-reinit")
    decay = stall.evidence["decay"]["decay"]
    assert loop.optimizer.param_groups[0]["weight_decay"] <= decay * 0.01 * (1 + 1e-12)
    assert final < 0.4 * stall.loss


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
                                  lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01)], ids=["SGD", "AdamW"])
def test_the_usual_decays_pull_little_and_raise_no_such_verdict(make):
    monitor, loop, final = _readme_loop(make, steps=600)
    assert all(s.verdict != "weight_decay" for s in monitor.stalls) and final < 0.2
    model = loop.model
    X, y = _digits()
    model.zero_grad()
    F.cross_entropy(model(X), y).backward()
    gradient = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    found = decay_evidence(loop.optimizer, EmpiricalLoss(model, F.cross_entropy, (X, y)), gradient)
    assert math.isfinite(found["pull"]) and found["pull"] < DECAY_PULL


def test_the_decay_factor_scales_every_group_and_a_negative_one_is_refused():
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD([{"params": [model.weight], "weight_decay": 0.2},
                                 {"params": [model.bias], "weight_decay": 0.0}], lr=0.1)
    apply_change(Change(decay_factor=0.01), optimizer)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [pytest.approx(0.002), 0.0]
    with pytest.raises(ValueError, match="decay_factor"):
        Change(decay_factor=-1.0)
