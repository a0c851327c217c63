"""The gradient the loop's optimizer steps with against a fresh batch gradient at the same
weights. A loop that never zeroes its gradients (``loss.backward()`` adds into ``.grad``) steps
with the sum of every gradient so far: ``accumulating_gradient``. A loop that clips its
gradients far below their norm steps that much shorter: said in ``slow``'s remedy, and the
trials clip as the loop does. The oracles are the running sum of the batch gradients computed
by hand, torch's own optimizers run with ``zero_grad``, ``clip_grad_norm_``'s formula, and
``gradient_noise``'s estimate at the stall's weights."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.noise import gradient_noise
from descentlab.critical.remedies import Remedy
from descentlab.critical.trials import run_trials
from descentlab.critical.verdicts import ACCUMULATED, ACCUMULATED_GROWTH, SHRUNK, accumulating, decide_without_curvature
from descentlab.engine import LoopState
from descentlab.engine.changes import Change, apply_change
from descentlab.optim import FreshGradients
from descentlab.problems.workloads import get_workload

STEPS, BATCH = 300, 64


def _digits():
    workload = get_workload("digits-mlp")
    return workload.X_train, workload.y_train


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _loop(model, optimizer, *, zero_grad, steps=STEPS, apply_remedy=False, loss_scale=1.0, stop_at_stall=False,
          on_step=None, clip=None):
    """README's loop on the digits, batches of 64 (``zero_grad=False``: the gradients add up);
    ``on_step(step, model, batch)`` sees each step before its backward. Returns the monitor."""
    X, y = _digits()
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=BATCH,
                           remedies=apply_remedy, apply_remedy=apply_remedy)
    loop = LoopState(model, optimizer, batch_size=BATCH, n_train=len(X), total_steps=steps)
    monitor.on_train_start(loop)
    g = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        index = torch.randint(0, len(X), (BATCH,), generator=g)
        if on_step is not None:
            on_step(step, loop, index)
        if zero_grad:
            loop.optimizer.zero_grad()
        (loss_scale * F.cross_entropy(model(X[index]), y[index])).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        loop.optimizer.step()
        loop.step = step
        monitor.on_step_end(loop, None)
        if monitor.control.pending:
            monitor.control.apply(loop)
        if stop_at_stall and monitor.stalls:
            break
    return monitor


def _batch_gradient(model, index):
    """The batch's own gradient at the model's weights now (by hand: autograd.grad, .grad untouched)."""
    X, y = _digits()
    return torch.autograd.grad(F.cross_entropy(model(X[index]), y[index]), list(model.parameters()))


def test_a_loop_without_zero_grad_steps_with_the_running_sum_and_is_named_early():
    """The loop's ``.grad`` is the sum of every batch gradient so far (checked by hand at each
    step); the monitor names the cause within 50 steps, its loop norm the smallest ``.grad`` norm
    since the last check, its growth that over the first check's smallest, and its expected norm
    sqrt(|g|² + tr Σ_B) of ``gradient_noise`` at the stall's weights with the monitor's seed."""
    model = _mlp()
    running, norms = [torch.zeros_like(p) for p in model.parameters()], []

    def check_sum(step, loop, index):
        if step > 1:  # the previous step's .grad, against the running sum of the batch gradients by hand
            assert all(torch.allclose(p.grad, s, rtol=1e-5, atol=1e-6) for p, s in zip(model.parameters(), running))
            norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))))
        for s, g in zip(running, _batch_gradient(model, index)):
            s.add_(g)

    monitor = _loop(model, torch.optim.SGD(model.parameters(), lr=0.01), zero_grad=False, stop_at_stall=True,
                    on_step=check_sum)
    [stall] = monitor.stalls
    grad = stall.evidence["gradient"]
    assert stall.verdict == "accumulating_gradient" and stall.step <= 50 and stall.reason == "stale"
    norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))))
    every = monitor.every
    since_check = norms[stall.step - every:stall.step]  # the steps since the last check
    assert grad["loop_norm"] == pytest.approx(min(since_check), rel=1e-5)
    assert grad["loop_growth"] == pytest.approx(min(since_check) / min(norms[:every]), rel=1e-5)
    sample = monitor.diagnoser.sample_loss(model)
    X, _ = _digits()
    noise = gradient_noise(sample, batch_size=BATCH, n_data=len(X), seed=monitor.seed)
    expected = math.sqrt(noise.grad_norm_sq + noise.noise_sq)
    assert grad["expected_norm"] == pytest.approx(expected, rel=1e-4)
    assert grad["loop_ratio"] >= ACCUMULATED and grad["loop_growth"] >= ACCUMULATED_GROWTH
    assert stall.remedy.startswith("zero the gradients before each backward")
    assert "the loop's gradient" in stall.summary()


def test_a_summing_loop_left_as_it_is_is_told_once():
    """SGD at lr 0.1 without ``zero_grad``, watched only: the sum throws the weights far off (the
    loss ends far above where it began) and later plateaus follow, but the loop still sums its
    gradients: one stall, ``accumulating_gradient``."""
    model = _mlp()
    X, y = _digits()
    with torch.no_grad():
        initial = float(F.cross_entropy(model(X), y))
    monitor = _loop(model, torch.optim.SGD(model.parameters(), lr=0.1), zero_grad=False)
    with torch.no_grad():
        assert float(F.cross_entropy(model(X), y)) > 10 * initial
    assert [s.verdict for s in monitor.stalls] == ["accumulating_gradient"]


def test_the_zero_grad_remedy_steps_as_torch_optim_does_with_zero_grad():
    """With ``apply_remedy`` the loop is given :class:`FreshGradients` around its optimizer, state
    forgotten: from the stall on, its weights are those of a twin trained from the same weights by
    ``torch.optim.Adam`` with a fresh state and ``zero_grad`` before each backward (the oracle),
    and it is told once."""
    model = _mlp()
    twin, twin_opt, pending = None, None, []

    def follow(step, loop, index):
        nonlocal twin, twin_opt
        if twin is None and isinstance(loop.optimizer, FreshGradients):
            twin = _mlp()
            twin.load_state_dict(model.state_dict())
            twin_opt = torch.optim.Adam(twin.parameters(), lr=1e-3)
        if twin is not None:
            X, y = _digits()
            twin_opt.zero_grad()
            F.cross_entropy(twin(X[index]), y[index]).backward()
            twin_opt.step()
            pending.append(step)

    monitor = _loop(model, torch.optim.Adam(model.parameters(), lr=1e-3), zero_grad=False, apply_remedy=True,
                    steps=150, on_step=follow)
    assert [(s.verdict, s.remedy_applied) for s in monitor.stalls] == [("accumulating_gradient", "zero-grad")]
    assert len(pending) >= 100
    assert all(p.grad is None for p in model.parameters())  # forgotten after each step
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_healthy_loops_a_constantly_scaled_loss_and_unstepped_sums_are_not_named():
    """The same loop with ``zero_grad`` raises no alarm; a loss scaled by 64 (a sum where the
    monitor's loss is a mean, the rate divided to match) makes the loop's gradient 64x the fresh
    one from the first step, but it does not grow; an optimizer given the first layer only zeroes
    only its gradients, so the head's add up, but nothing steps with them: none is
    ``accumulating_gradient``."""
    model = _mlp()
    assert _loop(model, torch.optim.SGD(model.parameters(), lr=0.05), zero_grad=True).stalls == []
    model = _mlp()
    scaled = _loop(model, torch.optim.SGD(model.parameters(), lr=0.05 / 64), zero_grad=True, loss_scale=64.0)
    assert all(s.verdict != "accumulating_gradient" for s in scaled.stalls)
    model = _mlp()
    first = _batch_gradient(model, torch.arange(BATCH))[2].norm()
    partial = _loop(model, torch.optim.SGD(model[0].parameters(), lr=0.05), zero_grad=True, steps=150)
    assert model[2].weight.grad.norm() >= 20 * first  # the head's sum, never stepped with
    assert all(s.verdict != "accumulating_gradient" for s in partial.stalls)


def test_the_rule_needs_both_the_ratio_and_the_growth_and_comes_after_a_rate_of_zero():
    def evidence(ratio, growth, lr=0.1, peak=0.1):
        return {"gradient": {"loop_ratio": ratio, "loop_growth": growth}, "rate": {"lr": lr, "peak_lr": peak},
                "loss": {"value": 1.0, "initial": 2.0, "best": 1.0}}

    assert accumulating(evidence(ACCUMULATED, ACCUMULATED_GROWTH))
    assert not accumulating(evidence(ACCUMULATED * 0.99, 100.0))  # grown, but near a fresh batch gradient
    assert not accumulating(evidence(100.0, ACCUMULATED_GROWTH * 0.99))  # far above, but from the start
    assert not accumulating({"gradient": {"loop_ratio": None, "loop_growth": None}})
    assert decide_without_curvature(evidence(50.0, 50.0)) == "accumulating_gradient"
    assert decide_without_curvature(evidence(50.0, 50.0, lr=0.0)) == "no_learning_rate"


def test_fresh_gradients_keeps_the_base_state_and_the_norms_it_forgot():
    """The wrapper steps its base as it is, then sets every gradient to ``None``, keeping their
    norms; ``apply_change`` wraps it (state forgotten with ``fresh_state``); its state round-trips."""
    torch.manual_seed(0)
    w = torch.randn(5, requires_grad=True)
    reference = w.detach().clone().requires_grad_(True)
    base = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    optimizer = apply_change(Change(fresh_gradients=True, fresh_state=True), base).optimizer
    oracle = torch.optim.SGD([reference], lr=0.1, momentum=0.9)
    for _ in range(3):
        for param, opt in ((w, optimizer), (reference, oracle)):
            opt.zero_grad()
            (param ** 3).sum().backward()
        norm = float(w.grad.norm())
        optimizer.step()
        oracle.step()
        assert w.grad is None and float(optimizer.last_norms[0]) == pytest.approx(norm)
        assert torch.allclose(w, reference)
    assert isinstance(optimizer, FreshGradients)
    again = FreshGradients(torch.optim.SGD([w], lr=0.1, momentum=0.9))
    again.load_state_dict(optimizer.state_dict())
    assert torch.equal(again.state[w]["momentum_buffer"], optimizer.state[w]["momentum_buffer"])
    assert Change.from_dict(Change(fresh_gradients=True).to_dict()).fresh_gradients



def test_a_loop_clipping_far_below_the_gradient_is_slow_and_told_so_and_its_trials_clip_too():
    """``clip_grad_norm_(..., 1e-3)`` on gradients of norm ~0.3: the loss does not move, the verdict
    is ``slow``, its evidence the loop's largest gradient since the last check, which is the clip's
    own formula max_norm · t / (t + 1e-6) (t ~0.3, so 1e-3 to 1e-8), against ``gradient_noise``'s
    batch norm at the stall's weights; its remedy names the clipping. With ``apply_remedy`` the
    trials clip as the loop does, so a remedy the clip cannot hold back (Adam, invariant to the
    gradient's scale) wins where plain momentum would have, and the run ends far below the run
    left alone."""
    model = _mlp()
    monitor = _loop(model, torch.optim.SGD(model.parameters(), lr=0.1), zero_grad=True, clip=1e-3,
                    stop_at_stall=True)
    [stall] = monitor.stalls
    grad = stall.evidence["gradient"]
    assert stall.verdict == "slow" and stall.step <= 30
    assert grad["loop_high"] == pytest.approx(1e-3, rel=1e-5)
    sample = monitor.diagnoser.sample_loss(model)
    X, _ = _digits()
    noise = gradient_noise(sample, batch_size=BATCH, n_data=len(X), seed=monitor.seed)
    assert grad["loop_high_ratio"] == pytest.approx(1e-3 / math.sqrt(noise.grad_norm_sq + noise.noise_sq), rel=1e-4)
    assert grad["loop_high_ratio"] <= SHRUNK
    assert "raise the gradient clipping's threshold" in stall.remedy
    left = _mlp()
    _loop(left, torch.optim.SGD(left.parameters(), lr=0.1), zero_grad=True, clip=1e-3)
    fixed = _mlp()
    repaired = _loop(fixed, torch.optim.SGD(fixed.parameters(), lr=0.1), zero_grad=True, clip=1e-3,
                     apply_remedy=True)
    assert repaired.stalls[0].trials["winner"] == "adam" and repaired.stalls[0].remedy_applied == "adam"
    X, y = _digits()
    with torch.no_grad():
        assert float(F.cross_entropy(fixed(X), y)) < 0.25 * float(F.cross_entropy(left(X), y))


def test_trials_clip_their_gradients_as_told():
    """``run_trials(clip_to=c)``, full batch, least squares: the ``keep`` trial's losses are those of
    gradient descent with the gradient clipped to norm c by hand (the oracle: ``clip_grad_norm_``'s
    scale min(1, c / (|g| + 1e-6)) written out)."""
    torch.manual_seed(0)
    X, y = torch.randn(64, 5, dtype=torch.float64), torch.randn(64, 1, dtype=torch.float64)
    model = nn.Linear(5, 1).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    keep = Remedy("keep", "carry on")
    result = run_trials(model, optimizer, F.mse_loss, (X, y), [keep, keep], steps=10, batch_size=None,
                        record_every=1, clip_to=0.05)
    w, b = model.weight.detach().clone(), model.bias.detach().clone()
    losses = [float(F.mse_loss(X @ w.T + b, y))]
    for _ in range(10):
        w_, b_ = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        gw, gb = torch.autograd.grad(F.mse_loss(X @ w_.T + b_, y), (w_, b_))
        norm = torch.sqrt(gw.square().sum() + gb.square().sum())
        scale = min(1.0, 0.05 / (float(norm) + 1e-6))
        w, b = w - 0.1 * scale * gw, b - 0.1 * scale * gb
        losses.append(float(F.mse_loss(X @ w.T + b, y)))
    assert list(result.trials[0].losses) == pytest.approx(losses, rel=1e-10)
