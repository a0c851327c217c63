"""What the monitor needs on the models practitioners train: attention through
``F.scaled_dot_product_attention`` (a kernel with no double backward on CPU), batch-norm's
training-mode function for the stability test, and a monitor whose own cost stays within its cap."""

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from descentlab.curvature import EmpiricalLoss, HessianOperator, ModelLoss, token_cross_entropy

F64 = torch.float64


class TinyAttention(nn.Module):
    """One causal self-attention layer through SDPA, attention dropout written by hand."""

    def __init__(self, vocab=5, d=4, heads=2):
        super().__init__()
        self.heads = heads
        self.embed, self.qkv, self.head = nn.Embedding(vocab, d), nn.Linear(d, 3 * d), nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.embed(ids)
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.3 if self.training else 0.0)
        return self.head(x + a.transpose(1, 2).reshape(B, T, D))


def test_hessian_products_through_sdpa_equal_torch_func_on_the_math_backend():
    """SDPA's CPU kernel has no double backward (a product through it raises); the data layer
    evaluates attention on the math backend, so its products are those of torch.func's Hessian
    of the same loss (evaluated on the math backend), and the model stays in training mode."""
    torch.manual_seed(0)
    model = TinyAttention().to(F64).train()
    tokens = torch.randint(0, 5, (6, 7))
    loss = ModelLoss(lambda m, batch: token_cross_entropy(m(batch[:, :-1]), batch[:, 1:]))
    op = HessianOperator(model, loss, [tokens], eval_mode=True)
    named = {n: p.detach() for n, p in model.named_parameters()}
    sizes = [p.numel() for p in named.values()]

    def f(flat):
        state = {n: t.reshape(named[n].shape) for n, t in zip(named, torch.split(flat, sizes))}
        logits = functional_call(model, state, (tokens[:, :-1],))
        return token_cross_entropy(logits, tokens[:, 1:])

    flat = torch.cat([p.reshape(-1) for p in named.values()])
    model.eval()
    with sdpa_kernel(SDPBackend.MATH):
        H = torch.func.hessian(f)(flat)
    model.train()
    V = torch.randn(len(flat), 3, dtype=F64)
    torch.testing.assert_close(op @ V, H @ V, atol=1e-10, rtol=0)
    assert all(m.training for m in model.modules())


class TinyBatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(torch.tanh(self.bn(self.fc1(x))))


def _train_mode_loss(model, X, y):
    """The training-mode function written out (the oracle): batch-norm by the batch's own biased
    mean and variance, then tanh and the head."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [s.numel() for s in shapes]
    eps = model.bn.eps

    def f(flat):
        w1, b1, gamma, beta, w2, b2 = (t.reshape(s) for t, s in zip(torch.split(flat, sizes), shapes))
        z = X @ w1.T + b1
        z = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps) * gamma + beta
        return F.cross_entropy(torch.tanh(z) @ w2.T + b2, y)

    assert names == ["fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "fc2.weight", "fc2.bias"]
    return f, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_with_batch_statistics_is_the_training_mode_function_and_leaves_the_buffers():
    """`with_batch_statistics()`: the Hessian of the function a training step differentiates (the
    oracle: that function written out, torch.func's dense Hessian), not the running statistics'
    (which differ here), and the user's running statistics, counter and modes are untouched."""
    torch.manual_seed(0)
    model = TinyBatchNormNet().to(F64)
    X, y = torch.randn(40, 3, dtype=F64) * 2 + 1, torch.randint(0, 2, (40,))
    with torch.no_grad():  # running statistics from a few batches, far from this batch's own
        for _ in range(3):
            model(torch.randn(40, 3, dtype=F64))
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    eval_op = HessianOperator(model, F.cross_entropy, (X, y), eval_mode=True)
    op = eval_op.with_batch_statistics()
    f, flat = _train_mode_loss(model, X, y)
    H = torch.func.hessian(f)(flat)
    dense = op.dense()
    torch.testing.assert_close(dense, H, atol=1e-10, rtol=0)
    torch.testing.assert_close(op.loss(), f(flat), atol=1e-12, rtol=0)
    assert (eval_op.dense() - H).abs().max() > 1e-2  # the running statistics' function is another one
    v = torch.randn(len(flat), dtype=F64)
    torch.testing.assert_close(op.refreshed() @ v, H @ v, atol=1e-10, rtol=0)  # kept through refresh
    assert all(torch.equal(buffers[n], b) for n, b in model.named_buffers())
    assert model.training and model.bn.track_running_stats
    # a model whose batch-norm is in eval mode trains with its running statistics: that function
    model.bn.eval()
    torch.testing.assert_close(EmpiricalLoss(model, F.cross_entropy, (X, y), eval_mode=True).with_batch_statistics()
                               .loss(), eval_op.loss(), atol=1e-12, rtol=0)
    assert not model.bn.training


def test_the_stability_test_reads_the_training_mode_function_of_a_batch_norm_net():
    """The sharpness a rate meets in training is that of the function a step differentiates (batch
    statistics): the monitor's diagnosis and its sharpness tracker both give lr · λ_max of that
    function's Hessian (the oracle: written out, torch.func's dense Hessian, eigvalsh), within the
    1 % Lanczos' stopping rule guarantees, far from the running statistics' value."""
    from descentlab.critical import StallMonitor
    from descentlab.critical.sharpness import SharpnessTracker
    from descentlab.engine import LoopState

    torch.manual_seed(0)
    model = TinyBatchNormNet().to(F64)
    X, y = torch.randn(40, 3, dtype=F64) * 2 + 1, torch.randint(0, 2, (40,))
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(40, 3, dtype=F64))
    lr = 0.1
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    f, flat = _train_mode_loss(model, X, y)
    top = float(torch.linalg.eigvalsh(torch.func.hessian(f)(flat))[-1])
    eval_top = float(torch.linalg.eigvalsh(HessianOperator(model, F.cross_entropy, (X, y), eval_mode=True).dense())[-1])
    assert abs(eval_top - top) > 0.1 * top  # the two functions' sharpness differ here

    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, budget=None, escape=False)
    rate = monitor.diagnose(model).evidence["rate"]
    assert rate["batch_statistics"] is True
    assert rate["sharpness"] == pytest.approx(lr * top, rel=1e-2)
    tracker = SharpnessTracker(F.cross_entropy, (X, y), every=1)
    point = tracker.measure(0, model, optimizer)
    assert point.sharpness * lr == pytest.approx(lr * top, rel=1e-2) and point.samples == 40
    assert model.training and model.bn.track_running_stats


