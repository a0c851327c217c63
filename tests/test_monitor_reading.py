"""The tracked loss read once a window while it falls fast, at every check near a plateau: the
plateau is found within a window of the step the every-check reading finds it (a horizon is
fitted from the last reading at or before its start, which may be older), with fewer reads."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import descentlab.critical.monitor as monitor_module
from descentlab.critical import StallMonitor


def _regression_run(steps=400):
    """Full-batch gradient descent on least squares: the loss falls fast, then sits at its noise floor."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 5, generator=g)
    y = X @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(256, 1, generator=g)
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = StallMonitor(F.mse_loss, (X, y), optimizer=optimizer, window=50, budget=None, max_stalls=1)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = F.mse_loss(model(X), y)
        loss.backward()
        optimizer.step()
        monitor.update(step, loss, model)
    return monitor


def test_a_fast_fall_is_read_once_a_window_and_its_plateau_found_within_a_window(monkeypatch):
    sparse = _regression_run()
    monkeypatch.setattr(monitor_module, "SPARSE_ABOVE", float("inf"))  # every check reads
    dense = _regression_run()
    assert dense.stalls and sparse.stalls
    assert dense.stalls[0].step <= sparse.stalls[0].step <= dense.stalls[0].step + 50
    assert sparse.stalls[0].verdict == dense.stalls[0].verdict == "minimum"
    # the readings the sparse run made are the dense run's at the same steps (the same trajectory)
    dense_at = dict(dense.tracked)
    assert all(value == pytest.approx(dense_at[step], rel=1e-12) for step, value in sparse.tracked if step in dense_at)
    assert len([step for step, _ in sparse.tracked if step in dense_at]) < len(dense.tracked)  # fewer reads
    # at step 60 the last window (1.03 at step 10 to 0.010 at 60) fell surely by more than
    # SPARSE_ABOVE · rel_tol: read next at the window's end, 100, where the fall had slowed
    steps = [step for step, _ in sparse.tracked]
    assert steps[:6] == [10, 20, 30, 40, 50, 60] and steps[6:8] == [100, 110]


def _digits_run(bias, steps=120):
    """A ReLU MLP 64-32-10 on 512 digits, full-batch SGD, its hidden bias set to ``bias``."""
    from descentlab.problems.workloads import get_workload

    workload = get_workload("digits-mlp")
    X, y = workload.X_train[:512], workload.y_train[:512]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        model[0].bias.fill_(bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, window=50, budget=None, max_stalls=1)
    from descentlab.engine import LoopState

    loop = LoopState(model, optimizer, batch_size=512, n_train=512, total_steps=steps)
    monitor.on_train_start(loop)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
        loop.step = step
        monitor.on_step_end(loop, loss)
    return monitor, model, X


def test_a_network_that_cannot_train_is_named_at_its_second_check_not_after_a_proven_plateau():
    """Every hidden unit dead (bias -10: the oracle counts the positive pre-activations on the
    sample, none): the loss stays where it began, and at the first check with three tracked
    losses (step 20: steps 0, 10, 20, whose line does not surely fall) the monitor looks for a
    cause in the network and names it, with 100 of the run's 120 steps still ahead (the plateau
    test needs two windows). The same network with a zero bias trains: no look finds anything, no
    stall."""
    monitor, model, X = _digits_run(-10.0)
    sample_X = monitor.sample[0]
    assert int((model[0](sample_X) > 0).sum()) == 0
    stall = monitor.stalls[0]
    assert (stall.step, stall.reason, stall.verdict) == (20, "network", "dead_units")
    assert "the loss stuck at" in stall.summary()
    healthy, _, _ = _digits_run(0.0)
    assert healthy.stalls == []


