"""The elongated bowl: closed-form GD on it, the valley analysis, and what ``surface --tune`` reports."""

import json
import math

import pytest
import torch

from descentlab.cli import main
from descentlab.experiments.trajectories import Trajectories, Trajectory, run_trajectories, valley_motion
from descentlab.problems.surfaces import get_surface

D = torch.float64


def test_bowl_hessian_is_constant_with_condition_number_100():
    bowl = get_surface("elongated-bowl")
    points = torch.tensor([[0.0, 0.0], [-10.0, 2.0], [7.0, -1.5]], dtype=D)
    torch.testing.assert_close(bowl.hessian(points), torch.diag(torch.tensor([0.4, 40.0], dtype=D)).expand(3, 2, 2))
    values = torch.linalg.eigvalsh(bowl.hessian(points[0]))
    assert float(values[1] / values[0]) == pytest.approx(100.0, rel=1e-14)


def test_plain_gd_on_the_bowl_follows_the_closed_form():
    # GD on 0.2 x^2 + 20 y^2 multiplies x by (1 - 0.4 lr) and y by (1 - 40 lr) every step: the
    # torch.optim.SGD path the registry hands out must match to rounding (150 float64 steps)
    bowl = get_surface("elongated-bowl")
    lr = 0.0464
    path = run_trajectories(bowl, ["sgd"], (-10.0, 2.0), 150, lr=lr).paths[0].path
    steps = torch.arange(151, dtype=D)
    expected = torch.stack([-10.0 * (1 - 0.4 * lr) ** steps, 2.0 * (1 - 40 * lr) ** steps], dim=1)
    torch.testing.assert_close(path, expected, rtol=1e-10, atol=1e-14)


def test_valley_motion_counts_swings_and_what_is_left():
    bowl = get_surface("elongated-bowl")
    # a hand-made path: y flips sign three times, x goes from -10 to -5, then to -2
    path = torch.tensor([[-10.0, 1.0], [-8.0, -0.5], [-5.0, 0.25], [-2.0, -0.1]], dtype=D)
    trajectory = Trajectory("hand", 0.1, path, bowl(path))
    valley = valley_motion(bowl, Trajectories("elongated-bowl", (-10.0, 1.0), 3, (trajectory,)), (0.0, 0.0))
    (motion,) = valley.motions
    assert valley.eigenvalues == pytest.approx((0.4, 40.0)) and valley.condition == pytest.approx(100.0)
    assert motion.sign_changes == 3
    assert motion.shallow_left == pytest.approx(0.2)
    assert motion.distance_left == pytest.approx(math.hypot(2.0, 0.1) / math.hypot(10.0, 1.0))
    assert not motion.reached


@pytest.fixture(scope="module")
def tuned_bowl(tmp_path_factory):
    out = tmp_path_factory.mktemp("bowl") / "run"
    assert main(["surface", "--function", "elongated-bowl", "--optimizers", "sgd,adagrad,rmsprop,adam", "--tune",
                 "--out", str(out)]) == 0
    return out


def test_tuned_gd_swings_and_crawls_while_adaptive_rates_reach_the_minimum(tuned_bowl):
    valley = json.loads((tuned_bowl / "valley.json").read_text())
    motions = {m["optimizer"]: m for m in valley["motions"]}
    sgd = motions["sgd"]
    # the best stable rate on the grid is 0.0464 < 2/40: y flips every step, x keeps (1 - 0.4 lr)^150
    assert sgd["lr"] == pytest.approx(10 ** (-4 + 8 / 3)) and not sgd["reached"]
    assert sgd["sign_changes"] == 150
    assert sgd["shallow_left"] == pytest.approx((1 - 0.4 * sgd["lr"]) ** 150, rel=1e-9)
    for name in ("adagrad", "rmsprop", "adam"):
        assert motions[name]["reached"] and motions[name]["distance_left"] <= 0.01, name
    html = (tuned_bowl / "report.html").read_text()
    assert "Across and along the valley" in html and "Did not: sgd" in html


def test_no_valley_analysis_where_the_hessian_is_not_constant(tmp_path):
    out = tmp_path / "rosen"
    assert main(["surface", "--function", "rosenbrock", "--optimizers", "sgd", "--steps", "5", "--out", str(out)]) == 0
    assert not (out / "valley.json").exists()
