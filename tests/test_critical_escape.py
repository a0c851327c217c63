"""escape: the lecture's saddle, the predicted decrease, the sign rule, never a rising step, the stall preset.

Oracles: L = (1 − w1·w2)² along u = (1, 1)/√2 from the origin is (1 − t²/2)², so the decrease is
t² − t⁴/4 against the predicted −½·λ·t² = t² (λ = −2); the loss recomputed by a plain forward pass.
"""

import dataclasses
import math

import pytest
import torch

from descentlab.critical import Escape, classify, escape
from descentlab.problems.workloads import get_workload

from helpers import F64 as f64
from helpers import lecture_at as _lecture


def _forward_loss(model, loss_fn, data):
    with torch.no_grad():
        return loss_fn(model(data[0]), data[1]).item()


def test_escape_from_the_lecture_saddle_lowers_the_loss():
    model, loss_fn, data = _lecture(0.0, 0.0)
    result = escape(model, loss_fn, data)
    assert result.applied and result.loss_before == 1.0
    # t = 1 is accepted: (1 - 1/2)^2 = 0.25, and the model is left where the loss was measured
    assert result.step_size == 1.0 and result.loss_after == pytest.approx(0.25, abs=1e-12)
    assert _forward_loss(model, loss_fn, data) == result.loss_after
    s = 1 / math.sqrt(2)
    assert (model.w1.item(), model.w2.item()) == (pytest.approx(s, abs=1e-12), pytest.approx(s, abs=1e-12))
    assert result.eigenvalue == pytest.approx(-2.0, abs=1e-12)
    assert result.predicted_decrease == pytest.approx(1.0, abs=1e-12)
    assert result.actual_decrease == pytest.approx(0.75, abs=1e-12)
    # after the step the point is no longer critical
    assert classify(model, loss_fn, data).kind == "not_critical"


@pytest.mark.parametrize("t", [1e-1, 1e-2, 1e-3])
def test_actual_decrease_matches_the_prediction_for_small_steps(t):
    model, loss_fn, data = _lecture(0.0, 0.0)
    result = escape(model, loss_fn, data, max_step=t)
    assert result.applied and result.step_size == t
    assert result.predicted_decrease == pytest.approx(t**2, rel=1e-12)          # -1/2 * (-2) * t^2
    assert result.actual_decrease == pytest.approx(t**2 - t**4 / 4, rel=1e-9)   # the closed form
    # the quadratic model's relative error is t^2 / 4: it vanishes as t -> 0
    gap = (result.predicted_decrease - result.actual_decrease) / result.predicted_decrease
    assert gap == pytest.approx(t**2 / 4, rel=1e-2)  # (float64 cancellation in 1 - (1 - t²/2)² at t = 1e-3)


def test_backtracking_halves_a_step_that_overshoots():
    model, loss_fn, data = _lecture(0.0, 0.0)
    # t = 3: (1 - 9/2)^2 = 12.25 > 1, rejected; t = 1.5: (1 - 1.125)^2 = 0.015625, accepted
    result = escape(model, loss_fn, data, max_step=3.0)
    assert result.applied and result.step_size == 1.5 and result.n_evaluations == 3
    assert result.loss_after == pytest.approx(0.125**2, abs=1e-12)


def test_a_step_that_raises_the_loss_is_never_applied():
    model, loss_fn, data = _lecture(0.0, 0.0)
    result = escape(model, loss_fn, data, max_step=3.0, max_trials=1)
    assert not result.applied and result.loss_after == result.loss_before == 1.0
    assert result.step_size == 0.0 and result.predicted_decrease == 0.0 and "unchanged" in result.reason
    assert (model.w1.item(), model.w2.item()) == (0.0, 0.0)


def test_no_negative_curvature_means_no_step():
    model, loss_fn, data = _lecture(1.0, 1.0)  # a degenerate minimum: eigenvalues 0 and 4
    result = escape(model, loss_fn, data)
    assert not result.applied and result.eigenvalue is None and "no negative curvature" in result.reason
    assert (model.w1.item(), model.w2.item()) == (1.0, 1.0) and result.loss_after == result.loss_before == 0.0


def test_curvature_within_eig_tol_of_zero_is_not_escaped_along():
    # L = -1e-7 w1² + w2²: lambda_min = -2e-7, zero for eig_tol = 1e-6 (degenerate; the probe sees the fall:
    # a saddle), but no direction to step along at the second order
    model = _Quadratic(-1e-7, 1.0)
    data = (torch.zeros(1, 1, dtype=f64), torch.zeros(1, dtype=f64))
    point = classify(model, _passthrough, data)
    assert point.min_eigenvalue == pytest.approx(-2e-7) and point.degenerate and point.kind == "saddle"
    result = escape(model, _passthrough, data, point)
    assert not result.applied and "zero within eig_tol" in result.reason
    # a looser rule makes it real negative curvature, and then the step is taken
    point = classify(model, _passthrough, data, eig_tol=1e-8)
    assert not point.degenerate and point.kind == "saddle"
    assert escape(model, _passthrough, data, point, max_step=100.0).applied


