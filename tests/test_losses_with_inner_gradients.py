"""Losses that differentiate inside themselves: a physics-informed residual (u'' of the model's
output in its input) and adversarial training (the input moved along its own gradient). Their
value read without a graph needs gradients on; the monitor must read it, measure its curvature
and leave the user's model and loop as they are."""

import copy

import pytest
import torch
from torch import nn

from helpers import autograd_hessian

from descentlab.critical import StallMonitor
from descentlab.curvature import EmpiricalLoss, HessianOperator, ModelLoss


def _residual(model, x):
    """The Poisson problem u'' = -π² sin(πx) on [0, 1] with u(0) = u(1) = 0, as a PINN's loss."""
    x = x.clone().requires_grad_(True)
    u = model(x)
    (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), x, create_graph=True)
    ends = model(torch.tensor([[0.0], [1.0]], dtype=x.dtype))
    return (d2u + torch.pi**2 * torch.sin(torch.pi * x)).pow(2).mean() + ends.pow(2).mean()


def _pinn(dtype=torch.float64):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)
    return model, torch.linspace(0, 1, 32, dtype=dtype)[:, None]


def test_value_without_a_graph_is_the_loss_and_leaves_no_gradient():
    model, x = _pinn()
    loss = EmpiricalLoss(model, ModelLoss(_residual), x)
    value = loss.loss()
    assert not value.requires_grad
    assert float(value) == float(_residual(model, x).detach())  # the same computation, with a graph
    assert all(p.grad is None for p in model.parameters())


def test_hessian_products_match_torch_autograd_functional_hessian():
    model, x = _pinn()
    exact = autograd_hessian(model, lambda bound: _residual(bound, x))
    op = HessianOperator(model, ModelLoss(_residual), x)
    ours = op @ torch.eye(len(exact), dtype=exact.dtype)
    # float64, a few hundred terms per entry: rounding far below 1e-10 of the Hessian's scale
    torch.testing.assert_close(ours, exact, rtol=0, atol=1e-10 * float(exact.abs().max()))
    assert all(p.grad is None for p in model.parameters())


def _adversarial(model, batch):
    x, t = batch
    x = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), t), x)
    return nn.functional.cross_entropy(model((x + 0.05 * gx.sign()).detach()), t)


def _train_adversarial(model, X, y, steps, watch=False):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    monitor = StallMonitor(ModelLoss(_adversarial), (X, y), optimizer=optimizer, batch_size=32, total_steps=steps,
                           sample_size=64) if watch else None
    g = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        i = torch.randint(0, len(X), (32,), generator=g)
        optimizer.zero_grad()
        loss = _adversarial(model, (X[i], y[i]))
        loss.backward()
        optimizer.step()
        if monitor is not None:
            monitor.update(step, loss.detach(), model)
    return model, monitor


def test_monitor_on_adversarial_training_reads_its_loss_and_leaves_the_run():
    """Before, the first check stopped the loop: the loss read without a graph could not take
    its input's gradient ("element 0 of tensors does not require grad")."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 8, generator=g)
    y = (X[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    plain, _ = _train_adversarial(copy.deepcopy(model), X, y, 100)
    watched, monitor = _train_adversarial(model, X, y, 100, watch=True)
    for a, b in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(a, b)  # the monitored run is the plain one, bit for bit
    assert all(p.grad is not None for p in watched.parameters())  # the loop's own, untouched
    step, tracked = monitor.tracked[-1]
    assert step == 100
    n = monitor.diagnoser.tracked_size
    sample = monitor.sample
    assert tracked == pytest.approx(float(_adversarial(watched, (sample[0][:n], sample[1][:n]))), rel=1e-6)
