"""The training engine: a stacked forward equals K separate models, run_steps equals the loop
every tutorial writes, and the step timer measures what it times.

Oracles: plain forward/backward per model, a hand-written torch.optim loop on the same seed,
and ``time.sleep`` of a known length.
"""

import itertools
import math
import time

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.engine import Callback, Change, LoopState, Request
from descentlab.engine.stack import Stack, unstackable_reason
from descentlab.engine.steps import Joint, batch_loss, run_steps
from descentlab.engine.timing import fastest, seconds_per_step

F64 = torch.float64
# float64 reductions over a handful of terms, vmapped kernels vs plain ones: a few ulps apart
RTOL, ATOL = 1e-12, 1e-14


def _mlp(seed, dtype=F64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(2, 3)

    def forward(self, x, z):
        return torch.tanh(self.a(x)) + self.b(z)


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _oracle(models, loss_fn, inputs, targets):
    """Each model's loss and gradients by its own plain forward and backward."""
    losses, grads = [], []
    for model, x, t in zip(models, inputs, targets):
        model.zero_grad()
        loss = loss_fn(model(*x) if isinstance(x, tuple) else model(x), t)
        loss.backward()
        losses.append(loss.detach())
        grads.append(_grads(model))
        model.zero_grad()
    return torch.stack(losses), grads


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_stacked_losses_and_per_member_gradients_are_each_models_own(reduction):
    models = [_mlp(seed) for seed in (1, 2, 3)]
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(3, 8, 4, generator=gen, dtype=F64)
    y = torch.randint(0, 3, (3, 8), generator=gen)

    def loss_fn(out, target):
        return F.cross_entropy(out, target, reduction=reduction)

    expected, expected_grads = _oracle(models, loss_fn, X, y)
    stack = Stack(models, loss_fn)
    leaves = stack.leaves([1, 2])  # two blocks (param groups), joined for the forward
    params = Stack.join(leaves)
    torch.testing.assert_close(stack.losses(params, X, y), expected, rtol=RTOL, atol=ATOL)
    total = stack.total_loss(params, X, y)  # a sum-reduced loss is not a mean: the flat form must not apply
    torch.testing.assert_close(total, expected.sum(), rtol=RTOL, atol=ATOL)
    total.backward()
    for k, grads in enumerate(expected_grads):
        block, row = (0, k) if k < 1 else (1, k - 1)
        for name, grad in grads.items():
            torch.testing.assert_close(leaves[block][name].grad[row], grad, rtol=RTOL, atol=ATOL)


def test_stacking_live_parameters_fills_each_models_own_grad_on_a_shared_batch():
    models = []
    for seed in (4, 5):
        torch.manual_seed(seed)
        models.append(_TwoInputs().double())
    gen = torch.Generator().manual_seed(1)
    inputs = (torch.randn(6, 4, generator=gen, dtype=F64), torch.randn(6, 2, generator=gen, dtype=F64))
    target = torch.randn(6, 3, generator=gen, dtype=F64)
    expected, expected_grads = _oracle(models, F.mse_loss, [inputs] * 2, [target] * 2)
    stack = Stack(models, F.mse_loss)
    losses = stack.losses(stack.stack(), inputs, target, shared=True)
    torch.testing.assert_close(losses, expected, rtol=RTOL, atol=ATOL)
    losses.sum().backward()
    for model, grads in zip(models, expected_grads):
        for name, grad in grads.items():
            torch.testing.assert_close(_grads(model)[name], grad, rtol=RTOL, atol=ATOL)
    outputs = stack.outputs(stack.stack(), inputs, shared=True)
    torch.testing.assert_close(outputs[1], models[1](*inputs), rtol=RTOL, atol=ATOL)


def test_unstack_returns_every_members_parameters_bit_for_bit():
    models = [_mlp(seed, torch.float32) for seed in (7, 8, 9)]
    stack = Stack(models)
    rows = stack.unstack(Stack.join(stack.leaves([2, 1])))
    x = torch.randn(5, 4)
    for model, row in zip(models, rows):
        fresh = _mlp(0, torch.float32)
        fresh.load_state_dict(row)
        assert all(torch.equal(row[name], p) for name, p in model.named_parameters())
        assert torch.equal(fresh(x), model(x))


def test_what_cannot_be_stacked_is_refused_with_the_reason():
    assert unstackable_reason(_mlp(0)) == ""
    assert "buffers" in unstackable_reason(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    assert "dropout" in unstackable_reason(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)))
    assert "recurrent" in unstackable_reason(nn.GRU(2, 3))
    with pytest.raises(ValueError, match="dropout"):
        Stack([nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1))] * 2)
    with pytest.raises(ValueError, match="architecture"):
        Stack([_mlp(0), nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()])
    with pytest.raises(ValueError, match="models"):
        Stack([])
    with pytest.raises(ValueError, match="sizes"):
        Stack([_mlp(0), _mlp(1)]).leaves([1, 2])


