"""SGDW, Lookahead, SWATS and GradientNoise against their papers' algorithms, written out here.

Every oracle runs in numpy float64 on a random least-squares problem for 100 steps; each of
torch's kernel paths our optimizers run on (for-loop, multi-tensor, fused) must agree with it,
and with each other, within the rounding of float64 over those steps (``optim_rounding.tolerance``).
"""

import copy
import math
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from optim_rounding import tolerance

from descentlab.errors import UserInputError
from descentlab.optim import SGDW, SWATS, GradientNoise, Lookahead, is_elementwise, make_optimizer
from descentlab.optim import lookahead as lookahead_module
from descentlab.optim import swats as swats_module

STEPS = 100
RNG = np.random.default_rng(99)
A = RNG.normal(size=(12, 7)) / 3
B = RNG.normal(size=12)
THETA0 = RNG.normal(size=7)
SPLIT = (3, 4)  # two parameter tensors, so the multi-tensor paths really see a list
PATHS = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}

HERE = sys.modules[__name__]  # the oracles read this module's grad, which tolerance() perturbs


def grad(theta):
    return A.T @ (A @ theta - B)


def run(make, steps=STEPS, hook=None, frozen_until=0):
    """``steps`` steps of ``make(params)`` on the problem; returns (theta, optimizer).

    With ``frozen_until`` the second tensor has no gradient before that step (like a layer
    unfrozen during training), so it starts its optimizer state later than the first.
    ``hook(t, optimizer)`` runs after each step; an optimizer it returns replaces the old one.
    """
    params = [torch.tensor(part, dtype=torch.float64, requires_grad=True) for part in np.split(THETA0, [SPLIT[0]])]
    opt = make(params)
    for t in range(steps):
        g = grad(torch.cat([p.detach() for p in params]).numpy())
        for i, (p, part) in enumerate(zip(params, np.split(g, [SPLIT[0]]))):
            p.grad = None if i == 1 and t < frozen_until else torch.from_numpy(part.copy())
        opt.step()
        if hook:
            opt = hook(t, opt) or opt
    return torch.cat([p.detach() for p in params]).numpy(), opt


def assert_close(actual, expected, tol, name=""):
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=name)


# --- SGDW (Loshchilov & Hutter 2019, Algorithm 1, with torch's lr * wd convention) -----------------

def sgdw_oracle(lr, momentum, dampening, wd, nesterov, frozen_until=0):
    theta, bufs = THETA0.copy(), [None, None]
    parts = (slice(0, SPLIT[0]), slice(SPLIT[0], None))
    for t in range(STEPS):
        g = grad(theta)
        for i, part in enumerate(parts):
            if i == 1 and t < frozen_until:
                continue  # no gradient: torch leaves the tensor alone, decay included
            theta[part] = theta[part] * (1 - lr * wd)  # decoupled: the buffer never sees wd * theta
            if momentum:
                bufs[i] = g[part].copy() if bufs[i] is None else momentum * bufs[i] + (1 - dampening) * g[part]
                d = g[part] + momentum * bufs[i] if nesterov else bufs[i]
            else:
                d = g[part]
            theta[part] = theta[part] - lr * d
    return theta


SGDW_CASES = {
    "momentum": dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=0.1, nesterov=False),
    "nesterov": dict(lr=0.05, momentum=0.8, dampening=0.0, weight_decay=0.05, nesterov=True),
    "dampening": dict(lr=0.1, momentum=0.5, dampening=0.3, weight_decay=0.2, nesterov=False),
    "plain": dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.1, nesterov=False),
}


