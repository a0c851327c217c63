"""The minimum-ratio study: the search finds the lecture's saddle, statuses are honest, the page says so."""

import math

import pytest
import torch
from torch import nn

from descentlab.cli import main
from descentlab.curvature import HessianOperator
from descentlab.experiments.minimum_ratio import (
    analyse_point,
    descend_gradient_norm,
    find_critical_points,
    newton_to_critical,
)
from descentlab.experiments.rundir import RunDir

D = torch.float64


class Lecture(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.zeros((), dtype=D))
        self.w2 = nn.Parameter(torch.zeros((), dtype=D))

    def forward(self, x):
        return self.w1 * self.w2 * x


def squared_error(output, target):
    return ((output - target) ** 2).mean()


DATA = (torch.ones(1, 1, dtype=D), torch.ones(1, 1, dtype=D))


def test_gradient_norm_step_is_the_hessian_times_the_gradient():
    # one Adam step's input is grad(1/2 ||g||^2) = H g; check it on the lecture model in closed form
    w1, w2 = 0.3, -0.4
    r = 1 - w1 * w2
    g = torch.tensor([-2 * w2 * r, -2 * w1 * r], dtype=D)
    H = torch.tensor([[2 * w2**2, -2 * r + 2 * w1 * w2], [-2 * r + 2 * w1 * w2, 2 * w1**2]], dtype=D)
    expected = H @ g
    params = {"w1": torch.tensor([w1], dtype=D), "w2": torch.tensor([w2], dtype=D)}
    # Adam's first step moves every coordinate by lr * sign(grad): read the sign of H g off it
    moved = descend_gradient_norm(Lecture(), squared_error, DATA, params, steps=1, lr=1e-3)
    step = torch.cat([moved["w1"] - w1, moved["w2"] - w2])
    torch.testing.assert_close(step, -1e-3 * torch.sign(expected), rtol=1e-6, atol=1e-9)


def test_search_from_near_the_origin_converges_to_the_lecture_saddle():
    start = {"w1": torch.tensor([0.05, -0.08, 0.02], dtype=D), "w2": torch.tensor([-0.03, -0.05, 0.09], dtype=D)}
    model = Lecture()
    reports = find_critical_points(model, squared_error, DATA, start, search_steps=300, search_lr=1e-2)
    for report in reports:
        assert report.status == "critical" and report.kind == "saddle"
        assert report.minimum_ratio == 0.5
        assert report.n_positive == 1 and report.n_negative == 1 and not report.degenerate
        torch.testing.assert_close(report.eigenvalues, torch.tensor([-2.0, 2.0], dtype=D), atol=1e-6, rtol=0)
        assert report.params.norm() < 1e-6 and report.grad_norm <= 1e-6
        assert report.loss == pytest.approx(1.0, abs=1e-10)
    assert float(model.w1.detach()) == 0.0  # the template model is left as it was


def test_search_near_the_minimum_curve_finds_a_degenerate_minimum():
    start = {"w1": torch.tensor([1.3], dtype=D), "w2": torch.tensor([0.8], dtype=D)}
    (report,) = find_critical_points(Lecture(), squared_error, DATA, start, search_steps=100, search_lr=1e-2)
    w1, w2 = report.params.tolist()
    assert report.status == "critical" and w1 * w2 == pytest.approx(1.0, abs=1e-6)
    assert report.kind == "local_min" and report.degenerate and report.n_zero == 1
    # eigenvalues 0 and 2 (w1^2 + w2^2), the lecture's closed form; the zero counts as not positive
    assert report.max_eigenvalue == pytest.approx(2 * (w1**2 + w2**2), rel=1e-6)
    assert report.minimum_ratio == 0.5


