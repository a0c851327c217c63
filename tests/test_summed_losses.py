"""A loss summed over its batch (``reduction="sum"``). The monitor read it over its sample of 512,
eight times a batch of 64, so the curvature it measured was eight times what each step
differentiates and the rate it named ("raise the rate toward 0.0128, the largest stable rate
here") eight times too small. Such a loss is now read as a batch of the loop's size sums it, and
without a batch size a warning says why the rates would be off. Oracles: the exact Hessian of
the loss written out here (``torch.func.hessian``, float64), the loss by hand, and the
reductions of losses whose reduction is known."""

import warnings

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.func import functional_call, hessian
from torch.nn import functional as F

from helpers import update_steps

from descentlab.critical import StallMonitor
from descentlab.curvature import EmpiricalLoss
from descentlab.curvature.losses import ModelLoss, per_batch

BATCH = 64


def _summed(out, target):
    return F.cross_entropy(out, target, reduction="sum")


def _digits():
    digits = load_digits()
    return torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)


def _stalled(batch_size=BATCH):
    X, y = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)
    monitor = StallMonitor(_summed, (X, y), optimizer=optimizer, batch_size=batch_size, total_steps=300)
    update_steps(model, optimizer, X, y, monitor, steps=300, loss_fn=_summed, until_stall=True)
    return monitor, model


def test_a_summed_loss_is_read_as_a_batch_of_the_loops_size_sums_it():
    monitor, model = _stalled()
    stall = monitor.stalls[0]
    assert stall.verdict == "slow"
    curvature = stall.evidence["curvature"]
    n = curvature["samples"]
    Xs, ys = (t[:n].double() if t.is_floating_point() else t[:n] for t in monitor.sample)
    params = {k: p.detach().double() for k, p in model.named_parameters()}
    model64 = model.double()
    # the loss each step differentiates: a sum over a batch of 64, here its mean over n samples times 64
    h = hessian(lambda p: BATCH * F.cross_entropy(functional_call(model64, p, (Xs,)), ys))(params)
    names = list(params)
    dense = torch.cat([torch.cat([h[a][b].reshape(params[a].numel(), params[b].numel()) for b in names], 1)
                       for a in names])
    top = float(torch.linalg.eigvalsh(dense)[-1])
    assert curvature["max_eigenvalue"] == pytest.approx(top, rel=1e-2)
    assert stall.evidence["rate"]["largest_stable_lr"] == pytest.approx(2 / top, rel=1e-2)
    step, tracked = monitor.tracked[-1]
    k = monitor.diagnoser.tracked_size
    with torch.no_grad():
        by_hand = BATCH * float(F.cross_entropy(model64(monitor.sample[0][:k].double()), monitor.sample[1][:k]))
    assert tracked == pytest.approx(by_hand, rel=1e-4)


def test_without_a_batch_size_a_summed_loss_is_warned_about_and_a_mean_is_not():
    X, y = _digits()
    model = nn.Linear(64, 10)
    for loss_fn, warned in ((_summed, True), (F.cross_entropy, False)):
        monitor = StallMonitor(loss_fn, (X, y))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            monitor.update(1, 1.0, model)
        said = [w for w in caught if "sums over its batch" in str(w.message)]
        assert bool(said) == warned
        if warned:
            assert "pass batch_size" in str(said[0].message)


def test_per_batch_is_a_mean_times_the_batch_size_and_the_reduction_is_measured():
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(12, 3, generator=g), torch.randint(0, 3, (12,), generator=g)
    scaled = per_batch(_summed, 8)
    for n in (3, 12):
        assert float(scaled(out[:n], y[:n])) == pytest.approx(8 * float(F.cross_entropy(out[:n], y[:n])), rel=1e-6)
    model_loss = per_batch(ModelLoss(lambda model, batch: model(batch).sum()), 8)
    batch = torch.randn(5, 2, generator=g)
    assert float(model_loss(lambda x: x, batch)) == pytest.approx(8 * float(batch.sum()) / 5, rel=1e-6)
    model = nn.Linear(3, 3)
    weighted = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 5.0]))
    for loss_fn, expected in ((F.cross_entropy, "mean"), (_summed, "sum"), (weighted, "neither"),
                              (scaled, "mean")):
        assert EmpiricalLoss(model, loss_fn, (out, y)).measured_reduction() == expected


def test_a_loaders_batch_size_is_the_loops_when_none_is_given():
    X, y = _digits()
    torch.manual_seed(0)
    model = nn.Linear(64, 10)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=32, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    monitor = StallMonitor(_summed, loader)
    assert monitor.batch_size == 32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the batch size is known
        for step in range(1, monitor.every + 1):
            monitor.update(step, 1.0, model)
    k = monitor.diagnoser.tracked_size
    with torch.no_grad():
        by_hand = 32 * float(F.cross_entropy(model(monitor.sample[0][:k]), monitor.sample[1][:k]))
    assert monitor.tracked[-1][1] == pytest.approx(by_hand, rel=1e-5)
    assert StallMonitor(_summed, loader, batch_size=8).batch_size == 8  # the loop's, where given
