"""A learner's loop that steps the parameters itself (``p -= lr * p.grad`` under ``no_grad``), no
optimizer object to give the monitor: stalled at lr 1e-5 it was told `slow` with "give StallMonitor
the optimizer", nothing it could act on. The rates that are stable there are known without the
rate: the remedy now names 2/λ_max. Oracle: λ_max of the exact Hessian of the monitor's samples
(``torch.func.hessian``, ``torch.linalg.eigvalsh``)."""

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.func import functional_call, hessian
from torch.nn import functional as F

from descentlab.critical import StallMonitor


def _stalled(optimizer_of=None):
    """A digits MLP (1,210 parameters: Lanczos) stalled at a tiny rate: stepped by ``p -= 1e-5 *
    p.grad`` under ``no_grad``, or by ``optimizer_of(model)``, the monitor given it. Its first
    stall, the monitor and the model."""
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    optimizer = optimizer_of(model) if optimizer_of is not None else None
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, total_steps=300)
    generator = torch.Generator().manual_seed(1)
    stall = None
    for step in range(1, 301):
        index = torch.randint(0, len(X), (64,), generator=generator)
        model.zero_grad()
        loss = F.cross_entropy(model(X[index]), y[index])
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        else:
            with torch.no_grad():
                for p in model.parameters():
                    p -= 1e-5 * p.grad
        stall = monitor.update(step, loss.detach(), model)
        if stall is not None:
            break
    return stall, monitor, model


def _exact_top(model, monitor, n):
    """λ_max of the exact Hessian (``torch.func.hessian``, float64) on the monitor's first ``n`` samples."""
    Xs, ys = (t[:n] for t in monitor.sample)
    params = {k: p.detach().double() for k, p in model.named_parameters()}
    model64 = model.double()
    h = hessian(lambda p: F.cross_entropy(functional_call(model64, p, (Xs.double(),)), ys))(params)
    names = list(params)
    dense = torch.cat([torch.cat([h[a][b].reshape(params[a].numel(), params[b].numel()) for b in names], 1)
                       for a in names])
    return float(torch.linalg.eigvalsh(dense)[-1])


def test_a_loop_without_an_optimizer_is_told_the_largest_stable_rate_of_gradient_descent():
    stall, monitor, model = _stalled()
    assert stall is not None and stall.verdict == "slow"
    curvature = stall.evidence["curvature"]
    top = _exact_top(model, monitor, curvature["samples"])
    assert curvature["max_eigenvalue"] == pytest.approx(top, rel=1e-2)
    assert curvature["largest_stable_lr"] == pytest.approx(2 / top, rel=1e-2)
    assert curvature["largest_stable_lr_momentum"] == pytest.approx(3.8 / top, rel=1e-2)
    assert stall.remedy.startswith(f"raise the rate toward {curvature['largest_stable_lr']:.3g}, the largest stable")


def test_an_optimizer_no_rule_models_is_given_no_largest_stable_rate():
    """Adamax (its state an infinity norm, no rule of ours) stalled at lr 1e-7: the stall read its
    rate by gradient descent's rule and told "raise the rate toward 3.46 (the largest stable rate
    here)", a limit that bounds nothing of a per-coordinate step (a user's Lion was told the same).
    Its sharpness is still gradient descent's, lr x lambda_max (oracle: the exact Hessian), and says so."""
    stall, monitor, model = _stalled(lambda model: torch.optim.Adamax(model.parameters(), lr=1e-7))
    assert stall is not None and stall.verdict == "slow"
    rate = stall.evidence["rate"]
    assert rate["unmodelled"] == "Adamax" and rate["largest_stable_lr"] is None
    assert "Adamax is not modelled" in stall.remedy and "toward" not in stall.remedy
    assert "(gradient descent's: Adamax is not modelled)" in stall.summary()
    top = _exact_top(model, monitor, stall.evidence["curvature"]["samples"])
    assert rate["sharpness"] == pytest.approx(1e-7 * top, rel=1e-2)
