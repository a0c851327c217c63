"""The minimum-ratio study: the unregularised loss's exact spectra where training stopped and where Newton
ends, honest statuses, symmetric duplicates merged, the page says so."""

import json
import math

import pytest
import torch
from torch import nn

from descentlab import files
from descentlab.cli import main
from descentlab.critical.newton import L2Objective, _trust_region_steps, newton_to_critical
from descentlab.curvature import EmpiricalLoss, HessianOperator
from descentlab.experiments.minimum_ratio import analyse_point, find_critical_points, minimum_ratio_study
from descentlab.experiments.rundir import RunDir
from descentlab.problems.workloads import get_workload

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


def test_search_from_near_the_origin_converges_to_the_lecture_saddle():
    start = torch.tensor([[0.05, -0.03], [-0.08, -0.05], [0.02, 0.09]], dtype=D)
    model = Lecture()
    reports = find_critical_points(model, squared_error, DATA, start)
    for report in reports:
        assert report.status == "critical" and report.kind == "saddle"
        assert report.minimum_ratio == 0.5
        assert report.n_positive == 1 and report.n_negative == 1 and not report.degenerate
        torch.testing.assert_close(report.eigenvalues, torch.tensor([-2.0, 2.0], dtype=D), atol=1e-6, rtol=0)
        assert report.params.norm() < 1e-8 and report.grad_norm <= 1e-8
        assert report.loss == pytest.approx(1.0, abs=1e-12)
    assert float(model.w1.detach()) == 0.0  # the template model is left as it was


def test_newton_converges_quadratically_to_the_lecture_saddle():
    # near (0, 0) the Newton step -H^-1 g fits in the trust region at once; the gradient of
    # L = (1 - w1 w2)^2 is exactly linear-plus-cubic there, so ||g|| falls roughly squared each step
    start = torch.tensor([[0.05, -0.03], [-0.08, -0.05]], dtype=D)
    search = newton_to_critical(EmpiricalLoss(Lecture(), squared_error, DATA), start, grad_tol=1e-14)
    assert (search.gradient.norm(dim=1) <= 1e-14).all() and (search.steps <= 6).all()
    torch.testing.assert_close(search.theta, torch.zeros_like(start), atol=1e-12, rtol=0)
    torch.testing.assert_close(search.hessian, torch.tensor([[0.0, -2.0], [-2.0, 0.0]], dtype=D).expand(2, 2, 2),
                               atol=1e-10, rtol=0)


def test_search_near_the_minimum_curve_finds_a_degenerate_minimum():
    (report,) = find_critical_points(Lecture(), squared_error, DATA, torch.tensor([[1.3, 0.8]], dtype=D))
    w1, w2 = report.params.tolist()
    assert report.status == "critical" and w1 * w2 == pytest.approx(1.0, abs=1e-8)
    assert report.kind == "local_min" and report.degenerate and report.n_zero == 1
    # eigenvalues 0 and 2 (w1^2 + w2^2), the lecture's closed form; the zero counts as not positive
    assert report.max_eigenvalue == pytest.approx(2 * (w1**2 + w2**2), rel=1e-8)
    assert report.minimum_ratio == 0.5
    assert report.distance == pytest.approx(math.hypot(w1 - 1.3, w2 - 0.8), rel=1e-12)


def _mlp():
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def _independent_objective(flat, X, y, weight_decay):
    """F = cross-entropy + wd/2 ||theta||^2 of a freshly built network, written out by hand."""
    W1, b1, W2, b2 = torch.split(flat, [12, 4, 8, 2])
    hidden = torch.tanh(X @ W1.reshape(4, 3).T + b1)
    logits = hidden @ W2.reshape(2, 4).T + b2
    return nn.functional.cross_entropy(logits, y) + 0.5 * weight_decay * flat.dot(flat)