def test_batched_newton_returns_each_networks_exact_hessian_and_gradient():
    # oracle: HessianOperator.dense / .gradient of each network separately, at the returned point
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, y = torch.randn(20, 3, dtype=D), torch.randint(0, 2, (20,))
    loss_fn = nn.functional.cross_entropy
    n = sum(p.numel() for p in model.parameters())
    flat = 0.5 * torch.randn(3, n, dtype=D)
    theta, g, H, accepted = newton_to_critical(model, loss_fn, (X, y), flat, steps=2)
    assert theta.shape == (3, n) and accepted.tolist() != [0, 0, 0]
    for i in range(3):
        clone = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        torch.nn.utils.vector_to_parameters(theta[i], clone.parameters())
        op = HessianOperator(clone, loss_fn, (X, y))
        torch.testing.assert_close(H[i], op.dense(), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(g[i], op.gradient(), rtol=1e-9, atol=1e-12)
        torch.nn.utils.vector_to_parameters(flat[i], clone.parameters())
        assert float(g[i].norm()) <= float(HessianOperator(clone, loss_fn, (X, y)).gradient().norm())


def test_newton_alone_converges_quadratically_to_the_lecture_saddle():
    # no Adam: Levenberg-Marquardt with the exact Hessian from near the origin; ||g|| falls
    # roughly squared each step, so a handful of steps reach 1e-12
    start = torch.tensor([[0.05, -0.03], [-0.08, -0.05]], dtype=D)
    theta, g, H, accepted = newton_to_critical(Lecture(), squared_error, DATA, start, steps=12, grad_tol=1e-12)
    assert (g.norm(dim=1) <= 1e-12).all() and (accepted <= 8).all()
    torch.testing.assert_close(theta, torch.zeros_like(theta), atol=1e-9, rtol=0)
    torch.testing.assert_close(H, torch.tensor([[0.0, -2.0], [-2.0, 0.0]], dtype=D).expand(2, 2, 2), atol=1e-8, rtol=0)
    reports = find_critical_points(Lecture(), squared_error, DATA, {"w1": start[:, 0], "w2": start[:, 1]},
                                   search_steps=0, newton_steps=12)
    assert [r.kind for r in reports] == ["saddle", "saddle"] and [r.minimum_ratio for r in reports] == [0.5, 0.5]


class Quartic(nn.Module):
    """L = x^4 + y^2 (as a model): grad = (4x^3, 2y), H = diag(12x^2, 2)."""

    def __init__(self, x, y):
        super().__init__()
        self.x = nn.Parameter(torch.tensor(x, dtype=D))
        self.y = nn.Parameter(torch.tensor(y, dtype=D))

    def forward(self, inputs):
        return (self.x**4 + self.y**2).expand(inputs.shape[0])


def mean_output(output, target):
    return output.mean()


def test_a_point_that_is_not_critical_is_not_called_critical():
    # at (x, 0) with x = 0.5: g = (0.5, 0), Hg/|g| = 12 x^2 = 3 relative to max|lambda| = 3 -> not flat
    report = analyse_point(Quartic(0.5, 0.0), mean_output, DATA, newton_steps=0)
    assert report.status == "not converged" and report.grad_norm == pytest.approx(0.5)
    assert report.gradient_flat == pytest.approx(3.0)
    # at (x, 0) with tiny x: g = 4x^3 is above grad_tol but lies along curvature 12 x^2 << 2 -> gradient-flat
    x = 0.02
    report = analyse_point(Quartic(x, 0.0), mean_output, DATA, newton_steps=0, grad_tol=1e-8)
    assert report.grad_norm == pytest.approx(4 * x**3)
    assert report.gradient_flat == pytest.approx(12 * x**2) and report.status == "gradient-flat"


def test_bad_tolerances_name_themselves():
    with pytest.raises(ValueError, match="grad_tol"):
        analyse_point(Lecture(), squared_error, DATA, grad_tol=-1.0)
    with pytest.raises(ValueError, match="steps"):
        descend_gradient_norm(Lecture(), squared_error, DATA, {"w1": torch.zeros(1, dtype=D),
                                                                "w2": torch.zeros(1, dtype=D)}, steps=-1)


def test_command_reports_the_lecture_saddle(tmp_path, capsys):
    out = tmp_path / "mr"
    assert main(["minimum-ratio", "--workload", "lecture", "--train-steps", "0", "--init-scale", "0.05",
                 "--networks", "3", "--search-steps", "300", "--search-lr", "0.01", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Of 3 searched points, 3 reached a critical point" in printed
    run = RunDir.open(out)
    rows = run.read_csv("points.csv")
    assert [r["kind"] for r in rows] == ["saddle"] * 3 and [float(r["minimum_ratio"]) for r in rows] == [0.5] * 3
    html = run.file("report.html").read_text()
    assert "0 were strict minima" in html and html.count("data:image/png;base64,") == 2
    summary = run.read_json("summary.json")
    assert summary["counts"]["critical"] == 3 and summary["counts"]["strict minima (ratio 1)"] == 0


def test_small_trained_study_on_moons(tmp_path, capsys):
    out = tmp_path / "moons"
    assert main(["minimum-ratio", "--networks", "3", "--train-steps", "30", "--samples", "64",
                 "--search-steps", "20", "--newton-steps", "1", "--out", str(out)]) == 0
    rows = RunDir.open(out).read_csv("points.csv")
    assert len(rows) == 3
    for row in rows:
        n = int(row["n_positive"]) + int(row["n_negative"]) + int(row["n_zero"])
        assert n == 354 and float(row["minimum_ratio"]) == pytest.approx(int(row["n_positive"]) / 354)
        assert math.isfinite(float(row["loss"])) and row["status"] in ("critical", "gradient-flat", "not converged")
        # a point is called critical only with a small gradient
        assert row["status"] != "critical" or float(row["grad_norm"]) <= 1e-6


@pytest.mark.parametrize("argv", [["--networks", "0"], ["--workload", "nope"], ["--lr-range", "0.1", "0.01"],
                                  ["--init-scale", "0.1"], ["--optimizer", "swats"]])
def test_bad_input_exit_2_nothing_written(tmp_path, capsys, argv):
    assert main(["minimum-ratio", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("descentlab minimum-ratio: error:") and "\n" not in err
    assert list(tmp_path.iterdir()) == []