@pytest.mark.parametrize("fixed, per_sample, every", [(0.0, 0.01, 80), (2.0, 1e-4, 40)],
                         ids=["proportional", "mostly-fixed"])
def test_a_cadence_keeps_its_measurement_within_its_share(fixed, per_sample, every):
    """A measurement of m samples costing ``fixed + per_sample · m`` seconds (the oracle's cost), one
    training step a second: after the first measurements the cadence's share of the training time
    is at most its cap, at the shortest interval where 80 % of the share pays for the measurement
    (5.12 s: every 80; 2.05 s: every 40), and its sample never shrinks (a smaller one would measure
    something else)."""
    from descentlab.critical.budget import Cadence

    cadence = Cadence(0.1, 512, (10, 20, 40, 80))
    costs, trainings = [], []
    for _ in range(60):
        cost, training = fixed + per_sample * cadence.size, 1.0 * cadence.every
        costs.append(cost)
        trainings.append(training)
        cadence.observe(cost, training)
    assert sum(costs[10:]) <= 0.1 * sum(trainings[10:])
    assert cadence.size == 512 and cadence.every == every


def test_a_cold_start_charged_to_a_cadence_spends_its_allowance_but_not_its_mean_cost():
    """The allowance is the seconds spent in all before the share holds, a cold first measurement
    included: charged 3 s against an allowance of 2.5 s, the next measurement over its share (1 s
    after 2 s of training, against 10 %) spreads the cadence at once, to the interval its own cost
    fits (1 s <= 0.8 · 0.1 · 0.1 s/step · 160 steps: every 160, not the cold 3 s's 640); uncharged,
    the allowance still covers it and nothing changes."""
    from descentlab.critical.budget import Cadence

    charged = Cadence(0.1, 64, (20, 40, 80, 160, 640), allowance=2.5)
    charged.charge(3.0)
    assert charged.observe(1.0, 2.0) and charged.every == 160 and charged.spent == 4.0
    fresh = Cadence(0.1, 64, (20, 40, 80, 160, 640), allowance=2.5)
    assert not fresh.observe(1.0, 2.0) and fresh.every == 20


