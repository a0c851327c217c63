"""The rotated bowl (diagonal preconditioning loses its advantage) and the basin map of the double well."""

import json
import math

import pytest
import torch

from descentlab.cli import main
from descentlab.experiments.basins import DIVERGED, UNSETTLED, basin_map
from descentlab.experiments.trajectories import run_trajectories
from descentlab.problems.surfaces import get_surface


def test_the_rotated_bowl_is_the_elongated_bowl_turned_45_degrees():
    # oracle: the Hessian R diag(0.4, 40) R^T with R the 45-degree rotation, written out
    bowl, turned = get_surface("elongated-bowl"), get_surface("rotated-bowl")
    c = math.sqrt(0.5)
    R = torch.tensor([[c, -c], [c, c]], dtype=torch.float64)
    expected = R @ torch.diag(torch.tensor([0.4, 40.0], dtype=torch.float64)) @ R.T
    torch.testing.assert_close(turned.hessian(torch.tensor([0.3, -1.2], dtype=torch.float64)), expected)
    torch.testing.assert_close(torch.tensor(turned.starts[0], dtype=torch.float64),
                               R @ torch.tensor(bowl.starts[0], dtype=torch.float64))


def test_gradient_descent_is_rotation_invariant_and_adagrad_is_not():
    bowl, turned = get_surface("elongated-bowl"), get_surface("rotated-bowl")
    c = math.sqrt(0.5)
    R = torch.tensor([[c, -c], [c, c]], dtype=torch.float64)
    rates = {"sgd": 0.0464, "momentum": 0.01, "adagrad": 1.0}
    straight = run_trajectories(bowl, list(rates), lr=rates)
    rotated = run_trajectories(turned, list(rates), lr=rates)
    for name in ("sgd", "momentum"):  # every GD iterate is the axis-aligned one turned by R
        torch.testing.assert_close(rotated[name].path, straight[name].path @ R.T)
        assert rotated[name].final_loss == pytest.approx(straight[name].final_loss, rel=1e-9)
    # Adagrad rescales x and y, which are the valley's directions only on the axis-aligned bowl
    assert straight["adagrad"].final_loss < 1e-3 < straight["sgd"].final_loss < rotated["adagrad"].final_loss


def _heavy_ball_on_the_well(start, lr, beta, steps):
    """The written-out heavy-ball loop (torch's convention: b = beta b + g; p = p - lr b) on the double
    well (x^2 - 1)^2 + 0.3 x + y^2, its gradient by hand: (4x^3 - 4x + 0.3, 2y)."""
    x, y = start
    bx = by = 0.0
    for _ in range(steps):
        bx = beta * bx + 4 * x**3 - 4 * x + 0.3
        by = beta * by + 2 * y
        x, y = x - lr * bx, y - lr * by
    return x, y


def test_basin_map_on_a_bowl_follows_the_heavy_ball_stability_bound():
    # On a quadratic with curvatures (0.4, 40), heavy ball converges iff lr * 40 < 2 (1 + beta):
    # lr 0.06 diverges at beta 0 (2.4 > 2) and converges at beta 0.5 (2.4 < 3). An even number of
    # rows keeps y = 0 (where the steep direction is never excited) off the grid.
    bowl = get_surface("elongated-bowl")
    found = basin_map(bowl, [(0.0, 0.0)], lrs=(0.04, 0.06), momenta=(0.0, 0.5), points=(5, 4), steps=600)
    assert found.ends.shape == (2, 2, 4, 5)
    assert (found.ends[0, 1] == DIVERGED).all()
    for i, j in ((0, 0), (1, 0), (1, 1)):
        assert (found.ends[i, j] == 0).all()
    shares = {(r["momentum"], r["lr"]): r for r in found.shares()}
    assert shares[(0.0, 0.06)]["diverged"] == 1.0 and shares[(0.5, 0.06)]["minimum 0"] == 1.0


def test_basin_map_of_the_double_well_matches_lone_heavy_ball_runs():
    well = get_surface("double-well")
    minima = [p.location for p in well.critical_points if p.kind == "local_min"]
    found = basin_map(well, minima, lrs=(0.01, 0.03), momenta=(0.0, 0.9), points=(8, 3), steps=400)
    for i, beta in enumerate(found.momenta):
        for j, lr in enumerate(found.lrs):
            for r, y in enumerate(found.ys):
                for c, x in enumerate(found.xs):
                    end = _heavy_ball_on_the_well((x, y), lr, beta, 400)
                    distance = [math.dist(end, m) for m in minima]
                    expected = min(range(2), key=lambda k: distance[k])
                    expected = expected if distance[expected] <= found.radius else UNSETTLED
                    assert int(found.ends[i, j, r, c]) == expected, (beta, lr, x, y)
    assert found.nearest_start((1.8, 0.5)) == pytest.approx((1.6, 0.0))
    with pytest.raises(ValueError, match="momenta"):
        basin_map(well, minima, momenta=(1.0,))
    with pytest.raises(ValueError, match="minima"):
        basin_map(well, [])


def test_surface_command_maps_the_basins_of_the_double_well(tmp_path, capsys):
    out = tmp_path / "well"
    assert main(["surface", "--function", "double-well", "--optimizers", "sgd,momentum", "--basin-rates", "0.01",
                 "--basin-momenta", "0,0.9", "--basin-steps", "300", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    basins = json.loads((out / "basins.json").read_text())
    assert basins["lrs"] == [0.01] and basins["momenta"] == [0.0, 0.9] and (out / "basins.png").exists()
    ends = {(e["momentum"], e["lr"]): e["end"] for e in basins["from_start"]}
    deep = min(range(2), key=lambda k: basins["losses"][k])
    assert ends[(0.9, 0.01)] == deep and ends[(0.0, 0.01)] == 1 - deep
    html = (out / "report.html").read_text()
    assert "Which minimum each start ends in" in html and "coloured by the minimum heavy-ball SGD ended in" in html
    assert "from the start (1.8, 0.5): beta 0: lr 0.01: shallow; beta 0.9: lr 0.01: deep" in printed
    # a surface without a basin map refuses the map's options; bad values are one-line errors
    assert main(["surface", "--function", "lecture", "--basin-steps", "10", "--out", str(tmp_path / "x")]) == 2
    assert main(["surface", "--function", "double-well", "--basin-momenta", "1", "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
