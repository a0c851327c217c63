"""A model frozen by mistake: only the output bias trains, and the loss stops at chance. The
point is a minimum of the parameters that train, so ``minimum`` is right; its remedy says that
few of the model's parameters train, not "restart from another seed". Oracles: the gradient and
the least loss over the trainable parameters (convex there: found by L-BFGS) and its exact Hessian
(torch.func), and the parameter counts of the model."""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.func import functional_call, hessian
from torch.nn import functional as F

from descentlab.critical import StallMonitor


def test_a_model_frozen_but_for_its_output_bias_stops_at_a_minimum_of_that_bias_and_is_told_so():
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    for name, p in model.named_parameters():
        p.requires_grad_(name == "4.bias")
    optimizer = torch.optim.Adam([model[4].bias], lr=1e-2)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, max_stalls=1)
    generator = torch.Generator().manual_seed(1)
    snapshot = None
    for step in range(1, 401):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(model(X[index]), y[index]).backward()
        optimizer.step()
        if monitor.update(step, None, model) is not None:
            snapshot = model[4].bias.detach().clone()
            break
    assert snapshot is not None
    stall = monitor.stalls[0]
    total = sum(p.numel() for p in model.parameters())
    assert stall.verdict == "minimum"
    assert (stall.evidence["data"]["trainable"], stall.evidence["data"]["parameters"]) == (10, total)
    assert "only 10 of its 8,970 parameters have requires_grad" in stall.remedy

    # the oracle: the loss is convex in the bias (cross-entropy of logits affine in it), so its least
    # value over the bias is found by L-BFGS; the stall's loss is there within the batches' noise, and
    # the exact Hessian in the bias there has no negative eigenvalue beyond float64's rounding
    model.double()
    X64 = X.double()

    def loss_of(bias):
        return F.cross_entropy(functional_call(model, {"4.bias": bias}, (X64,)), y)

    bias = snapshot.double()
    best = bias.detach().clone().requires_grad_()
    solver = torch.optim.LBFGS([best], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        solver.zero_grad()
        value = loss_of(best)
        value.backward()
        return value

    solver.step(closure)
    least = loss_of(best).item()
    at_stall = loss_of(bias).item()
    assert least <= at_stall <= least + 0.01 * least
    assert abs(stall.loss - at_stall) < 0.02 * least  # the monitor's sample against all the data
    eigenvalues = torch.linalg.eigvalsh(hessian(loss_of)(best.detach()))
    assert eigenvalues.min() > -1e-12