def _data(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _shuffled(X, y, batch, seed):
    """Mini-batches of a fresh permutation every epoch, forever."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(X), generator=gen)
        for start in range(0, len(X), batch):
            index = order[start:start + batch]
            yield X[index], y[index]


def test_run_steps_equals_a_hand_written_torch_loop_bit_for_bit():
    X, y = _data()
    steps = 12
    model = _mlp(3, torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, 0.8)
    seen = []

    def norm(loop, loss):
        return float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in loop.model.parameters()])))

    done = run_steps(LoopState(model, opt, scheduler), batch_loss(model, F.cross_entropy), _shuffled(X, y, 16, 5),
                     steps=steps, after_backward=norm,
                     after_step=lambda loop, info: seen.append((info.step, float(info.loss), info.lr,
                                                                 info.after_backward)))
    assert (done.status, done.steps, done.non_finite_step) == ("completed", steps, None)
    assert done.seconds > 0 and math.isfinite(done.seconds)

    plain = _mlp(3, torch.float32)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=0.05)
    plain_scheduler = torch.optim.lr_scheduler.ExponentialLR(plain_opt, 0.8)
    expected = []
    for step, (xb, yb) in zip(range(1, steps + 1), _shuffled(X, y, 16, 5)):
        plain_opt.zero_grad()
        loss = F.cross_entropy(plain(xb), yb)
        loss.backward()
        grad_norm = float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in plain.parameters()])))
        expected.append((step, float(loss.detach()), plain_opt.param_groups[0]["lr"], grad_norm))
        plain_opt.step()
        plain_scheduler.step()
    assert seen == expected
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), plain.parameters()))


def test_a_non_finite_loss_stops_before_its_step_and_names_it():
    X, y = _data()
    batches = [(X[:8], y[:8]), (X[8:16], y[8:16]), (torch.full((8, 4), math.nan), y[16:24]), (X[24:], y[24:])]
    model, plain = _mlp(2, torch.float32), _mlp(2, torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    done = run_steps(LoopState(model, opt), batch_loss(model, F.cross_entropy), batches, stop_on_non_finite=True)
    assert (done.status, done.steps, done.non_finite_step) == ("non_finite", 2, 3)
    assert not torch.isfinite(done.loss)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    for xb, yb in batches[:2]:
        plain_opt.zero_grad()
        F.cross_entropy(plain(xb), yb).backward()
        plain_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), plain.parameters()))


class _HalveThenStop(Callback):
    """Asks for half the rate after step 2 and to stop after step 4; counts its events."""

    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_start(self, loop):
        self.events.append("start")

    def on_step_end(self, loop, loss):
        self.events.append(loop.step)
        if loop.step == 2:
            self.control.request(Request(2, "halve", Change(lr_factor=0.5)))
        if loop.step == 4:
            self.control.request_stop("enough")

    def on_train_end(self, loop):
        self.events.append("end")


def test_callbacks_requests_change_the_next_steps_and_stop_the_loop():
    X, y = _data()
    model, plain = _mlp(6, torch.float32), _mlp(6, torch.float32)
    callback = _HalveThenStop()
    rates = []
    loop = LoopState(model, torch.optim.SGD(model.parameters(), lr=0.1))
    done = run_steps(loop, batch_loss(model, F.cross_entropy), _shuffled(X, y, 10, 1), steps=50,
                     callbacks=[callback], after_step=lambda loop, info: rates.append(info.lr))
    assert (done.status, done.steps, done.stop_reason) == ("stopped", 4, "enough")
    assert callback.events == ["start", 1, 2, 3, 4, "end"]
    assert rates == [0.1, 0.1, 0.05, 0.05]
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    for step, (xb, yb) in zip(range(1, 5), _shuffled(X, y, 10, 1)):
        plain_opt.param_groups[0]["lr"] = 0.1 if step <= 2 else 0.1 * 0.5
        plain_opt.zero_grad()
        F.cross_entropy(plain(xb), yb).backward()
        plain_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), plain.parameters()))


def test_members_with_their_own_optimizers_on_one_stacked_backward_equal_separate_runs():
    X, y = _data(seed=3)
    X = X.double()
    models = [_mlp(seed) for seed in (10, 11)]
    pairs = []
    for model in models:
        opt = torch.optim.Adam(model.parameters(), lr=0.03)
        pairs.append((opt, torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)))
    stack = Stack(models, F.cross_entropy)
    run_steps(LoopState(nn.ModuleList(models), Joint(pairs)),
              lambda batch: stack.losses(stack.stack(), *batch, shared=True).sum(),
              _shuffled(X, y, 8, 2), steps=6)
    for seed, model in zip((10, 11), models):
        plain = _mlp(seed)
        opt = torch.optim.Adam(plain.parameters(), lr=0.03)
        scheduler = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
        for _, (xb, yb) in zip(range(6), _shuffled(X, y, 8, 2)):
            opt.zero_grad()
            F.cross_entropy(plain(xb), yb).backward()
            opt.step()
            scheduler.step()
        for a, b in zip(model.parameters(), plain.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)  # 6 Adam steps of a few-ulp gradient difference


def test_run_steps_refuses_a_bad_step_count():
    model = _mlp(0)
    with pytest.raises(ValueError, match="steps"):
        run_steps(LoopState(model, torch.optim.SGD(model.parameters(), lr=0.1)), lambda b: None, [], steps=-1)


# The clock: sleeping ``t`` takes at least ``t``; a busy shared machine only adds, so the upper
# bounds are loose (they catch a timer that sums instead of taking the minimum or the mean).
SLEEP = 0.01
SLACK = 0.2


def test_fastest_is_the_quickest_of_the_timed_calls():
    lengths = iter([0.08, 3 * SLEEP, SLEEP, 3 * SLEEP])  # the first call is a warm-up, never timed
    seconds = fastest(lambda: time.sleep(next(lengths)), repeats=3, warmup=1)
    assert SLEEP <= seconds < 3 * SLEEP
    assert SLEEP <= fastest(lambda: time.sleep(SLEEP), repeats=2) < SLEEP + SLACK
    with pytest.raises(ValueError, match="repeats"):
        fastest(lambda: None, repeats=0)


class _Sleepy(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        time.sleep(SLEEP)
        return self.linear(x)


def test_seconds_per_step_times_one_step_and_reads_one_batch_per_step():
    X, y = _data()
    model = _Sleepy()
    read = []

    def batches():
        while True:
            read.append(1)
            yield X, y

    seconds = seconds_per_step(model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy, batches(),
                               steps=3, repeats=2, warmup=1)
    assert SLEEP <= seconds < SLEEP + SLACK  # per step, not per timing of 3 steps
    assert len(read) == 1 + 3 * 2
    fixed = seconds_per_step(model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy,
                             itertools.repeat((X, y)), repeats=2)
    assert SLEEP <= fixed < SLEEP + SLACK
