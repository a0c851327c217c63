"""``descentlab surface``: the run directory, its figures, the GIF, the report, and bad input."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from descentlab.cli import main
from descentlab.experiments.rundir import RunDir
from descentlab.report.render import render
from descentlab.report.surface_figures import animate_paths, frame_count


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("surface") / "dw"
    code = main(["surface", "--function", "double-well", "--optimizers", "sgd,momentum,adam", "--steps", "45",
                 "--animate", "--frame-every", "10", "--out", str(out)])
    assert code == 0
    return out


def test_run_directory_has_every_file(run_dir):
    for name in ("config.json", "paths.csv", "critical_points.json", "grid.npz", "dimension_lift.json",
                 "contour.png", "loss.png", "dimension_lift.png", "paths.gif", "report.html"):
        assert (run_dir / name).stat().st_size > 0, name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["kind"] == "surface" and config["function"] == "double-well"
    assert config["lrs"] == {"sgd": 0.01, "momentum": 0.01, "adam": 0.05}
    with open(run_dir / "paths.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 46 and {r["optimizer"] for r in rows} == {"sgd", "momentum", "adam"}
    points = json.loads((run_dir / "critical_points.json").read_text())["points"]
    assert sorted(p["kind"] for p in points) == ["local_min", "local_min", "saddle"]


def test_gif_has_one_frame_per_k_steps(run_dir):
    with Image.open(run_dir / "paths.gif") as gif:
        assert gif.n_frames == frame_count(45, 10) == 5  # steps 0, 10, 20, 30, 40


def test_report_embeds_figures_and_re_renders_from_the_directory(run_dir):
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "data:image/gif;base64," in html
    assert "saddle" in html and "momentum" in html
    (run_dir / "contour.png").unlink()
    render(RunDir.open(run_dir))
    assert (run_dir / "contour.png").stat().st_size > 0


def test_animate_paths_frame_count(tmp_path):
    x = np.linspace(-1, 1, 30)
    grid = {"x": np.meshgrid(x, x)[0], "y": np.meshgrid(x, x)[1], "z": np.meshgrid(x, x)[0] ** 2}
    path = {"x": np.linspace(0.5, 0.0, 24), "y": np.zeros(24), "loss": np.zeros(24)}  # 23 steps
    frames = animate_paths(tmp_path / "a.gif", grid, [], [], {"sgd": path}, ((-1, 1), (-1, 1)), every=4)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == frames == 23 // 4 + 1
    with pytest.raises(ValueError, match="every"):
        animate_paths(tmp_path / "b.gif", grid, [], [], {"sgd": path}, ((-1, 1), (-1, 1)), every=0)


def test_list_prints_surfaces_and_critical_points(capsys):
    assert main(["surface", "--list"]) == 0
    out = capsys.readouterr().out
    assert "himmelblau" in out and "(-0.270845, -0.923039)  local_max" in out
    assert "(0, 0)  saddle, degenerate" in out and "w1 * w2 = 1" in out


@pytest.mark.parametrize("argv, message", [
    (["--function", "nope"], "unknown surface 'nope'; valid: lecture, saddle"),
    (["--optimizers", "sgd,adamm"], "unknown optimizer 'adamm'; valid: sgd"),
    (["--start", "1;2"], "--start must be two numbers"),
    (["--steps", "0"], "--steps must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert main(["surface", *argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_dimension_lift_is_a_minimum_in_1d_and_a_saddle_in_2d(run_dir):
    lift = json.loads((run_dir / "dimension_lift.json").read_text())
    bump = np.roots([4.0, 0.0, -4.0, 0.3]).real
    bump = float(bump[np.argsort(bump)][1])  # the middle root of dL/dx = 4x^3 - 4x + 0.3
    assert lift["point"] == pytest.approx([bump, 0.0], abs=1e-9)
    # Hessian at (x_b, 0) is diag(12 x_b^2 - 4, 2): one eigenvalue each sign
    assert lift["eigenvalues"] == pytest.approx(sorted([12 * bump**2 - 4, 2.0]))
    up, down = np.asarray(lift["loss_up"]), np.asarray(lift["loss_down"])
    middle = len(lift["t"]) // 2
    assert lift["t"][middle] == pytest.approx(0.0, abs=1e-12)
    assert int(np.argmin(up)) == middle and int(np.argmax(down)) == middle