@pytest.mark.parametrize("hp", list(SGDW_CASES.values()), ids=list(SGDW_CASES))
@pytest.mark.parametrize("frozen_until", [0, 7], ids=["all-from-start", "one-unfrozen-at-7"])
def test_sgdw_follows_the_paper_on_every_path(hp, frozen_until):
    def oracle():
        return sgdw_oracle(hp["lr"], hp["momentum"], hp["dampening"], hp["weight_decay"], hp["nesterov"], frozen_until)

    expected, tol = oracle(), tolerance(oracle, HERE, STEPS)  # float64 rounding over the run
    results = {name: run(lambda p: SGDW(p, **hp, **flags), frozen_until=frozen_until)[0] for name, flags in PATHS.items()}
    results["default"] = run(lambda p: SGDW(p, **hp), frozen_until=frozen_until)[0]
    for name, theta in results.items():
        assert_close(theta, expected, tol, name)
        assert_close(theta, results["for-loop"], tol, f"{name} against the for-loop path")
    # decoupling matters: L2 through the buffer (torch SGD's weight_decay) lands elsewhere
    l2, _ = run(lambda p: torch.optim.SGD(p, lr=hp["lr"], momentum=hp["momentum"], dampening=hp["dampening"],
                                          weight_decay=hp["weight_decay"], nesterov=hp["nesterov"]))
    if hp["momentum"]:
        assert not np.allclose(l2, expected, atol=1e-6)


# --- Lookahead (Zhang et al. 2019, Algorithm 1) over SGD with momentum ------------------------------

def lookahead_oracle(lr, momentum, k, alpha):
    theta, slow, buf = THETA0.copy(), THETA0.copy(), np.zeros(7)
    for t in range(1, STEPS + 1):
        buf = momentum * buf + grad(theta) if t > 1 else grad(theta)
        theta = theta - lr * buf
        if t % k == 0:
            slow = slow + alpha * (theta - slow)
            theta = slow.copy()
    return theta, slow


@pytest.mark.parametrize("k, alpha", [(5, 0.5), (3, 0.8), (1, 1.0)])
@pytest.mark.parametrize("chunk_bytes", [1 << 20, 16], ids=["one-chunk", "a-chunk-a-tensor"])
def test_lookahead_follows_the_paper(k, alpha, chunk_bytes, monkeypatch):
    monkeypatch.setattr(lookahead_module, "SYNC_CHUNK_BYTES", chunk_bytes)  # the sync runs in chunks of tensors
    expected, expected_slow = lookahead_oracle(0.05, 0.9, k, alpha)
    tol = tolerance(lambda: np.concatenate(lookahead_oracle(0.05, 0.9, k, alpha)), HERE, STEPS)
    for name, flags in PATHS.items():  # the base's kernel path
        theta, opt = run(lambda p: Lookahead(torch.optim.SGD(p, lr=0.05, momentum=0.9, **flags), k=k, alpha=alpha))
        assert_close(theta, expected, tol, name)
        assert_close(torch.cat([opt.slow[p] for p in opt._params()]).numpy(), expected_slow, tol, name)
    if alpha == 1.0 and k == 1:  # alpha = 1, k = 1 is the base optimizer itself
        assert_close(theta, lookahead_oracle(0.05, 0.9, 10**9, 0.5)[0], tol)


