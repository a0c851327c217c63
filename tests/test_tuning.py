"""Rate grids that widen until the best rate is inside, and the held-out test split."""

import math

import numpy as np
import pytest
import torch

from descentlab.experiments.tuning import edge_of, grid_ratio, lr_grid, next_rate, widen
from descentlab.problems.workloads import get_workload, with_test_split


def _trial(lr, loss):
    return {"lr": lr, "final_val_loss": loss}


def _valley(best_log10):
    """A validation loss with its minimum at 10**best_log10, diverging above 10**(best_log10 + 2)."""
    def loss(lr):
        x = math.log10(lr)
        return math.inf if x > best_log10 + 2 else (x - best_log10) ** 2 + 0.1
    return loss


def _run(grid, loss, max_widenings=6):
    calls = []

    def train(wanted, round_):
        calls.append((round_, dict(wanted)))
        return {key: [_trial(rate, loss(rate))] for key, rate in wanted.items()}

    result = widen({"a": [_trial(r, loss(r)) for r in grid]}, {"a": grid_ratio(grid)}, train, max_widenings)
    return result["a"], calls


def test_a_best_rate_at_the_top_is_followed_up_the_log_grid_until_inside():
    grid = lr_grid(1e-2, 4)  # 10^-3.5 .. 10^-0.5, a factor 10 between neighbours
    loss = _valley(1.2)  # best at 10^1.2: beyond the grid's top
    outcome, calls = _run(grid, loss)
    # oracle: the same geometric sequence continued by hand; the minimum of the loss over it is at
    # 10^1.5 (|1.5 - 1.2| < |0.5 - 1.2|), and the next rate up, 10^2.5, is tried to show it is inside
    expected = [10 ** (-3.5 + k) for k in range(7)]
    assert sorted(float(t["lr"]) for t in outcome.trials) == pytest.approx(expected)
    assert outcome.chosen == pytest.approx(10 ** 1.5) and outcome.edge is None and outcome.widenings == 3
    assert [r for r, _ in calls] == [1, 2, 3]


def test_widening_downward_and_when_every_trial_diverges():
    grid = lr_grid(1.0, 3)  # 10^-1.5, 1, 10^1.5
    outcome, _ = _run(grid, _valley(-3.0))
    rates = sorted(float(t["lr"]) for t in outcome.trials)
    assert rates[0] == pytest.approx(10 ** -4.5) and outcome.chosen == pytest.approx(10 ** -3.0)
    assert outcome.edge is None
    every_grid_rate_diverges = lambda lr: math.inf if lr > 1e-2 else 1 + abs(math.log10(lr) + 3)  # noqa: E731
    outcome, calls = _run(grid, every_grid_rate_diverges)
    # down one step to the first finite rate (10^-3), then one more to show it is inside
    assert [wanted["a"] for _, wanted in calls] == pytest.approx([10 ** -3.0, 10 ** -4.5])
    assert outcome.chosen == pytest.approx(10 ** -3.0) and outcome.edge is None


def test_the_edge_is_reported_when_the_widenings_run_out():
    outcome, calls = _run(lr_grid(1e-2, 4), _valley(9.0), max_widenings=2)
    assert outcome.edge == "high" and outcome.widenings == 2 and len(calls) == 2
    assert outcome.chosen == pytest.approx(max(float(t["lr"]) for t in outcome.trials))
    with pytest.raises(ValueError, match="max_widenings"):
        _run(lr_grid(1e-2, 4), _valley(0.0), max_widenings=-1)


def test_edge_and_next_rate_read_only_the_trials():
    trials = [_trial(0.1, 1.0), _trial(1.0, 0.5), _trial(10.0, math.nan)]
    assert edge_of(trials) is None and next_rate(trials, 10.0) is None  # a diverged rate above bounds it
    assert edge_of(trials[:2]) == "high" and next_rate(trials[:2], 10.0) == pytest.approx(10.0)
    assert edge_of([_trial(1.0, math.inf)]) == "all diverged" and next_rate([_trial(1.0, math.inf)], 4.0) == 0.25
    assert grid_ratio([0.01]) == pytest.approx(10 ** 0.5)


@pytest.mark.parametrize("name", ["digits-mlp", "moons", "teacher-student"])
def test_the_test_split_is_the_untuned_half_of_the_validation_split(name):
    workload = get_workload(name)
    split = with_test_split(workload, seed=3)
    assert split.n_val + split.n_test == workload.n_val and abs(split.n_val - split.n_test) <= 1
    assert torch.equal(split.X_train, workload.X_train)  # training data untouched
    rows = lambda X: {tuple(x.tolist()) for x in X.reshape(len(X), -1)}  # noqa: E731
    assert rows(split.X_val) | rows(split.X_test) == rows(workload.X_val)
    assert not rows(split.X_val) & rows(split.X_test)
    if workload.task == "classification":  # stratified: every class split as evenly as it can be
        assert (torch.bincount(split.y_val) - torch.bincount(split.y_test)).abs().max() <= 1
    assert torch.equal(with_test_split(workload, seed=3).X_test, split.X_test)  # seeded


def test_a_workload_with_its_own_test_split_keeps_it():
    wilson = get_workload("wilson")
    assert with_test_split(wilson) is wilson and wilson.n_test == 200
    lecture = with_test_split(get_workload("lecture"))  # one datum: nothing else to hold out
    assert lecture.n_test == 1


def test_wilson_construction_gradient_descent_generalizes_and_adam_does_not():
    """Wilson et al. 2017, section 3.3, on a small instance, with torch.optim's own classes. Oracles:
    gradient descent from zero reaches the minimum-norm least-squares solution (numpy's pinv), and
    Adam, Adagrad and RMSProp a solution that weighs features 1-3 alike, so they call every test
    sample positive: their test error is the share of negative test labels."""
    workload = get_workload("wilson", seed=1, dtype=torch.float64)
    X, signed = workload.X_train, 2.0 * workload.y_train.double() - 1
    minimum_norm = np.linalg.pinv(X.numpy()) @ signed.numpy()
    negatives = float((workload.y_test == 0).double().mean())
    assert 0.2 < negatives < 0.6
    errors = {}
    for name, cls, lr in (("gd", torch.optim.SGD, 0.3), ("adam", torch.optim.Adam, 0.01),
                          ("adagrad", torch.optim.Adagrad, 0.1), ("rmsprop", torch.optim.RMSprop, 0.01)):
        model = workload.make_model()
        optimizer = cls(model.parameters(), lr=lr)
        for _ in range(400):
            optimizer.zero_grad()
            workload.loss_fn(model(X), workload.y_train).backward()
            optimizer.step()
        with torch.no_grad():
            w = model.linear.weight[0].detach()
            assert float(workload.loss_fn(model(X), workload.y_train)) < 1e-6  # every method fits the data
            errors[name] = float((model(workload.X_test).argmax(-1) != workload.y_test).double().mean())
        if name == "gd":
            np.testing.assert_allclose(w.numpy(), minimum_norm, atol=1e-6)
        else:
            assert float(w[0]) == pytest.approx(float(w[1]), rel=0.05)  # labels and constants weighed alike
    assert errors["gd"] == 0.0
    for name in ("adam", "adagrad", "rmsprop"):
        assert errors[name] == pytest.approx(negatives)
