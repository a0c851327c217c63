"""The landscape library behind ``descentlab landscape``: trajectory planes, the quadratic model, one call per slice.

Oracles: points built on a known plane, a quadratic loss's closed-form slope and curvature, the
lecture's closed form ``(1 - w1 w2)^2``.
"""

import pytest
import torch
from torch import nn

from helpers import lecture_at, matrix_with_spectrum

from descentlab.landscape import (
    DirectionRequest,
    LineRequest,
    PlaneRequest,
    Trajectory,
    covering_span,
    plane_directions,
    project_trajectory,
    quadratic_model,
    slice_landscape,
    trajectory_plane,
)

D = torch.float64


class Quadratic(nn.Module):
    """L(theta) = 1/2 theta^T A theta, whatever the data (the output is the loss itself)."""

    def __init__(self, A, theta):
        super().__init__()
        self.register_buffer("A", A)
        self.theta = nn.Parameter(theta.clone())

    def forward(self, x):
        return (0.5 * self.theta @ self.A @ self.theta).expand(x.shape[0])


def mean_output(output, target):
    return output.mean()


ONE = (torch.zeros(1, 1, dtype=D), torch.zeros(1, 1, dtype=D))


def _orthonormal_pair(n, seed):
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, 2, generator=gen, dtype=D))
    return Q[:, 0], Q[:, 1]


def test_a_trajectory_in_a_plane_gives_that_plane_and_all_of_its_variance():
    u, v = _orthonormal_pair(7, seed=0)
    center = torch.linspace(-1, 1, 7, dtype=D)
    a = torch.tensor([3.0, 2.0, -1.5, 0.5, 0.0], dtype=D)  # the path moves most along u
    b = torch.tensor([0.2, -0.3, 0.0, 0.0, 0.0], dtype=D)  # a . b = 0: u and v are the principal axes
    points = center + a[:, None] * u + b[:, None] * v
    found = trajectory_plane(points, center)
    assert abs(float(found.d1 @ u)) == pytest.approx(1.0, abs=1e-12)
    assert abs(float(found.d2 @ v)) == pytest.approx(1.0, abs=1e-12)
    assert sum(found.explained) == pytest.approx(1.0, abs=1e-12)
    # oracle: the squared lengths of the offsets along u and v, by construction
    assert found.explained[0] == pytest.approx(float((a * a).sum() / ((a * a).sum() + (b * b).sum())), rel=1e-12)
    with pytest.raises(ValueError, match="two snapshots"):
        trajectory_plane(points[:1], center)


def test_projected_snapshots_of_the_lecture_lie_on_its_axes_plane():
    model, loss_fn, data = lecture_at(0.5, 1.5)
    points = torch.tensor([[0.0, 0.0], [0.2, 0.9], [0.5, 1.5]], dtype=D)
    e1, e2 = torch.eye(2, dtype=D)
    path = project_trajectory(model, loss_fn, data, Trajectory((0, 5, 10), points), torch.zeros(2, dtype=D), e1, e2)
    torch.testing.assert_close(path.coords, points, rtol=0, atol=1e-15)
    assert path.off_plane.abs().max() <= 1e-15
    torch.testing.assert_close(path.losses, (1 - points[:, 0] * points[:, 1]) ** 2, rtol=0, atol=1e-15)
    (span_a, span_b) = covering_span(path.coords, 0.1)
    # a in [0, 0.5] widened by 15 % of 0.5, never inside [-0.1, 0.1]; b in [0, 1.5] by 15 % of 1.5
    assert span_a == pytest.approx((-0.1, 0.575)) and span_b == pytest.approx((-0.225, 1.725))


def test_quadratic_model_is_the_closed_form_slope_and_curvature():
    A = matrix_with_spectrum([-2.0, 0.5, 3.0], seed=2)
    theta = torch.tensor([0.3, -0.2, 0.7], dtype=D)
    d = torch.tensor([1.0, 2.0, -1.0], dtype=D)
    q = quadratic_model(Quadratic(A, theta), mean_output, ONE, d)
    assert q.loss == pytest.approx(float(0.5 * theta @ A @ theta), rel=1e-13)
    assert q.slope == pytest.approx(float((A @ theta) @ d), rel=1e-13)
    assert q.curvature == pytest.approx(float(d @ A @ d), rel=1e-13)
    # a quadratic loss is its own second-order model: q(t) = L(theta + t d) exactly
    t = 0.8
    assert q(t) == pytest.approx(float(0.5 * (theta + t * d) @ A @ (theta + t * d)), rel=1e-12)


def test_one_call_gives_each_slice_of_the_lecture():
    model, loss_fn, data = lecture_at(0.5, 1.5)
    line = slice_landscape(model, loss_fn, data, LineRequest(torch.zeros(2, dtype=D), torch.tensor([0.5, 1.5], dtype=D),
                                                             n_points=5, margin=0.0))
    torch.testing.assert_close(line.losses, (1 - line.t**2 * 0.75) ** 2, rtol=0, atol=1e-14)

    view = slice_landscape(model, loss_fn, data, DirectionRequest(torch.tensor([1.0, -1.0], dtype=D), n_points=5))
    t = view.slice.t
    torch.testing.assert_close(view.slice.losses, (1 - (0.5 + t) * (1.5 - t)) ** 2, rtol=0, atol=1e-14)
    # L = (1 - w1 w2)^2 at (0.5, 1.5): g = -2 (1 - w1 w2) (w2, w1) = (-0.75, -0.25), so g.d = -0.5 along
    # d = (1, -1); H = [[2 w2^2, 4 w1 w2 - 2], [4 w1 w2 - 2, 2 w1^2]], so d^T H d = 2 w2^2 + 2 w1^2 - 2 (4 w1 w2 - 2)
    assert view.quadratic.slope == pytest.approx(-0.5, rel=1e-12)
    assert view.quadratic.curvature == pytest.approx(2 * 1.5**2 + 2 * 0.5**2 - 2 * (4 * 0.75 - 2), rel=1e-12)

    plane = slice_landscape(model, loss_fn, data, PlaneRequest(resolution=5, start=torch.zeros(2, dtype=D)))
    assert plane.plane.kind == "axes" and (plane.plane.a_label, plane.plane.b_label) == ("w1", "w2")
    assert plane.marks == (("init", 0.0, 0.0), ("model", 0.5, 1.5))
    bb, aa = torch.meshgrid(plane.grid.b, plane.grid.a, indexing="ij")
    torch.testing.assert_close(plane.grid.losses, (1 - aa * bb) ** 2, rtol=0, atol=1e-14)


def test_what_only_the_model_can_tell_is_a_value_error_naming_the_argument():
    model, loss_fn, data = lecture_at(0.5, 1.5)
    with pytest.raises(ValueError, match="filter_norm"):  # every tensor is a scalar: filter normalisation zeroes it
        plane_directions(model, loss_fn, data, "random")
    with pytest.raises(ValueError, match="direction: 3 values"):
        slice_landscape(model, loss_fn, data, DirectionRequest(torch.ones(3, dtype=D)))
    with pytest.raises(ValueError, match="kind: 'axes'"):
        plane_directions(nn.Linear(2, 2).double(), loss_fn, data, "axes")
    with pytest.raises(ValueError, match="end: the same point"):
        LineRequest(torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="trajectory"):
        PlaneRequest("pca")