def test_lookahead_shares_param_groups_and_saves_slow_weights():
    p = torch.zeros(4, requires_grad=True)
    base = torch.optim.Adam([p], lr=0.1)
    opt = Lookahead(base, k=2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    p.grad = torch.ones(4)
    opt.step()
    sched.step()
    assert base.param_groups[0]["lr"] == pytest.approx(0.05)  # the scheduler reached the base
    assert opt.state[p] is base.state[p]
    saved = opt.state_dict()
    assert saved["lookahead"]["fast_steps"] == 1 and torch.equal(saved["lookahead"]["slow"][0], torch.zeros(4))
    assert "exp_avg" in saved["state"][0]
    with pytest.raises(ValueError, match="lookahead"):
        Lookahead(torch.optim.Adam([p])).load_state_dict(base.state_dict())


def test_a_wrapper_keeps_the_base_state_takes_new_groups_and_runs_step_hooks():
    first, second = torch.zeros(3, requires_grad=True), torch.ones(2, requires_grad=True)
    base = torch.optim.SGD([first], lr=0.1, momentum=0.9)
    first.grad = torch.ones(3)
    base.step()  # the base has state before it is wrapped
    buffer = base.state[first]["momentum_buffer"]
    opt = Lookahead(GradientNoise(base, generator=torch.Generator().manual_seed(0)), k=2, alpha=0.5)
    assert opt.state[first]["momentum_buffer"] is buffer and base.param_groups[0]["params"] == [first]
    calls = []
    opt.register_step_pre_hook(lambda optimizer, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda optimizer, args, kwargs: calls.append("post"))
    opt.add_param_group({"params": [second], "lr": 0.2})
    assert base.param_groups[1]["params"] == [second] and base.param_groups[1]["momentum"] == 0.9
    start = second.detach().clone()
    for _ in range(2):
        first.grad, second.grad = torch.ones(3), torch.ones(2)
        opt.step()
    assert calls == ["pre", "post"] * 2
    # the new group's slow weights start where it joined: after the sync at step 2 they are
    # halfway between that start and the fast weights it reached
    assert not torch.equal(opt.slow[second], start) and "momentum_buffer" in base.state[second]


# --- SWATS (Keskar & Socher 2017, Algorithm 1) ----------------------------------------------------

def swats_oracle(lr, b1, b2, eps, frozen_until=0):
    """Algorithm 1; also returns how far its switch test came from deciding the other way.

    With ``frozen_until`` the second tensor has no gradient before that step: it keeps still,
    stays out of the dot products, and its moments start from zero when it joins (bias
    corrections use the group's step k, as SWATS documents).
    """
    w, m, a, lam, phase, v, big_lambda, switch = THETA0.copy(), np.zeros(7), np.zeros(7), 0.0, "adam", np.zeros(7), None, None
    margin = math.inf
    for k in range(1, STEPS + 1):
        live = np.arange(7) < (SPLIT[0] if k - 1 < frozen_until else 7)
        g = np.where(live, grad(w), 0.0)
        if phase == "sgd":
            v = np.where(live, b1 * v + g, v)
            w = w - (1 - b1) * big_lambda * np.where(live, v, 0.0)
            continue
        m = np.where(live, b1 * m + (1 - b1) * g, m)
        a = np.where(live, b2 * a + (1 - b2) * g * g, a)
        p = np.where(live, -lr * math.sqrt(1 - b2 ** k) / (1 - b1 ** k) * m / (np.sqrt(a) + eps), 0.0)
        w = w + p
        if p @ g != 0:
            gamma = (p @ p) / -(p @ g)
            lam = b2 * lam + (1 - b2) * gamma
            if k > 1:
                margin = min(margin, abs(abs(lam / (1 - b2 ** k) - gamma) - eps) / eps)
                if abs(lam / (1 - b2 ** k) - gamma) < eps:
                    phase, big_lambda, switch = "sgd", lam / (1 - b2 ** k), k
    return w, switch, big_lambda, margin


@pytest.mark.parametrize("hp, switch_at", [(dict(lr=0.1, betas=(0.9, 0.999), eps=1e-3), 54),
                                           (dict(lr=0.01, betas=(0.9, 0.999), eps=1e-9), None)],
                         ids=["switches-at-54", "stays-adam"])
@pytest.mark.parametrize("dots_min_mean_numel", [10**9, 0], ids=["product-and-sum", "dot-per-tensor"])
def test_swats_follows_algorithm_1_on_every_path(hp, switch_at, dots_min_mean_numel, monkeypatch):
    # SWATS reduces p.g one of two ways, by tensor size; these tensors are tiny, so both are forced
    monkeypatch.setattr(swats_module, "DOTS_MIN_MEAN_NUMEL", dots_min_mean_numel)
    expected, switch, big_lambda, margin = swats_oracle(hp["lr"], *hp["betas"], hp["eps"])
    assert switch == switch_at  # the case covers what its name says
    tol = tolerance(lambda: swats_oracle(hp["lr"], *hp["betas"], hp["eps"])[0], HERE, STEPS)
    # the switch is a yes/no test; it may be compared exactly because the oracle's test never
    # came within many tolerances of deciding the other way
    assert margin > 1e3 * tol
    results = {}
    for name, flags in {**PATHS, "default": {}}.items():
        theta, opt = run(lambda p: SWATS(p, **hp, **flags))
        assert_close(theta, expected, tol, name)
        (phase,) = opt.phases()
        assert phase.switch_step == switch and phase.step == STEPS
        if switch is None:
            assert phase.phase == "adam" and phase.sgd_lr is None
        else:
            assert phase.phase == "sgd" and phase.sgd_lr == pytest.approx(big_lambda, rel=tol)
        results[name] = theta
    for name, theta in results.items():
        assert_close(theta, results["for-loop"], tol, f"{name} against the for-loop path")


@pytest.mark.parametrize("hp, switch_at", [(dict(lr=0.05, betas=(0.9, 0.99), eps=1e-3), 12),
                                           (dict(lr=0.05, betas=(0.9, 0.999), eps=3e-4), 79),
                                           (dict(lr=0.05, betas=(0.9, 0.999), eps=1e-9), None)],
                         ids=["switches-at-12", "switches-at-79", "stays-adam"])
def test_swats_with_a_tensor_that_joins_late_and_a_reload_halfway(hp, switch_at):
    # The second tensor has no gradient for 7 steps; halfway the run goes through state_dict
    # into a fresh optimizer (new scratch buffers, new step counters).
    expected, switch, _, margin = swats_oracle(hp["lr"], *hp["betas"], hp["eps"], frozen_until=7)
    assert switch == switch_at  # the case covers what its name says (before, after the reload, never)
    tol = tolerance(lambda: swats_oracle(hp["lr"], *hp["betas"], hp["eps"], frozen_until=7)[0], HERE, STEPS)
    assert margin > 1e3 * tol
    for name, flags in PATHS.items():
        def reload(t, opt):
            if t == STEPS // 2:
                fresh = SWATS([p for g in opt.param_groups for p in g["params"]], **hp, **flags)
                fresh.load_state_dict(opt.state_dict())
                return fresh
        theta, opt = run(lambda p: SWATS(p, **hp, **flags), hook=reload, frozen_until=7)
        assert_close(theta, expected, tol, name)
        assert opt.phases()[0].switch_step == switch
    assert not np.allclose(expected, swats_oracle(hp["lr"], *hp["betas"], hp["eps"])[0], atol=1e-6)


def test_swats_decides_per_group_and_follows_a_scheduler_after_the_switch():
    params = [torch.tensor(THETA0[:3], requires_grad=True), torch.tensor(THETA0[3:], requires_grad=True)]
    opt = SWATS([{"params": [params[0]], "eps": 1e-2, "lr": 0.05}, {"params": [params[1]], "eps": 1e-12}], lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 if t >= 5 else 1.0)
    for _ in range(10):
        for p in params:
            p.grad = p.detach() * 2 - 1
        opt.step()
        sched.step()
    first, second = opt.phases()
    assert first.phase == "sgd" and second.phase == "adam"
    group = opt.param_groups[0]
    assert group["lr"] / group["switch_lr"] == 0.5  # SGD rate = Lambda * 0.5 from step 5 on
    assert "exp_avg" not in opt.state[params[0]] and "momentum_buffer" in opt.state[params[0]]


# --- GradientNoise (Neelakantan et al. 2015) -------------------------------------------------------

def test_gradient_noise_adds_the_papers_annealed_noise():
    """g + N(0, eta / (1 + t)^gamma) before each SGD step, z drawn from the generator as documented:
    one flat block of standard normals per step (one dtype here), in the order of the parameters."""
    eta, gamma, lr, seed = 0.3, 0.55, 0.05, 7

    def oracle():
        generator = torch.Generator().manual_seed(seed)
        theta = THETA0.copy()
        for t in range(STEPS):
            z = torch.randn(sum(SPLIT), dtype=torch.float64, generator=generator).numpy()
            theta = theta - lr * (grad(theta) + math.sqrt(eta / (1 + t) ** gamma) * z)
        return theta

    theta, tol = oracle(), tolerance(oracle, HERE, STEPS)
    for name, flags in PATHS.items():  # the base's kernel path
        gen = torch.Generator().manual_seed(seed)
        out, _ = run(lambda p: GradientNoise(torch.optim.SGD(p, lr=lr, **flags), eta=eta, gamma=gamma, generator=gen))
        assert_close(out, theta, tol, name)
    assert not np.allclose(theta, run(lambda p: torch.optim.SGD(p, lr=lr))[0], atol=1e-3)


def test_gradient_noise_is_the_same_at_any_thread_count():
    results = []
    for threads in (1, 2, 3):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            params = [torch.zeros(n, requires_grad=True) for n in (2500, 10, 3000)]
            opt = GradientNoise(torch.optim.SGD(params, lr=1.0), generator=torch.Generator().manual_seed(3))
            for p in params:
                p.grad = torch.zeros_like(p)
            opt.step()
        finally:
            torch.set_num_threads(before)
        results.append(torch.cat([p.detach() for p in params]))
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])
    assert results[0].std().item() > 0.1


