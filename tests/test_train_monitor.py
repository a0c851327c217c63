"""StallMonitor: the plateau test, the budget, checkpointing; the helpers it measures with."""

import math

import numpy as np
import pytest
import torch

from descentlab.critical import Stall, StallMonitor
from descentlab.critical import monitor as monitor_module
from descentlab.critical.monitor import full_loss_and_grad, loss_slice
from descentlab.problems.workloads import get_workload


@pytest.fixture
def lecture():
    workload = get_workload("lecture", dtype=torch.float64)
    model = workload.make_model()
    return workload, model


def _set(model, w1, w2):
    with torch.no_grad():
        model.w1.fill_(w1)
        model.w2.fill_(w2)


class _Recorded(StallMonitor):
    """Stands in for classify/escape (tested elsewhere): records where diagnoses happen, costs ``cost`` seconds."""

    def __init__(self, *args, clock=None, cost=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock, self.cost = clock, cost

    def _diagnose(self, step, model, reason, loss, grad_norm):
        if self.clock is not None:
            self.clock.now += self.cost
        return Stall(step, loss, grad_norm, reason, "diagnosed")


def _first_plateau(losses, w, rel_tol):
    """The plateau rule written out with numpy: first 1-based step whose last two windows improve < rel_tol."""
    x = np.asarray(losses)
    for end in range(2 * w, len(x) + 1):
        prev, cur = x[end - 2 * w:end - w].mean(), x[end - w:end].mean()
        if (prev - cur) / abs(prev) < rel_tol:
            return end
    return None


def test_plateau_is_found_where_the_rule_says(lecture):
    workload, model = lecture
    losses = [2.0 * 0.97 ** k for k in range(60)] + [2.0 * 0.97 ** 60] * 60
    monitor = _Recorded(workload.loss_fn, (workload.X_train, workload.y_train), window=10, rel_tol=1e-3,
                        budget=None, log=None)
    found = [s.step for s in (monitor.update(i, loss, model) for i, loss in enumerate(losses, start=1)) if s]
    first = _first_plateau(losses, 10, 1e-3)
    assert first is not None and first > 60
    assert found[0] == first
    # after a stall the history restarts: the next one needs two fresh windows
    assert found[1] == first + 20
    assert monitor.stalls[0].reason == "loss"


def test_a_steadily_falling_loss_is_no_plateau(lecture):
    workload, model = lecture
    monitor = _Recorded(workload.loss_fn, (workload.X_train, workload.y_train), window=5, budget=None, log=None)
    assert all(monitor.update(i, 1.0 * 0.99 ** i, model) is None for i in range(1, 200))
    assert monitor.stalls == []


def test_gradient_criterion_at_the_lecture_saddle(lecture):
    workload, model = lecture
    data = (workload.X_train, workload.y_train)
    _set(model, 0.0, 0.0)  # the gradient is exactly zero
    monitor = _Recorded(workload.loss_fn, data, window=4, rel_tol=None, grad_tol=1e-6, budget=None, log=None)
    found = [s for s in (monitor.update(i, 1.0 - 0.1 * i, model) for i in range(1, 9)) if s]
    assert [s.step for s in found] == [4, 8] and found[0].reason == "grad" and found[0].loss == 1.0
    _set(model, 0.5, 0.5)  # dL/dw1 = -2 (1 - w1 w2) w2 = -0.75: not flat
    monitor = _Recorded(workload.loss_fn, data, window=4, rel_tol=None, grad_tol=1e-6, budget=None, log=None)
    assert all(monitor.update(i, 1.0, model) is None for i in range(1, 9))


def test_full_loss_and_grad_weights_batches_by_size():
    workload = get_workload("moons", dtype=torch.float64)
    model = workload.make_model()
    X, y = workload.X_train, workload.y_train
    whole_loss = workload.loss_fn(model(X), y)
    whole_grad = torch.cat([g.flatten() for g in torch.autograd.grad(whole_loss, list(model.parameters()))]).norm()
    batches = [(X[:100], y[:100]), (X[100:130], y[100:130]), (X[130:], y[130:])]
    loss, grad_norm = full_loss_and_grad(model, workload.loss_fn, batches)
    assert loss == pytest.approx(whole_loss.item(), rel=1e-12)
    assert grad_norm == pytest.approx(whole_grad.item(), rel=1e-10)
    assert all(p.grad is None for p in model.parameters())


def test_loss_slice_matches_the_lecture_closed_form(lecture):
    workload, model = lecture
    _set(model, 0.0, 0.0)
    ts, losses = loss_slice(model, workload.loss_fn, (workload.X_train, workload.y_train),
                            torch.tensor([3.0, 3.0], dtype=torch.float64), radius=1.5, n_points=7)
    # along u = (1, 1)/sqrt(2): w1 w2 = t^2 / 2, so L(t) = (1 - t^2 / 2)^2
    assert ts == pytest.approx(np.linspace(-1.5, 1.5, 7).tolist())
    assert losses == pytest.approx([(1 - t * t / 2) ** 2 for t in ts], rel=1e-12)
    assert model.w1.item() == 0.0 and model.w2.item() == 0.0


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_budget_caps_the_time_spent_diagnosing(lecture, monkeypatch):
    workload, model = lecture
    clock = _Clock()
    monkeypatch.setattr(monitor_module.time, "perf_counter", clock)
    # every step trains for 1 s; a diagnosis costs 6 s; budget 50 % of training time; a plateau every 2 steps
    monitor = _Recorded(workload.loss_fn, (workload.X_train, workload.y_train), window=1, rel_tol=1e-3,
                        budget=0.5, clock=clock, cost=6.0, log=None)
    monitor._last_cost = 6.0  # the cost is known (the first-cost estimate is tested below)
    for step in range(1, 61):
        clock.now += 1.0
        monitor.update(step, 1.0, model)
        assert monitor.spent <= 0.5 * monitor.train_time + 1e-9
    diagnosed = [s.step for s in monitor.stalls if s.status == "diagnosed"]
    skipped = [s for s in monitor.stalls if s.status == "skipped (budget)"]
    assert len(monitor.stalls) == 30 and skipped
    # the rule written out: at each plateau (every 2nd step) a diagnosis runs when
    # 6 * (done + 1) <= 0.5 * training seconds so far (the first call has no interval before it: s - 1)
    expected, done = [], 0
    for s in range(2, 61, 2):
        if 6.0 * (done + 1) <= 0.5 * (s - 1):
            expected.append(s)
            done += 1
    assert diagnosed == expected == [14, 26, 38, 50]
    assert monitor.spent == pytest.approx(24.0)


def test_first_diagnosis_cost_is_estimated_from_a_gradient(lecture):
    workload, model = lecture
    monitor = StallMonitor(workload.loss_fn, (workload.X_train, workload.y_train), log=None)
    # 2 parameters <= classify's dense threshold: the exact Hessian, 2 products of ~3 gradients each
    assert monitor._first_cost(model, 0.5) == pytest.approx(3.0 * 0.5 * 2)


def test_state_dict_round_trip_continues_the_same_decisions(lecture):
    workload, model = lecture
    losses = [1.0 / (1 + k) for k in range(30)] + [0.03] * 40
    data = (workload.X_train, workload.y_train)
    whole = _Recorded(workload.loss_fn, data, window=5, budget=None, log=None)
    for i, loss in enumerate(losses, start=1):
        whole.update(i, loss, model)
    first = _Recorded(workload.loss_fn, data, window=5, budget=None, log=None)
    for i, loss in enumerate(losses[:37], start=1):
        first.update(i, loss, model)
    second = _Recorded(workload.loss_fn, data, window=5, budget=None, log=None)
    second.load_state_dict(first.state_dict())
    for i, loss in enumerate(losses[37:], start=38):
        second.update(i, loss, model)
    def numbers(stalls):  # everything but the wall time
        return [{k: v for k, v in s.to_dict().items() if k != "seconds"} for s in stalls]

    assert numbers(second.stalls) == numbers(whole.stalls)
    assert len(whole.stalls) >= 2


def test_bad_arguments_name_the_argument(lecture):
    workload, _ = lecture
    data = (workload.X_train, workload.y_train)
    for kwargs, name in [({"window": 0}, "window"), ({"rel_tol": -1.0}, "rel_tol"), ({"grad_tol": 0.0}, "grad_tol"),
                         ({"budget": 0.0}, "budget"), ({"rel_tol": None}, "rel_tol and grad_tol"),
                         ({"slice_radius": math.nan}, "slice_radius")]:
        with pytest.raises(ValueError, match=name):
            StallMonitor(workload.loss_fn, data, **kwargs)


def test_stall_round_trips_through_plain_dicts():
    stall = Stall(10, 2.3, 1e-3, "loss", "diagnosed", kind="saddle", degenerate=True, min_eigenvalue=-0.7,
                  max_eigenvalue=0.7, minimum_ratio=0.1, eigenvalues=(-0.7, 0.7), slice_t=(0.0,), slice_loss=(2.3,))
    assert Stall.from_dict(stall.to_dict()) == stall
    assert "saddle (degenerate)" in stall.verdict() and "lambda_min -0.7" in stall.verdict()


def test_real_diagnosis_at_the_lecture_saddle(lecture):
    """classify + escape inside the monitor: the lecture's saddle at (0, 0), checked against the closed form."""
    workload, model = lecture
    _set(model, 0.0, 0.0)
    monitor = StallMonitor(workload.loss_fn, (workload.X_train, workload.y_train), window=2, rel_tol=None,
                           grad_tol=1e-8, budget=None, slice_radius=1.0, escape_options={"max_step": 0.5}, log=None)
    assert monitor.update(1, 1.0, model) is None
    stall = monitor.update(2, 1.0, model)
    assert stall.status == "diagnosed" and stall.kind == "saddle" and not stall.degenerate
    assert stall.min_eigenvalue == pytest.approx(-2.0) and stall.max_eigenvalue == pytest.approx(2.0)
    assert stall.spectrum == pytest.approx((-2.0, 2.0)) and stall.minimum_ratio == pytest.approx(0.5)
    # along the unit eigenvector (1, 1)/sqrt(2) of -2, either sign: L(t) = (1 - t^2/2)^2
    assert stall.slice_loss == pytest.approx([(1 - t * t / 2) ** 2 for t in stall.slice_t], rel=1e-10)
    # the escape stepped t = 0.5 along it: L = (1 - 0.125)^2, and the model moved there
    assert stall.escaped and stall.escape_step == pytest.approx(0.5)
    assert stall.escape_loss_after == pytest.approx((1 - 0.125) ** 2)
    assert model.w1.item() * model.w2.item() == pytest.approx(0.125)
