"""A model whose backward is not differentiated again: a ReLU written as a custom
``torch.autograd.Function`` under ``@once_differentiable``. Double backward through it raised
nothing and gave Hessian-vector products without the second-order terms through it; a stalled
run of it waited for a Lanczos estimate that never settled, told "skipped (budget)" with the budget
unspent. The products are now checked once against the gradient's change, and such a model gets
the verdicts that need no curvature and, for the rest, says why not. Oracles: ``torch.func``'s
forward-over-reverse product of the same network written with ``torch.relu``; the verdicts of
the plain twin. Also told apart: a model that is no one function of its parameters (dropout drawn
from NumPy's generator, which the data layer does not seed), and ReLUs on their kinks at the start."""

import copy
import logging
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call, grad, jvp
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from descentlab.critical import StallMonitor
from descentlab.critical.product_check import (PRODUCTS_AGREE, check_products, gradient_unsteady, product_error,
                                              weight_normed)
from descentlab.curvature import HessianOperator


class OnceRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0).to(g.dtype)


class Net(nn.Module):
    def __init__(self, once: bool) -> None:
        super().__init__()
        self.once = once
        self.a, self.b = nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        h = self.a(x)
        return self.b(OnceRelu.apply(h) if self.once else torch.relu(h))


def _digits(n=None):
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    return (X, y) if n is None else (X[:n], y[:n])


def _pair():
    torch.manual_seed(0)
    once, plain = Net(True), Net(False)
    plain.load_state_dict(once.state_dict())
    return once, plain


def test_the_products_of_a_once_differentiable_model_are_not_its_hessians_and_the_check_says_so():
    once, plain = _pair()
    X, y = _digits(200)
    v = torch.randn(sum(p.numel() for p in plain.parameters()), generator=torch.Generator().manual_seed(1))
    params = {k: p.detach() for k, p in plain.named_parameters()}
    split = dict(zip(params, torch.split(v, [p.numel() for p in params.values()])))
    tangent = {k: split[k].view_as(p) for k, p in params.items()}
    loss = lambda p: F.cross_entropy(functional_call(plain, p, (X,)), y)  # noqa: E731
    _, hv = jvp(grad(loss), (params,), (tangent,))
    oracle = torch.cat([t.flatten() for t in hv.values()])
    torch.testing.assert_close(HessianOperator(plain, F.cross_entropy, (X, y)) @ v, oracle, rtol=1e-4, atol=1e-5)
    wrong = HessianOperator(once, F.cross_entropy, (X, y)) @ v
    assert float((wrong - oracle).norm()) > 0.3 * float(oracle.norm())  # silently not the Hessian's
    assert product_error(once, F.cross_entropy, (X[:2], y[:2])) > 0.3
    assert product_error(plain, F.cross_entropy, (X[:2], y[:2])) < 1e-6


@pytest.mark.parametrize("scale", [1.0, 1e-6])
def test_right_products_agree_near_the_origin_and_through_time(scale):
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(256, 10))
    with torch.no_grad():
        for p in conv.parameters():
            p.mul_(scale)  # the zoo's saddle at the origin: the curvature moves on the weights' own scale
    X, y = _digits(2)
    assert product_error(conv, F.cross_entropy, (X.view(-1, 1, 8, 8), y)) < 1e-3

    class Rows(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.LSTM(8, 16, batch_first=True), nn.Linear(16, 10)

        def forward(self, x):
            return self.head(self.rnn(x.view(-1, 8, 8))[0][:, -1])

    assert product_error(Rows(), F.cross_entropy, (X, y)) < 1e-3


def _stalled(model, lr, caplog, steps=60):
    X, y = _digits()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, total_steps=steps)
    generator = torch.Generator().manual_seed(1)
    with caplog.at_level(logging.WARNING, logger="descentlab"):
        for step in range(1, steps + 1):
            index = torch.randint(0, len(X), (64,), generator=generator)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(X[index]), y[index])
            loss.backward()
            optimizer.step()
            monitor.update(step, loss.detach(), model)
    return monitor.stalls


def test_a_stalled_once_differentiable_model_says_why_there_is_no_curvature_verdict(caplog):
    once, plain = _pair()
    stall = _stalled(once, 1e-5, caplog)[0]
    assert stall.status.startswith("failed: the Hessian-vector products through this model are not its Hessian's")
    assert stall.evidence["products"]["error"] > PRODUCTS_AGREE
    twin = _stalled(plain, 1e-5, caplog)[0]
    assert twin.status == "diagnosed" and twin.verdict == "slow"  # what the products would have been for


def test_verdicts_that_need_no_curvature_are_still_given(caplog):
    once, _ = _pair()
    stall = _stalled(once, 0.0, caplog)[0]
    assert stall.status == "diagnosed" and stall.verdict == "no_learning_rate"


class NumpyDropout(Net):
    """Dropout whose mask NumPy draws, in every mode: the model is another function at every call."""

    def forward(self, x):
        h = torch.relu(self.a(x))
        mask = torch.from_numpy((np.random.rand(*h.shape) > 0.3).astype(np.float32)).to(h.dtype)
        return self.b(h * mask / 0.7)


