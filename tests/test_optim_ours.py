"""SGDW, Lookahead, SWATS and GradientNoise against their papers' algorithms, written out here.

Every oracle runs in numpy float64 on a random least-squares problem for 100 steps; each of
our kernel paths (single-tensor, multi-tensor, fused) must agree with it.
"""

import importlib.util
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from descentlab.errors import UserInputError
from descentlab.optim import SGDW, SWATS, GradientNoise, Lookahead, cpu_kernels, is_elementwise, make_optimizer, normal_stream

STEPS = 100
RNG = np.random.default_rng(99)
A = RNG.normal(size=(12, 7)) / 3
B = RNG.normal(size=12)
THETA0 = RNG.normal(size=7)
SPLIT = (3, 4)  # two parameter tensors, so the multi-tensor paths really see a list
PATHS = {"single": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


def grad(theta):
    return A.T @ (A @ theta - B)


def run(make, steps=STEPS, hook=None):
    """``steps`` steps of ``make(params)`` on the problem; returns (theta, optimizer)."""
    params = [torch.tensor(part, dtype=torch.float64, requires_grad=True) for part in np.split(THETA0, [SPLIT[0]])]
    opt = make(params)
    for t in range(steps):
        g = grad(torch.cat([p.detach() for p in params]).numpy())
        for p, part in zip(params, np.split(g, [SPLIT[0]])):
            p.grad = torch.from_numpy(part.copy())
        opt.step()
        if hook:
            hook(t, opt)
    return torch.cat([p.detach() for p in params]).numpy(), opt


# --- SGDW (Loshchilov & Hutter 2019, Algorithm 1, with torch's lr * wd convention) -----------------

def sgdw_oracle(lr, momentum, dampening, wd, nesterov):
    theta, buf = THETA0.copy(), None
    for _ in range(STEPS):
        g = grad(theta)
        theta = theta * (1 - lr * wd)  # decoupled: the buffer never sees wd * theta
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            d = g + momentum * buf if nesterov else buf
        else:
            d = g
        theta = theta - lr * d
    return theta


@pytest.mark.parametrize("hp", [
    dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=0.1, nesterov=False),
    dict(lr=0.05, momentum=0.8, dampening=0.0, weight_decay=0.05, nesterov=True),
    dict(lr=0.1, momentum=0.5, dampening=0.3, weight_decay=0.2, nesterov=False),
    dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.1, nesterov=False),
], ids=["momentum", "nesterov", "dampening", "plain"])
def test_sgdw_follows_the_paper_on_every_path(hp):
    expected = sgdw_oracle(hp["lr"], hp["momentum"], hp["dampening"], hp["weight_decay"], hp["nesterov"])
    results = {name: run(lambda p: SGDW(p, **hp, **flags))[0] for name, flags in PATHS.items()}
    for name, theta in results.items():
        np.testing.assert_allclose(theta, expected, rtol=1e-12, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(results["single"], results["foreach"])
    # decoupling matters: L2 through the buffer (torch SGD's weight_decay) lands elsewhere
    l2, _ = run(lambda p: torch.optim.SGD(p, lr=hp["lr"], momentum=hp["momentum"], dampening=hp["dampening"],
                                          weight_decay=hp["weight_decay"], nesterov=hp["nesterov"]))
    if hp["momentum"]:
        assert not np.allclose(l2, expected, atol=1e-6)


@pytest.mark.parametrize("momentum, nesterov", [(0.9, True), (0.0, False)], ids=["nesterov", "plain"])
def test_sgdw_fused_path_on_and_off_the_cpu_kernel_follows_the_paper(monkeypatch, momentum, nesterov):
    hp = dict(lr=0.05, momentum=momentum, dampening=0.0, weight_decay=0.1, nesterov=nesterov)
    expected = sgdw_oracle(**{k: v for k, v in hp.items() if k != "weight_decay"}, wd=0.1)
    calls = []
    if importlib.util.find_spec("numba"):
        real = cpu_kernels.sgdw_step
        monkeypatch.setattr(cpu_kernels, "sgdw_step", lambda *a, **k: calls.append(1) or real(*a, **k))
        np.testing.assert_allclose(run(lambda p: SGDW(p, **hp, fused=True))[0], expected, rtol=1e-10, atol=1e-12)
        assert len(calls) == STEPS
    monkeypatch.setattr(cpu_kernels, "available", lambda tensors: False)  # no numba, or not on CPU
    np.testing.assert_allclose(run(lambda p: SGDW(p, **hp, fused=True))[0], expected, rtol=1e-10, atol=1e-12)
    assert len(calls) in (0, STEPS)


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
def test_lookahead_follows_the_paper(k, alpha):
    expected, expected_slow = lookahead_oracle(0.05, 0.9, k, alpha)
    outs = []
    for foreach in (False, True, None):  # None: the numba sync where numba is installed
        theta, opt = run(lambda p: Lookahead(torch.optim.SGD(p, lr=0.05, momentum=0.9), k=k, alpha=alpha,
                                             foreach=foreach))
        np.testing.assert_allclose(theta, expected, rtol=1e-12, atol=1e-12)
        slow = torch.cat([opt.slow[p] for p in opt._params()]).numpy()
        np.testing.assert_allclose(slow, expected_slow, rtol=1e-12, atol=1e-12)
        outs.append(theta)
    np.testing.assert_array_equal(outs[0], outs[1])  # torch's two paths: the same kernels
    if alpha == 1.0 and k == 1:  # alpha = 1, k = 1 is the base optimizer itself
        np.testing.assert_allclose(outs[0], lookahead_oracle(0.05, 0.9, 10**9, 0.5)[0], rtol=1e-12)


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


# --- SWATS (Keskar & Socher 2017, Algorithm 1) ----------------------------------------------------

def swats_oracle(lr, b1, b2, eps):
    w, m, a, lam, phase, v, big_lambda, switch = THETA0.copy(), np.zeros(7), np.zeros(7), 0.0, "adam", np.zeros(7), None, None
    for k in range(1, STEPS + 1):
        g = grad(w)
        if phase == "sgd":
            v = b1 * v + g
            w = w - (1 - b1) * big_lambda * v
            continue
        m = b1 * m + (1 - b1) * g
        a = b2 * a + (1 - b2) * g * g
        p = -lr * math.sqrt(1 - b2 ** k) / (1 - b1 ** k) * m / (np.sqrt(a) + eps)
        w = w + p
        if p @ g != 0:
            gamma = (p @ p) / -(p @ g)
            lam = b2 * lam + (1 - b2) * gamma
            if k > 1 and abs(lam / (1 - b2 ** k) - gamma) < eps:
                phase, big_lambda, switch = "sgd", lam / (1 - b2 ** k), k
    return w, switch, big_lambda


@pytest.mark.parametrize("hp", [dict(lr=0.05, betas=(0.9, 0.99), eps=1e-4), dict(lr=0.01, betas=(0.9, 0.999), eps=1e-9)],
                         ids=["switches-at-52", "stays-adam"])
def test_swats_follows_algorithm_1_on_every_path(hp):
    expected, switch, big_lambda = swats_oracle(hp["lr"], *hp["betas"], hp["eps"])
    results = {}
    for name, flags in PATHS.items():
        theta, opt = run(lambda p: SWATS(p, **hp, **flags))
        np.testing.assert_allclose(theta, expected, rtol=1e-10, atol=1e-12, err_msg=name)
        (phase,) = opt.phases()
        assert phase.switch_step == switch and phase.step == STEPS
        if switch is None:
            assert phase.phase == "adam" and phase.sgd_lr is None
        else:
            assert phase.phase == "sgd" and phase.sgd_lr == pytest.approx(big_lambda, rel=1e-10)
        results[name] = theta
    np.testing.assert_allclose(results["single"], results["foreach"], rtol=1e-13, atol=1e-15)


def test_swats_fused_path_runs_the_one_pass_cpu_kernel(monkeypatch):
    pytest.importorskip("numba")
    calls = []
    real = cpu_kernels.swats_adam_step
    monkeypatch.setattr(cpu_kernels, "swats_adam_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    run(lambda p: SWATS(p, lr=0.01, fused=True), steps=3)
    assert len(calls) == 3


def test_swats_fused_path_without_the_cpu_kernel_follows_algorithm_1(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "available", lambda tensors: False)  # e.g. no numba, or on a GPU
    expected, switch, _ = swats_oracle(0.05, 0.9, 0.99, 1e-4)
    theta, opt = run(lambda p: SWATS(p, lr=0.05, betas=(0.9, 0.99), eps=1e-4, fused=True))
    np.testing.assert_allclose(theta, expected, rtol=1e-10, atol=1e-12)
    assert opt.phases()[0].switch_step == switch


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

def splitmix64(state):
    """Vigna's splitmix64 output for ``state`` (after its increment)."""
    z = state % 2 ** 64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2 ** 64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2 ** 64
    return z ^ (z >> 31)


def documented_noise(generator, total):
    """One step's standard normal numbers as ``normal_stream`` documents them, in float64 numpy
    (exact log, sin, cos: the library's float32 polynomials must agree to ~1e-6)."""
    seed = int(torch.randint(0, 2 ** 62, (), generator=generator))
    words = [splitmix64(seed + (q + 1) * 0x9E3779B97F4A7C15) for q in range((total + 1) // 2)]
    k1 = np.array([w >> 40 for w in words], dtype=np.float64)
    k2 = np.array([(w >> 16) & 0xFFFFFF for w in words], dtype=np.int64)
    r = np.sqrt(-2 * np.log((k1 + 1) / 2 ** 24))
    theta = (k2 >> 22) * np.pi / 2 + ((k2 & 0x3FFFFF) / 2 ** 22 - 0.5) * np.pi / 2
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1).reshape(-1)[:total]


def test_the_stream_hashes_with_splitmix64():
    # published first output of splitmix64 from state 0: 0xE220A8397B1DCDAF
    assert splitmix64(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF
    gen = torch.Generator().manual_seed(0)
    seed = int(torch.randint(0, 2 ** 62, (), generator=torch.Generator().manual_seed(0)))
    np.testing.assert_allclose(normal_stream.normals_torch(seed, 0, 9).double().numpy(),
                               documented_noise(gen, 9), rtol=0, atol=2e-6)


PATHS_NOISE = {"single": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True),
               "default": {}}


@pytest.mark.parametrize("numba_kernels", [True, False], ids=["numba", "torch-ops"])
def test_gradient_noise_adds_the_papers_annealed_noise(monkeypatch, numba_kernels):
    if numba_kernels:
        pytest.importorskip("numba")
    monkeypatch.setattr(cpu_kernels, "enabled", numba_kernels)
    monkeypatch.setattr(cpu_kernels, "CHUNK", 4)  # work items that cut tensors, at odd offsets too
    eta, gamma, lr, seed = 0.3, 0.55, 0.05, 7
    oracle_gen = torch.Generator().manual_seed(seed)
    theta = THETA0.copy()
    for t in range(STEPS):
        z = documented_noise(oracle_gen, sum(SPLIT))
        theta = theta - lr * (grad(theta) + math.sqrt(eta / (1 + t) ** gamma) * z)
    outs = []
    for name, flags in PATHS_NOISE.items():
        gen = torch.Generator().manual_seed(seed)
        out, opt = run(lambda p: GradientNoise(torch.optim.SGD(p, lr=lr), eta=eta, gamma=gamma, generator=gen, **flags))
        np.testing.assert_allclose(out, theta, rtol=0, atol=1e-5, err_msg=name)
        outs.append(out)
    for out in outs[1:]:  # the same numbers on every path; torch's add and ours may round differently
        np.testing.assert_allclose(outs[0], out, rtol=1e-14, atol=1e-15)
    assert not np.allclose(theta, run(lambda p: torch.optim.SGD(p, lr=lr))[0], atol=1e-3)


def test_gradient_noise_is_the_same_at_any_thread_count(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "CHUNK", 1000)
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