def test_the_tracked_loss_stays_within_its_share_of_the_budget_as_the_checks_spread_out(monkeypatch):
    """A tracked loss that costs 2 s against 10 s of training between two checks (20 %), on a fake
    clock: the monitor spreads its checks out until it costs at most its share of the budget (20 %
    of the default 25 %: 5 % of the training time), over the whole run; without a budget, it does not."""
    import descentlab.critical.budget as budget_module
    from descentlab.critical import StallMonitor
    from descentlab.critical.budget import TRACKING_SHARE
    from descentlab.monitor_defaults import DEFAULT_BUDGET

    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    class SlowTracking:
        """Stands in for the diagnoser: a tracked loss that costs 2 s and keeps going down, by about
        1 % a window (no plateau; too slowly for the once-a-window reading of a fast fall)."""

        n_data, held, tracked_size, size, calls = None, 64, 64, 64, 0

        def tracked_loss(self, model):
            self.calls += 1
            clock.now += 2.0
            return 1.0 - 0.002 * self.calls

        def look(self, model, history, tracked, **_):
            return None, 1.0  # a healthy network, a gradient

        def look_cost(self):
            return 0.0

        def samples_apart(self, model):
            return True  # the samples kept apart

        def loss_as_trained(self, model):
            return None  # no batch-norm trained

        def sums(self, model):
            return False  # a mean over its batch

    clock = Clock()
    monkeypatch.setattr(budget_module.time, "perf_counter", clock)
    model = nn.Linear(2, 2)
    X, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
    shares = {}
    for budget in (DEFAULT_BUDGET, None):
        clock.now = 0.0
        monitor = StallMonitor(F.cross_entropy, (X, y), batch_size=64, window=50, budget=budget)
        monitor.diagnoser = SlowTracking()
        for step in range(1, 1001):
            clock.now += 1.0
            monitor.update(step, 1.0, model)
        assert not monitor.stalls
        shares[budget] = monitor.spent / monitor.train_time
    assert shares[DEFAULT_BUDGET] <= TRACKING_SHARE * DEFAULT_BUDGET
    assert shares[None] == pytest.approx(0.2, rel=0.01)


@pytest.mark.parametrize("slow", [False, True], ids=["cheap-forward", "slow-forward"])
def test_the_tracked_sample_is_all_of_it_where_the_budget_floor_pays_for_it(monkeypatch, slow):
    """Batch 4 sizes the tracked loss at MIN_TRACKED (16) samples from the training time alone. A
    linear model's forward pass is so cheap that reading all 300 samples at each of a 1,000-step
    run's 100 checks costs less than the tracking share of the budget's floor (20 % of 5 s), so
    the tracked loss reads all of them. A forward pass that takes half a second (a fake clock)
    keeps the 16."""
    import descentlab.critical.diagnoser as diagnoser_module
    from descentlab.critical import StallMonitor
    from descentlab.critical.monitor import MIN_TRACKED
    from descentlab.engine import LoopState

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(300, 2, generator=g), torch.randint(0, 2, (300,), generator=g)
    model = nn.Linear(2, 2)
    if slow:
        ticks = iter(range(10**6))
        monkeypatch.setattr(diagnoser_module.time, "perf_counter", lambda: 0.25 * next(ticks))
    monitor = StallMonitor(F.cross_entropy, (X, y), batch_size=4)
    loop = LoopState(model, torch.optim.SGD(model.parameters(), lr=0.1), batch_size=4, n_train=300, total_steps=1000)
    monitor.on_train_start(loop)
    assert monitor.diagnoser.tracked_size == (MIN_TRACKED if slow else 300)


def test_the_sharpness_tracker_reads_the_first_samples_of_a_list_batch_sample():
    """A DataLoader over a TensorDataset gives batches as lists; the monitor holds its sample as a
    list of that one batch. The tracker counts its samples and estimates on the first ``size`` of
    them: the eigenvalue of those 16 samples' Hessian (torch.func's, eigvalsh)."""
    from torch.func import functional_call, hessian

    from descentlab.critical.sharpness import SharpnessTracker

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(64, 3, generator=g, dtype=F64), torch.randint(0, 2, (64,), generator=g)
    model = nn.Linear(3, 2).to(F64)
    loss = ModelLoss(lambda m, batch: F.cross_entropy(m(batch[0]), batch[1]))
    tracker = SharpnessTracker(loss, [[X, y]], every=10, size=16, tol=1e-8)
    point = tracker.measure(0, model)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def of(theta):
        params, at = {}, 0
        for n, p in model.named_parameters():
            params[n] = theta[at:at + p.numel()].view_as(p)
            at += p.numel()
        return F.cross_entropy(functional_call(model, params, (X[:16],)), y[:16])

    top = torch.linalg.eigvalsh(hessian(of)(flat))[-1]
    assert point.samples == 16
    assert point.sharpness == pytest.approx(float(top), rel=1e-6)