class _Quadratic(torch.nn.Module):
    """L = a·w1² + b·w2², the model's output (the loss_fn passes it through)."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b
        self.w = torch.nn.Parameter(torch.zeros(2, dtype=f64))

    def forward(self, x):
        return self.a * self.w[0] ** 2 + self.b * self.w[1] ** 2 + 0 * x.sum()


def _passthrough(output, target):
    return output


def test_the_sign_is_chosen_so_the_gradient_does_not_oppose_the_step():
    # at (-1/2, -1/2): H = [[0.5, -1], [-1, 0.5]], lambda_min = -0.5 with u = (1, 1)/√2 (the eigenvector sign
    # convention makes its entries positive), but g = (0.75, 0.75): the step must go along -u
    model, loss_fn, data = _lecture(-0.5, -0.5)
    point = classify(model, loss_fn, data)
    assert point.kind == "not_critical" and point.min_eigenvalue == pytest.approx(-0.5)
    assert point.eigenpairs.vectors[:, 0].sum() > 0
    result = escape(model, loss_fn, data, point)
    assert result.slope < 0 and result.applied
    s = 1 / math.sqrt(2)
    assert torch.allclose(result.direction, torch.tensor([-s, -s], dtype=f64), atol=1e-12)
    assert result.loss_after < result.loss_before
    # mirror image: at (+1/2, +1/2), g = (-0.75, -0.75) and the step goes along +u
    model, loss_fn, data = _lecture(0.5, 0.5)
    result = escape(model, loss_fn, data)
    assert torch.allclose(result.direction, torch.tensor([s, s], dtype=f64), atol=1e-12)


def test_a_point_from_other_parameters_is_refused():
    model, loss_fn, data = _lecture(0.0, 0.0)
    point = classify(model, loss_fn, data)
    with torch.no_grad():
        model.w1.add_(1e-3)
    with pytest.raises(ValueError, match="point"):
        escape(model, loss_fn, data, point)
    with pytest.raises(ValueError, match="point"):
        escape(model, loss_fn, data, "saddle")


@pytest.mark.parametrize("kwargs, name", [
    ({"max_step": 0.0}, "max_step"),
    ({"max_step": float("inf")}, "max_step"),
    ({"shrink": 1.0}, "shrink"),
    ({"shrink": 0.0}, "shrink"),
    ({"max_trials": 0}, "max_trials"),
    ({"sufficient_decrease": 1.0}, "sufficient_decrease"),
    ({"sufficient_decrease": -0.1}, "sufficient_decrease"),
    ({"k": 1}, "k"),
])
def test_bad_arguments_name_themselves(kwargs, name):
    model, loss_fn, data = _lecture(0.0, 0.0)
    with pytest.raises(ValueError, match=name):
        escape(model, loss_fn, data, **kwargs)


def test_classify_options_with_a_point_are_refused():
    model, loss_fn, data = _lecture(0.0, 0.0)
    point = classify(model, loss_fn, data)
    with pytest.raises(ValueError, match="point is None"):
        escape(model, loss_fn, data, point, k=4)


def test_the_result_is_a_frozen_dataclass_with_a_readable_repr():
    model, loss_fn, data = _lecture(0.0, 0.0)
    result = escape(model, loss_fn, data)
    assert isinstance(result, Escape)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.applied = False
    for part in ("applied=True", "loss_before=1", "loss_after=0.25", "step_size=1", "eigenvalue=-2",
                 "predicted_decrease=1"):
        assert part in repr(result)


@pytest.mark.slow
def test_stall_preset_plateau_is_a_saddle_and_escape_drops_the_loss_by_a_tenth():
    """The digits stall preset after 100 full-batch SGD steps: diagnosed and escaped (float32, 610 parameters)."""
    workload = get_workload("stall")
    torch.manual_seed(0)
    model = workload.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=workload.lr)
    data = (workload.X_train, workload.y_train)
    for _ in range(100):
        optimizer.zero_grad()
        workload.loss_fn(model(data[0]), data[1]).backward()
        optimizer.step()
    point = classify(model, workload.loss_fn, data)
    assert point.kind == "saddle" and point.method == "exact" and point.n_params == 610
    assert abs(point.loss - math.log(10)) < 1e-3            # the uniform guess: the plateau
    assert point.min_eigenvalue < -0.5 < 0.5 < point.max_eigenvalue
    assert 0 < point.minimum_ratio < 0.5
    result = escape(model, workload.loss_fn, data, point)
    assert result.applied and result.actual_decrease >= 0.1
    assert _forward_loss(model, workload.loss_fn, data) == pytest.approx(result.loss_after, abs=1e-6)


class _ThreeScalars(torch.nn.Module):
    """L = (1 - w1·w2)² + (w3 - 1)², written as the model's output (the loss_fn passes it through)."""

    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.zeros((), dtype=f64))
        self.w2 = torch.nn.Parameter(torch.zeros((), dtype=f64))
        self.w3 = torch.nn.Parameter(torch.zeros((), dtype=f64))

    def forward(self, x):
        return (1 - self.w1 * self.w2) ** 2 + (self.w3 - 1) ** 2 + 0 * x.sum()


def test_a_parameter_subset_is_classified_and_moved_alone():
    model = _ThreeScalars()
    data = (torch.zeros(1, 1, dtype=f64), torch.zeros(1, dtype=f64))
    passthrough = lambda output, target: output  # noqa: E731
    # w3 alone is far from its optimum, but only (w1, w2) are asked about: the lecture's saddle
    point = classify(model, passthrough, data, params=["w1", "w2"])
    assert point.names == ("w1", "w2") and point.kind == "saddle"
    assert classify(model, passthrough, data).kind == "not_critical"
    result = escape(model, passthrough, data, point)
    assert result.applied and model.w3.item() == 0.0
    assert model.w1.item() * model.w2.item() == pytest.approx(0.5, abs=1e-12)  # t = 1 along (1, 1)/√2
    assert result.loss_after == pytest.approx(0.25 + 1.0, abs=1e-12)
