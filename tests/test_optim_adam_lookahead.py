"""Lookahead's sync folded into Adam's step: bit for bit torch's fused Adam, then torch's lerp_ and copy_."""

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from descentlab.optim import Lookahead, adam_lookahead, cpu_kernels  # noqa: E402

SIZES = (1, 7, 33, 200, 1000)  # tails of every length up to a register, and chunks that cut tensors
STEPS = 12


def draws(dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    start = [torch.randn(n, generator=generator, dtype=dtype) for n in SIZES]
    grads = [[torch.randn(n, generator=generator, dtype=dtype) for n in SIZES] for _ in range(STEPS)]
    return start, grads


def paper_sync(slow, params, alpha):
    """Zhang et al.'s sync, phi <- phi + alpha (theta - phi); theta <- phi, with torch's lerp_ and copy_."""
    with torch.no_grad():
        for s, p in zip(slow, params):
            s.lerp_(p, alpha)
            p.copy_(s)


def reference(start, grads, k, alpha, groups=None, **adam):
    """torch's fused Adam, then the paper's sync with torch's own lerp_ and copy_ every k steps."""
    params = [torch.nn.Parameter(p.clone()) for p in start]
    opt = torch.optim.Adam(groups(params) if groups else params, fused=True, **adam)
    slow = [p.detach().clone() for p in params]
    for t, step_grads in enumerate(grads, start=1):
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.clone()
        opt.step()
        if t % k == 0:
            paper_sync(slow, params, alpha)
    return params, slow, opt


def ours(start, grads, k, alpha, groups=None, **adam):
    params = [torch.nn.Parameter(p.clone()) for p in start]
    opt = Lookahead(torch.optim.Adam(groups(params) if groups else params, fused=True, **adam), k=k, alpha=alpha)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.clone()
        opt.step()
    return params, [opt.slow[p] for p in params], opt.base


def assert_same_bits(a, b):
    (params_a, slow_a, opt_a), (params_b, slow_b, opt_b) = a, b
    for pa, pb, sa, sb in zip(params_a, params_b, slow_a, slow_b):
        assert torch.equal(pa, pb) and torch.equal(sa, sb)
        state_a, state_b = opt_a.state.get(pa, {}), opt_b.state.get(pb, {})
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key]), key


@pytest.fixture
def folds(monkeypatch):
    """Small work items (so chunks cut tensors) and a record of what each folded step returned."""
    monkeypatch.setattr(cpu_kernels, "CHUNK", 64)
    calls = []
    real = adam_lookahead.folded_step

    def spy(*args):
        calls.append(real(*args))
        return calls[-1]

    monkeypatch.setattr(adam_lookahead, "folded_step", spy)
    return calls


VARIANTS = {
    "adam": dict(lr=1e-2),
    "l2": dict(lr=1e-2, weight_decay=0.1),
    "adamw": dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
    "maximize": dict(lr=1e-2, maximize=True),
    "small beta1": dict(lr=1e-2, betas=(0.3, 0.99), eps=1e-6),
}


@pytest.mark.parametrize("alpha", [0.5, 0.2, 1.0])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folded_sync_steps_are_torch_adam_then_lerp_bit_for_bit(folds, dtype, variant, alpha):
    start, grads = draws(dtype, seed=1)
    k = 3
    assert_same_bits(ours(start, grads, k, alpha, **VARIANTS[variant]),
                     reference(start, grads, k, alpha, **VARIANTS[variant]))
    assert folds == [True] * (STEPS // k)  # every sync step took the folded path


def test_groups_with_their_own_rates_and_a_parameter_without_gradient(folds):
    start, grads = draws(torch.float32, seed=2)
    for step_grads in grads:
        step_grads[1] = None  # Adam skips it; Lookahead still syncs it (a no-op: it never moves)

    def groups(params):
        return [{"params": params[:2], "lr": 0.05}, {"params": params[2:], "lr": 1e-3, "betas": (0.8, 0.9)}]

    assert_same_bits(ours(start, grads, 4, 0.5, groups=groups), reference(start, grads, 4, 0.5, groups=groups))
    assert folds == [True] * (STEPS // 4)


def test_a_probe_that_differs_from_torch_sends_the_variant_back_to_torch(folds, monkeypatch):
    # a wrong register width puts the scalar-tail formula on the wrong elements: the probe
    # must see it, and the run must still be torch's bits through the two-pass path
    monkeypatch.setattr(adam_lookahead, "_verified", {})
    monkeypatch.setattr(adam_lookahead, "simd_width", lambda dtype: 4)
    start, grads = draws(torch.float32, seed=3)
    assert_same_bits(ours(start, grads, 3, 0.5, lr=1e-2), reference(start, grads, 3, 0.5, lr=1e-2))
    assert folds == [False] * (STEPS // 3)
    assert list(adam_lookahead._verified.values()) == [False]


@pytest.mark.parametrize("case", ["amsgrad", "foreach", "hook", "k=1", "new group on a sync step"])
def test_what_cannot_fold_takes_the_two_pass_path_with_the_same_numbers(folds, case):
    start, grads = draws(torch.float32, seed=4)
    k = 1 if case == "k=1" else 3
    adam = dict(lr=1e-2, amsgrad=case == "amsgrad", **(dict(foreach=True) if case == "foreach" else dict(fused=True)))
    runs = []
    for lookahead in (True, False):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        late = case == "new group on a sync step"
        base = torch.optim.Adam(params[:3] if late else params, **adam)
        hooked = []
        if case == "hook":
            base.register_step_post_hook(lambda *args: hooked.append(1))
        opt = Lookahead(base, k=k, alpha=0.5) if lookahead else base
        slow = [p.detach().clone() for p in params]
        for t, step_grads in enumerate(grads, start=1):
            if late and t == k:  # the new group has no Adam state yet when the sync comes
                opt.add_param_group({"params": params[3:]})
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            opt.step()
            if not lookahead and t % k == 0:  # the reference
                paper_sync(slow, params, 0.5)
        assert len(hooked) == (STEPS if case == "hook" else 0)  # hooks run on sync steps too
        runs.append((params, [opt.slow[p] for p in params] if lookahead else slow, base))
    assert_same_bits(*runs)
    if case == "new group on a sync step":
        assert folds == [False] + [True] * (STEPS // k - 1)
    elif case == "k=1":
        assert folds == [False] + [True] * (STEPS - 1)  # the very first step initialises Adam's state
    else:
        assert folds == []  # never tried: not plain fused Adam


def test_closure_is_called_once_and_its_gradients_are_used(folds):
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randn(64, 1)
    results = []
    for lookahead in (True, False):
        model = torch.nn.Linear(5, 1)
        with torch.no_grad():
            model.weight.fill_(1.0)
            model.bias.zero_()
        base = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
        opt = Lookahead(base, k=2, alpha=0.5) if lookahead else base
        slow = [p.detach().clone() for p in model.parameters()]  # the reference's own slow weights
        calls, losses = [], []

        def closure():
            calls.append(1)
            opt.zero_grad()  # new gradient tensors: the step must read these, not the last ones
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        for t in range(1, 7):
            losses.append(opt.step(closure).item())
            if not lookahead and t % 2 == 0:
                paper_sync(slow, list(model.parameters()), 0.5)
        assert len(calls) == 6
        results.append((losses, [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))
    assert folds == [True] * 3