def test_a_cause_left_in_place_is_named_once_while_its_stuck_loss_drifts():
    """The zoo's saturated sigmoid MLP, watched (no remedy): every hidden unit in its flat tail
    (the oracle counts the sigmoid slopes below 2 % of their peak on the sample) at step 20, named
    there; its stuck loss then drifts down by more than 1 %, which re-arms the looks at windows
    2 and 4 and the plateau test (a plateau at step 130), but a look or a plateau that finds the
    same cause in the network with nothing changed is no new stall."""
    from descentlab.experiments.zoo import run_case
    from descentlab.problems.zoo import get_case

    run = run_case(get_case("saturated-mlp-sigmoid"), apply_remedy=False)
    assert [(s["step"], s["verdict"]) for s in run.stalls] == [(20, "saturated_units")]
    losses = run.losses
    assert min(losses[150:]) < 0.98 * losses[20] and losses[20] > 0.5 * run.initial_loss  # drifted, still stuck
    X = get_case("saturated-mlp-sigmoid").dataset().X
    with torch.no_grad():
        z = run.model[0](X)
        slope = torch.sigmoid(z) * (1 - torch.sigmoid(z))
    assert float(((slope < 0.02 * 0.25).double().mean(dim=0) >= 0.9).double().mean()) == 1.0


class _LectureProduct(nn.Module):
    """The lectures' ``y = w1·w2·x``, started at ``(start, start)``."""

    def __init__(self, start: float):
        super().__init__()
        self.w = nn.Parameter(torch.full((2,), start, dtype=torch.float64))

    def forward(self, x):
        return self.w[0] * self.w[1] * x


def _watch_lecture(start: float, steps: int, warm_up: int | None = None):
    x = y = torch.ones(1, dtype=torch.float64)
    model = _LectureProduct(start)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: min(1.0, (t + 1) / warm_up)) if warm_up else None
    monitor = StallMonitor(F.mse_loss, (x, y), optimizer=optimizer, window=50, budget=None, max_stalls=1, escape=False)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        monitor.update(step, loss, model)
    return monitor, model


def test_a_loss_that_has_not_moved_since_the_start_is_a_plateau_at_the_first_look():
    """The lectures' saddle started at (1e-6, 1e-6): the gradient is not 0 there (-2e-6 each), but
    gradient descent leaves the saddle at 1.2x a step, so by step 30 the loss, (1 - w1·w2)², has
    moved by ~1e-7: a plateau at the first look (three tracked losses), diagnosed then, not two
    windows later. Its lowest eigenvalue is the exact Hessian's at the weights of step 30
    ([[2 w2², 4 w1 w2 - 2], [4 w1 w2 - 2, 2 w1²]], eigh). Under a warm-up (the rate still rising)
    the same flat start waits for the plateau test's two windows."""
    monitor, _ = _watch_lecture(1e-6, 30)
    stall = monitor.stalls[0]
    assert (stall.step, stall.reason, stall.verdict) == (30, "loss", "saddle") and stall.grad_norm > 0
    w1 = w2 = 1e-6 * 1.2 ** 30  # w <- w + 0.1 * 2 (1 - w1 w2) w2 per step, w1 w2 ~ 1e-8: x 1.2 to 1e-8
    exact = torch.linalg.eigvalsh(torch.tensor([[2 * w2 ** 2, 4 * w1 * w2 - 2], [4 * w1 * w2 - 2, 2 * w1 ** 2]],
                                               dtype=torch.float64))
    assert stall.min_eigenvalue == pytest.approx(float(exact[0]), rel=1e-6)
    warming, _ = _watch_lecture(1e-6, 40, warm_up=100)
    assert warming.stalls == []


def test_a_gradient_exactly_zero_at_a_look_is_diagnosed_at_once():
    """The lectures' ``y = w1·w2·x`` (x = y = 1) started at its saddle (0, 0): the gradient is exactly
    0 there, so gradient descent never moves and the loss never leaves 1. The look at the first
    check with three tracked losses (step 30: ``update`` gives no loss at the start) finds the
    gradient exactly 0 and the diagnosis comes at once, not two windows later: a saddle, its
    lowest eigenvalue that of the exact Hessian [[0, -2], [-2, 0]] (eigh: -2)."""
    monitor, _ = _watch_lecture(0.0, 60)
    stall = monitor.stalls[0]
    assert (stall.step, stall.reason, stall.verdict) == (30, "grad", "saddle") and stall.grad_norm == 0.0
    exact = torch.linalg.eigvalsh(torch.tensor([[0.0, -2.0], [-2.0, 0.0]], dtype=torch.float64))
    assert stall.min_eigenvalue == pytest.approx(float(exact[0]), rel=1e-9)
    assert stall.summary().startswith("step 30: the gradient exactly 0 at loss 1:")