@pytest.mark.parametrize("t", [0, 9])
def test_gradient_noise_variance_is_eta_over_one_plus_t_to_the_gamma(t):
    eta, gamma, n = 0.3, 0.55, 600_000
    p = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = GradientNoise(torch.optim.SGD([p], lr=1.0), eta=eta, gamma=gamma, generator=torch.Generator().manual_seed(1))
    opt.t = t
    p.grad = torch.zeros(n, dtype=torch.float64)
    opt.step()
    variance = p.detach().var().item()
    assert variance == pytest.approx(eta / (1 + t) ** gamma, rel=0.02)  # 600k samples: ~0.2% std error
    assert abs(p.detach().mean().item()) < 5 * math.sqrt(variance / n)


# --- copies ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sgdw", "swats", "lookahead:adam", "noisy:sgd", "lookahead:noisy:swats"])
def test_a_deep_copy_continues_like_the_original(name):
    import copy

    params = [torch.randn(5, generator=torch.Generator().manual_seed(0), requires_grad=True)]
    opt = make_optimizer(name, params, lr=0.1)
    twin = None
    for t in range(6):
        if t == 2:
            twin = copy.deepcopy(opt)  # copies the params it holds, too
        for o in (opt, twin) if twin else (opt,):
            for p in o.param_groups[0]["params"]:
                p.grad = torch.full_like(p, 0.5) - p.detach()
            o.step()
    assert torch.equal(params[0], twin.param_groups[0]["params"][0])