def test_newton_returns_each_networks_exact_hessian_and_gradient():
    # oracle: HessianOperator.dense / .gradient of each network separately (plus wd * I and
    # wd * theta for the L2 term), at the returned points
    torch.manual_seed(0)
    X, y = torch.randn(20, 3, dtype=D), torch.randint(0, 2, (20,))
    loss_fn = nn.functional.cross_entropy
    flat = 0.5 * torch.randn(3, 26, dtype=D)
    search = newton_to_critical(L2Objective(EmpiricalLoss(_mlp(), loss_fn, (X, y)), 0.01), flat, steps=2)
    assert search.theta.shape == (3, 26) and search.steps.tolist() != [0, 0, 0]
    for i in range(3):
        clone = _mlp()
        torch.nn.utils.vector_to_parameters(search.theta[i], clone.parameters())
        op = HessianOperator(clone, loss_fn, (X, y))
        torch.testing.assert_close(search.hessian[i], op.dense() + 0.01 * torch.eye(26, dtype=D),
                                   rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(search.gradient[i], op.gradient() + 0.01 * search.theta[i], rtol=1e-9, atol=1e-12)
        start_grad = torch.func.grad(_independent_objective)(flat[i], X, y, 0.01)
        assert float(search.gradient[i].norm()) <= float(start_grad.norm())  # the trust region only lowers ||g||


def test_trust_region_step_solves_the_constrained_least_squares_problem():
    # oracle: the optimality conditions of min ||g + H d|| s.t. ||d|| <= r (More 1978): either the
    # Newton step fits, or (H^2 + mu I) d = -H g with mu >= 0 and ||d|| = r; and no random point
    # of the ball does better
    from helpers import matrix_with_spectrum

    H = matrix_with_spectrum([-3.0, -0.5, 0.2, 1.0, 4.0], seed=1)
    g = torch.tensor([1.0, -2.0, 0.5, 0.3, -1.0], dtype=D)
    values, vectors = torch.linalg.eigh(H)
    newton = -torch.linalg.solve(H, g)
    for radius in (0.05, 0.5, 2.0, 100.0):
        step, residual = _trust_region_steps(values[None], vectors[None], g[None], torch.tensor([radius], dtype=D))
        step, residual = step[0], float(residual[0])
        assert residual == pytest.approx(float((g + H @ step).norm()), rel=1e-10)
        if newton.norm() <= radius:
            torch.testing.assert_close(step, newton, rtol=1e-10, atol=1e-12)
            continue
        assert float(step.norm()) == pytest.approx(radius, rel=1e-9)
        mu = float(-(H @ g + H @ H @ step).dot(step) / step.dot(step))
        assert mu >= 0
        torch.testing.assert_close((H @ H + mu * torch.eye(5, dtype=D)) @ step, -H @ g, rtol=1e-7, atol=1e-9)
        gen = torch.Generator().manual_seed(0)
        trials = torch.randn(2000, 5, generator=gen, dtype=D)
        trials = trials / trials.norm(dim=1, keepdim=True) * radius * torch.rand(2000, 1, generator=gen, dtype=D)
        assert float((g + trials @ H.T).norm(dim=1).min()) >= residual - 1e-12


@pytest.fixture(scope="module")
def small_study():
    """8 networks of 37 parameters (teacher-student, 3 hidden units) trained full-batch *with* an L2
    weight decay, then measured (trained) and Newton-refined on the unregularised loss."""
    workload = get_workload("teacher-student", dtype=D)
    return minimum_ratio_study(workload, widths=(3,), n_networks=8, train_steps=300, samples=64,
                               lr_range=(0.05, 0.2), weight_decay=1e-2, grad_tol=2e-2, seed=3)


def _study_data():
    workload = get_workload("teacher-student", dtype=D)
    keep = torch.randperm(len(workload.X_train), generator=torch.Generator().manual_seed(3))[:64]
    return workload.X_train[keep], workload.y_train[keep]


def _unregularised_loss(X, y):
    def loss(flat):
        W1, b1, W2, b2 = torch.split(flat, [30, 3, 3, 1])
        out = torch.tanh(X @ W1.reshape(3, 10).T + b1) @ W2.reshape(1, 3).T + b2
        return ((out - y) ** 2).mean()
    return loss


def test_stored_spectra_are_those_of_the_unregularised_loss_at_the_saved_points(small_study):
    # oracle: torch.func.hessian of L written out by hand (no L2 term, although training used one)
    # and torch.linalg.eigvalsh, at every saved point of both variants; the gradient norm by autograd
    X, y = _study_data()
    loss = _unregularised_loss(X, y)
    assert small_study.n_params == {3: 10 * 3 + 3 + 3 + 1}
    for point in small_study.points:
        expected = torch.linalg.eigvalsh(torch.func.hessian(loss)(point.params))
        torch.testing.assert_close(point.eigenvalues, expected, rtol=0, atol=1e-10 * float(expected.abs().max()))
        assert point.loss == pytest.approx(float(loss(point.params)), rel=1e-12)
        grad_norm = float(torch.func.grad(loss)(point.params).norm())
        assert point.grad_norm == pytest.approx(grad_norm, rel=1e-8, abs=1e-15)
        zero = expected.abs() <= 1e-6 * max(1.0, float(expected.abs().max()))
        assert point.minimum_ratio == int(((expected > 0) & ~zero).sum()) / 37


def test_training_with_weight_decay_stops_away_from_critical_points_of_l(small_study):
    # at a critical point of L + wd/2 ||theta||^2, grad L = -wd theta: the trained points are
    # measured as they are, so ||grad L|| is about wd ||theta|| there, not 0
    for point in small_study.of("trained"):
        assert point.distance == 0 and point.newton_steps == 0
        assert point.grad_norm > 0.1 * 1e-2 * float(point.params.norm())


def test_statuses_follow_each_variants_own_tolerance(small_study):
    for point in small_study.of("trained"):
        assert (point.status == "critical") == (point.grad_norm <= 2e-2)
        assert point.status in ("critical", "not critical")
    refined = small_study.of("refined")
    assert len(refined) == 8
    for point in refined:
        assert point.status in ("critical", "gradient-flat", "not converged")
        assert (point.status == "critical") == (point.grad_norm <= 1e-8)
        assert point.distance >= 0 and math.isfinite(point.start_loss)
    # every critical point is in exactly one group, and each group's copies add up to its members
    for variant in ("trained", "refined"):
        critical = [p for p in small_study.of(variant) if p.status == "critical"]
        assert variant == "refined" or len(critical) >= 4  # measured: 8 of 8 within 2e-2
        assert sum(p.copies for p in critical) == len(critical)
        for group in {p.group for p in critical}:
            members = [p for p in critical if p.group == group]
            assert [p.copies for p in members if p.copies] == [len(members)]


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


def test_analyse_point_moves_the_model_to_the_critical_point():
    model = Lecture()
    with torch.no_grad():
        model.w1.fill_(0.04)
        model.w2.fill_(-0.07)
    report = analyse_point(model, squared_error, DATA)
    assert report.kind == "saddle" and abs(float(model.w1.detach())) < 1e-9 and abs(float(model.w2.detach())) < 1e-9


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="grad_tol"):
        analyse_point(Lecture(), squared_error, DATA, grad_tol=-1.0)
    risk = EmpiricalLoss(Lecture(), squared_error, DATA)
    with pytest.raises(ValueError, match="radius"):
        newton_to_critical(risk, torch.zeros(1, 2, dtype=D), radius=0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        L2Objective(risk, weight_decay=-1.0)
    with pytest.raises(ValueError, match="starts"):
        newton_to_critical(risk, torch.zeros(1, 3, dtype=D))


def test_command_reports_the_lecture_saddle(tmp_path, capsys):
    # three starts near the origin: as they are, ||grad L|| ~ 0.1 (not critical); Newton takes each
    # to the saddle (0, 0), one distinct point (its sign-flipped copies are the same point here only
    # by plain distance: all three land exactly on the origin)
    out = tmp_path / "mr"
    assert main(["minimum-ratio", "--workload", "lecture", "--hidden", "0", "--train-steps", "0",
                 "--init-scale", "0.05", "--networks", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Trained points: 0 of 3 critical" in printed and "Refined points: 3 of 3 critical" in printed
    assert "1 distinct point (the largest stands for 3 raw points), 0 of them strict minima" in printed
    run = RunDir.open(out)
    rows = [r for r in run.read_csv("points.csv") if r["variant"] == "refined"]
    assert [r["kind"] for r in rows] == ["saddle"] * 3 and [float(r["minimum_ratio"]) for r in rows] == [0.5] * 3
    assert all(float(r["grad_norm"]) <= 1e-8 for r in rows)
    assert sorted(int(r["copies"]) for r in rows) == [0, 0, 3]
    html = run.file("report.html").read_text()
    assert "Refined points: 3 of 3 critical" in html and html.count("data:image/png;base64,") == 2
    summary = run.read_json("summary.json")
    assert summary["counts"]["refined"]["critical"] == 3 and summary["counts"]["trained"]["not critical"] == 3
    spectra = files.load_torch(run.file("eigenvalues.pt"))
    torch.testing.assert_close(spectra["refined"]["0"]["eigenvalues"], torch.tensor([[-2.0, 2.0]] * 3, dtype=D),
                               atol=1e-7, rtol=0)


def test_small_trained_study_through_the_command(tmp_path, capsys):
    out = tmp_path / "ts"
    assert main(["minimum-ratio", "--networks", "3", "--hidden", "1,2", "--train-steps", "50", "--samples", "32",
                 "--newton-steps", "10", "--json", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = RunDir.open(out).read_csv("points.csv")
    assert len(rows) == 2 * 2 * 3  # variants x widths x networks
    for row in rows:
        size = {"1": 13, "2": 25}[row["width"]]
        n = int(row["n_positive"]) + int(row["n_negative"]) + int(row["n_zero"])
        assert n == size and float(row["minimum_ratio"]) == pytest.approx(int(row["n_positive"]) / size)
        tol = 1e-3 if row["variant"] == "trained" else 1e-8
        assert (row["status"] == "critical") == (float(row["grad_norm"]) <= tol)
    assert summary["n_params"] == {"1": 13, "2": 25}
    trained = [r for r in rows if r["variant"] == "trained"]
    left_out = summary["statistics"]["trained"]["left_out"]["estimate"]
    assert left_out == pytest.approx(sum(r["status"] != "critical" for r in trained) / len(trained))


def test_the_stated_trend_is_spearmans_rho_over_distinct_points(tmp_path, capsys):
    # oracle: scipy's spearmanr over the rows that represent a distinct critical point
    from scipy.stats import spearmanr

    out = tmp_path / "rho"
    assert main(["minimum-ratio", "--networks", "6", "--hidden", "4", "--train-steps", "100", "--samples", "48",
                 "--newton-steps", "0", "--grad-tol", "1e-1", "--json", "--out", str(out)]) == 0
    stats = json.loads(capsys.readouterr().out)["statistics"]["trained"]
    distinct = [r for r in RunDir.open(out).read_csv("points.csv") if int(r["copies"]) > 0]
    assert stats["distinct"] == len(distinct) >= 3
    expected = spearmanr([float(r["loss"]) for r in distinct], [float(r["minimum_ratio"]) for r in distinct])
    if math.isfinite(expected.statistic):
        assert stats["rho"]["estimate"] == pytest.approx(expected.statistic, abs=1e-12)
        assert stats["rho"]["low"] <= stats["rho"]["estimate"] <= stats["rho"]["high"]


@pytest.mark.parametrize("argv", [["--networks", "0"], ["--workload", "nope"], ["--lr-range", "0.1", "0.01"],
                                  ["--init-scale", "0.1"], ["--optimizer", "swats"],
                                  ["--optimizer", "adamw", "--weight-decay", "0.01"], ["--weight-decay", "-1"],
                                  ["--hidden", "-1"], ["--hidden", "0,2"], ["--hidden", "2,2"], ["--hidden", "x"],
                                  ["--radius", "0"], ["--workload", "digits-cnn"], ["--grad-tol", "nan"],
                                  ["--newton-tol", "-1"], ["--merge-tol", "inf"],
                                  ["--train-steps", "0", "--weight-decay", "0.01"]])
def test_bad_input_exit_2_nothing_written(tmp_path, capsys, argv):
    assert main(["minimum-ratio", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("descentlab minimum-ratio: error:") and "\n" not in err
    assert list(tmp_path.iterdir()) == []
