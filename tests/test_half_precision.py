"""A model converted to half precision (``model.bfloat16()``, ``model.half()``), not run under
autocast. What the data layer measures is the float32 function at the model's point (a bfloat16
loss is quantized, 0.0156 apart at 2.3, and a product in it is noise), the model left as it was;
and where its steps are below half the spacing of the numbers around its weights they round
away, which the monitor names (``no_learning_rate``, "keep the weights in float32").
Oracles: torch.func on a float32 copy of the model (loss, gradient, exact Hessian and
``torch.linalg.eigh``); a linear model whose weights sit at two magnitudes, so that which steps
round away follows from bfloat16's spacing in closed form."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.curvature import EmpiricalLoss, HessianOperator


def _float32_oracle(model, X, y):
    """Loss, gradient and Hessian of the float32 copy of ``model`` at its (half-precision) point."""
    twin = copy.deepcopy(model).float()
    names = [n for n, _ in twin.named_parameters()]
    shapes = [p.shape for _, p in twin.named_parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in twin.parameters()])

    def loss(flat):
        parts, at = {}, 0
        for name, shape in zip(names, shapes):
            parts[name] = flat[at:at + shape.numel()].view(shape)
            at += shape.numel()
        return F.cross_entropy(functional_call(twin, parts, (X.float(),)), y)

    return loss(flat0), grad(loss)(flat0), hessian(loss)(flat0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_is_measured_in_float32_at_its_point_and_left_as_it_was(dtype):
    torch.manual_seed(0)
    X, y = torch.randn(40, 5).to(dtype), torch.randint(0, 3, (40,))  # the data the model is fed
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)
    before = [p.detach().clone() for p in model.parameters()]
    value, gradient, H = _float32_oracle(model, X, y)

    measured = EmpiricalLoss(model, F.cross_entropy, (X, y))
    assert measured.dtype == torch.float32 and measured.params_dtype == dtype
    loss, g = measured.loss_and_gradient()
    tol = 100 * torch.finfo(torch.float32).eps
    assert abs(float(loss) - float(value)) <= tol * abs(float(value))
    assert torch.allclose(g, gradient, rtol=1e-4, atol=tol)
    assert abs(float(measured.live_loss()) - float(value)) <= tol * abs(float(value))
    # a bfloat16 forward would be off by its own spacing (2^-8 of the loss), far beyond float32's
    with torch.no_grad():
        assert abs(float(F.cross_entropy(model(X), y)) - float(value)) > tol * abs(float(value))

    op = HessianOperator(model, F.cross_entropy, (X, y))
    dense = op @ torch.eye(op.n_params, dtype=op.dtype)
    top = torch.linalg.eigvalsh(H.double())
    eigenvalues = torch.linalg.eigvalsh(((dense + dense.T) / 2).double())
    assert torch.allclose(eigenvalues, top, atol=1e-4 * float(top.abs().max()))
    assert all(p.dtype == dtype and torch.equal(p, b) for p, b in zip(model.parameters(), before))


def _two_magnitudes(dtype):
    """A linear model with six weights at 1.0 on inputs of 0.01 and two at 2^-20 on inputs of
    1e-4, target 0: the prediction is 0.06, so the gradient entries are 6e-4 and 6e-6 and at rate 1
    so are the steps. 6e-4 is below half of bfloat16's spacing at 1.0 (2^-8 = 0.0039: it rounds
    away); 6e-6 is above half of it at the small weights (under 2^-17 = 7.6e-6 while they stay
    below 2^-10, ~170 steps: it registers) and moves the loss by ~1e-9 a step, so the loss is
    flat. Of the eight entries with a gradient, six stand still: 0.75."""
    model = nn.Linear(8, 1, bias=False).to(dtype)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0] * 6 + [2.0 ** -20] * 2]))
    X = torch.tensor([[0.01] * 6 + [1e-4] * 2]).repeat(64, 1).to(dtype)
    return model, X, torch.zeros(64, 1, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_steps_that_round_away_in_bfloat16_are_named_and_float32_moves_every_weight(dtype):
    model, X, y = _two_magnitudes(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    monitor = StallMonitor(F.mse_loss, (X, y), optimizer=optimizer, batch_size=64, max_stalls=1)
    for step in range(1, 151):
        optimizer.zero_grad()
        loss = F.mse_loss(model(X), y)
        loss.backward()
        optimizer.step()
        if monitor.update(step, loss.detach(), model) is not None:
            break
    if dtype == torch.float32:
        assert all(s.verdict != "no_learning_rate" for s in monitor.stalls)
        assert all(s.evidence.get("precision") is None for s in monitor.stalls)
        return
    stall = monitor.stalls[0]
    precision = stall.evidence["precision"]
    assert stall.verdict == "no_learning_rate"
    assert (precision["dtype"], precision["entries"], precision["still"]) == ("bfloat16", 8, 0.75)
    assert stall.remedy.startswith("keep the weights in float32")
    assert stall.evidence["data"]["precision"] == "float32 (the model's bfloat16 upcast; autocast off)"