# --- validation, sparse gradients, the registry ----------------------------------------------------

def _p():
    return [torch.zeros(2, requires_grad=True)]


BAD_NUMBERS = st.one_of(st.floats(max_value=-1e-9, allow_nan=False), st.just(float("nan")),
                        st.sampled_from(["0.1", None, True]))
INVALID = {
    "lr": (BAD_NUMBERS, [lambda v: SGDW(_p(), lr=v), lambda v: SWATS(_p(), lr=v)]),
    "momentum": (st.one_of(BAD_NUMBERS, st.floats(min_value=1.0, max_value=1e6)), [lambda v: SGDW(_p(), momentum=v)]),
    "dampening": (st.one_of(BAD_NUMBERS, st.floats(min_value=1.0001, max_value=1e6)),
                  [lambda v: SGDW(_p(), momentum=0.9, dampening=v)]),
    "weight_decay": (BAD_NUMBERS, [lambda v: SGDW(_p(), weight_decay=v), lambda v: SWATS(_p(), weight_decay=v)]),
    "betas": (st.one_of(st.floats(min_value=1.0, max_value=10.0), BAD_NUMBERS).map(lambda b: (0.9, b)),
              [lambda v: SWATS(_p(), betas=v)]),
    "eps": (BAD_NUMBERS, [lambda v: SWATS(_p(), eps=v)]),
    "k": (st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.just("5")),
          [lambda v: Lookahead(torch.optim.SGD(_p(), lr=0.1), k=v), lambda v: make_optimizer("lookahead:sgd", _p(), k=v)]),
    "alpha": (st.one_of(BAD_NUMBERS, st.floats(min_value=1.0001, max_value=1e6)),
              [lambda v: Lookahead(torch.optim.SGD(_p(), lr=0.1), alpha=v)]),
    "eta": (st.one_of(BAD_NUMBERS, st.just(0.0)), [lambda v: GradientNoise(torch.optim.SGD(_p(), lr=0.1), eta=v),
                                                   lambda v: make_optimizer("noisy:adam", _p(), eta=v)]),
    "gamma": (BAD_NUMBERS, [lambda v: GradientNoise(torch.optim.SGD(_p(), lr=0.1), gamma=v)]),
}