def test_a_model_that_is_no_one_function_is_told_apart_from_a_once_differentiable_one(caplog):
    """Both give products off the gradient's change; only the first gives two gradients at one
    point that differ. Oracle: the twin without the NumPy mask, whose gradient repeats exactly."""
    torch.manual_seed(0)
    drawn, (_, plain) = NumpyDropout(False), _pair()
    X, y = _digits(2)
    np.random.seed(0)
    assert gradient_unsteady(drawn, F.cross_entropy, (X, y)) > 0.01
    assert gradient_unsteady(plain, F.cross_entropy, (X, y)) == 0.0
    stall = _stalled(drawn, 1e-5, caplog, steps=200)[0]  # its noisy loss is read creeping at step 150
    assert stall.status.startswith("failed: this model is no one function of its parameters")
    assert stall.evidence["products"]["unsteady"] > PRODUCTS_AGREE
    once, _ = _pair()
    assert _stalled(once, 1e-5, caplog)[0].status.startswith("failed: the Hessian-vector products through")


def test_right_products_agree_where_relus_sit_on_their_kinks_at_the_start():
    """A CNN whose convolution has no bias, into batch-norm at its initial statistics: at the
    digits' zero border every unit's input is batch-norm's bias, exactly 0, so the gradient jumps at
    the start itself, and the central difference there read the products 1 off at every step size
    (the shrunken ResNet of ``bench/scale.py`` at step 0 was told "failed" instead of its saddle).
    The check reads a thousandth of ``‖θ‖`` away. Oracle: the gradient's central difference there;
    that the border is exactly on the kink is read from the model's own layers."""
    X, y = _digits(2)
    X = X.view(-1, 1, 8, 8)
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(256, 10)).eval()
    with torch.no_grad():
        border = cnn[1](cnn[0](X))[:, :, 0, 0]
    assert torch.equal(border, torch.zeros_like(border))  # on the kink
    assert product_error(cnn, F.cross_entropy, (X, y)) < 1e-6


class Checkpointed(Net):
    """The hidden layer inside ``torch.utils.checkpoint``: re-entrant (a custom autograd.Function whose
    backward is not differentiated again) or not (autograd's own saved-tensor hooks)."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__(False)
        self.reentrant = reentrant

    def forward(self, x):
        hidden = lambda x: torch.relu(self.a(x))  # noqa: E731
        return self.b(checkpoint(hidden, x.requires_grad_(self.reentrant), use_reentrant=self.reentrant))


def test_a_reentrant_checkpoint_drops_the_second_derivatives_and_autograds_own_keeps_them():
    X, y = _digits(2)
    torch.manual_seed(0)
    plain = Net(False)
    errors = {}
    for reentrant in (True, False):
        model = Checkpointed(reentrant)
        model.load_state_dict(plain.state_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own note on a re-entrant checkpoint's inputs
            errors[reentrant] = product_error(model, F.cross_entropy, (X, y))
    assert errors[True] > 0.3  # silently not the Hessian's: what the failed diagnosis names
    assert errors[False] < 1e-6


class HandNormed(nn.Module):
    """The hidden layer weight-normalised by elementary operations: ``v · (g / ‖v‖)`` per row."""

    def __init__(self, g, v, bias, head):
        super().__init__()
        self.g, self.v, self.bias, self.head = nn.Parameter(g), nn.Parameter(v), nn.Parameter(bias), head

    def forward(self, x):
        weight = self.v * (self.g / self.v.norm(dim=1, keepdim=True))
        return self.head(torch.relu(F.linear(x, weight, self.bias)))


def test_torchs_weight_norm_drops_the_norms_second_derivatives_and_the_failure_names_it(caplog):
    X, y = _digits(2)
    torch.manual_seed(0)
    fused = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(64, 32)), nn.ReLU(), nn.Linear(32, 10))
    original = fused[0].parametrizations.weight
    hand = HandNormed(original.original0.detach().clone(), original.original1.detach().clone(),
                      fused[0].bias.detach().clone(), copy.deepcopy(fused[2]))
    with torch.no_grad():
        torch.testing.assert_close(hand(X), fused(X))  # one function
    assert product_error(fused, F.cross_entropy, (X, y)) > 0.01
    assert product_error(hand, F.cross_entropy, (X, y)) < 1e-6
    assert weight_normed(fused) == ["0"] and weight_normed(hand) == []
    assert weight_normed(nn.utils.weight_norm(nn.Linear(3, 3))) == [""]  # the old style too
    stall = _stalled(fused, 1e-5, caplog)[0]
    assert stall.status.startswith("failed") and "weight_norm ('0')" in stall.status


def test_a_relu_on_its_kink_at_the_one_point_read_is_no_wrong_product_at_a_second():
    """Inputs chosen so that a ReLU's input is 0 exactly where the check reads its first point (θ
    plus a thousandth of ‖θ‖ along the first random direction of seed 0, as the check draws it):
    the central difference straddles the kink there and is off by ~1 (the gradient jumps); the
    second point is a thousandth away from the kink, where the products are right. The check keeps
    the smaller; a once-differentiable ReLU stays off at both."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 1), nn.ReLU(), nn.Linear(1, 1))
    theta = torch.cat([p.detach().flatten() for p in model.parameters()]).double()
    generator = torch.Generator().manual_seed(0)
    _, away = (torch.randn(theta.numel(), generator=generator, dtype=torch.float64) for _ in range(2))
    point = theta + 1e-3 * float(theta.norm()) * away / away.norm()
    w, b = point[:2], point[2]
    X = torch.tensor([[float(-(b + w[1]) / w[0]), 1.0]])  # w·x + b = 0 at that point
    y = torch.tensor([[5.0]])
    data = (X, y)
    assert product_error(model, F.mse_loss, data, seed=0) > 0.5
    assert product_error(model, F.mse_loss, data, seed=1) < 1e-6
    error, unsteady = check_products(model, F.mse_loss, data)
    assert error < 1e-6 and unsteady is None
    once, _ = _pair()
    X, y = _digits(2)
    error, _ = check_products(once, F.cross_entropy, (X, y))
    assert error > 0.3