@pytest.mark.parametrize("argument", list(INVALID))
def test_every_invalid_hyperparameter_raises_value_error_naming_it(argument):
    strategy, makers = INVALID[argument]

    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(strategy)
    def check(value):
        for make in makers:
            with pytest.raises(ValueError, match=argument):
                make(value)

    check()


@settings(max_examples=20, deadline=None, derandomize=True)
@given(name=st.sampled_from(["sgd", "momentum", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "nadam", "radam"]),
       lr=st.floats(max_value=-1e-9, allow_nan=False))
def test_torch_entries_reject_a_negative_learning_rate(name, lr):
    with pytest.raises(ValueError, match="learning rate"):
        make_optimizer(name, _p(), lr=lr)


def test_unknown_hyperparameter_is_named():
    with pytest.raises(UserInputError, match="'mometum'"):
        make_optimizer("sgd", _p(), mometum=0.9)


def _sparse_step(opt, emb):
    opt.zero_grad()
    emb(torch.tensor([0, 2, 2])).sum().backward()
    assert emb.weight.grad.is_sparse
    opt.step()


@pytest.mark.parametrize("name", ["sgdw", "swats", "noisy:sgd", "adam", "lookahead:swats"])
def test_sparse_gradients_get_a_clear_error_where_unsupported(name):
    emb = torch.nn.Embedding(4, 3, sparse=True)
    with pytest.raises(RuntimeError, match="sparse"):
        _sparse_step(make_optimizer(name, emb.parameters()), emb)


@pytest.mark.parametrize("name, hp", [("sgd", {}), ("momentum", {}), ("adagrad", {})])
def test_sparse_gradients_fall_back_from_fused_where_torch_supports_them(name, hp):
    results = []
    for flags in ({}, {"foreach": False}):  # the registry's default (fused) vs torch's for-loop path
        torch.manual_seed(0)
        emb = torch.nn.Embedding(4, 3, sparse=True)
        opt = make_optimizer(name, emb.parameters(), **hp, **flags)
        for _ in range(3):
            _sparse_step(opt, emb)
        results.append(emb.weight.detach().clone())
    assert torch.equal(*results)


def test_elementwise_flags():
    assert is_elementwise("adam") and is_elementwise("lookahead:sgdw")
    assert not is_elementwise("swats") and not is_elementwise("noisy:sgd")


def test_gradient_clipping_is_the_global_norm_rule_then_the_base_step():
    """Oracle: the written-out rule g <- g * min(1, c / (||g|| + 1e-6)) (the norm over every gradient;
    1e-6 is torch's documented guard), then torch's own SGD step; a gradient already shorter than c
    is left as it is."""
    torch.manual_seed(0)
    for scale, max_norm in ((10.0, 0.5), (1e-3, 0.5)):
        model = torch.nn.Linear(4, 3).double()
        twin = copy.deepcopy(model)
        clipped = make_optimizer("clipped:sgd", model.parameters(), lr=0.1, max_norm=max_norm)
        plain = torch.optim.SGD(twin.parameters(), lr=0.1)
        grads = [scale * torch.randn_like(p) for p in model.parameters()]
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
        for p, q, g in zip(model.parameters(), twin.parameters(), grads):
            p.grad = g.clone()
            q.grad = g * min(1.0, max_norm / (norm + 1e-6))
        clipped.step()
        plain.step()
        assert clipped.last_norm == pytest.approx(norm, rel=1e-12)
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-15)
    state = clipped.state_dict()
    again = make_optimizer("clipped:sgd", torch.nn.Linear(4, 3).double().parameters(), lr=0.1, max_norm=2.0)
    again.load_state_dict(state)
    assert again.max_norm == max_norm
    with pytest.raises(ValueError, match="max_norm"):
        make_optimizer("clipped:sgd", model.parameters(), lr=0.1, max_norm=0.0)
