"""`descentlab landscape`: run directories, their data files, the report, and bad input."""

import json

import pytest
import torch

from descentlab import files
from descentlab.cli import main
from descentlab.experiments.rundir import RunDir
from descentlab.report.render import render


def _grid(run):
    return [(float(r["a"]), float(r["b"]), float(r["loss"])) for r in run.read_csv("grid.csv")]


def test_lecture_plane_is_the_closed_form_and_the_report_re_renders(tmp_path, capsys):
    out = tmp_path / "lecture"
    assert main(["landscape", "--workload", "lecture", "--span", "2", "--resolution", "11", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "loss at centre" in printed and "report.html" in printed
    run = RunDir.open(out)
    assert run.kind == "landscape"
    grid = _grid(run)
    assert len(grid) == 121
    for w1, w2, loss in grid:  # float32 workload: the closed form to float32 precision
        assert loss == pytest.approx((1 - w1 * w2) ** 2, rel=1e-5, abs=1e-5)
    summary = run.read_json("summary.json")
    assert summary["table"]["loss at centre"] == pytest.approx(1.0)
    html = run.file("report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "w1" in html
    run.file("report.html").unlink()
    render(out)  # reads only the run directory
    assert run.exists("report.html") and run.exists("contour.png") and run.exists("surface.png")


def test_trained_line_runs_from_the_initial_to_the_final_weights(tmp_path):
    out = tmp_path / "line"
    assert main(["landscape", "--workload", "moons", "--train-steps", "12", "--slice", "line", "--points", "9",
                 "--margin", "0.5", "--out", str(out)]) == 0
    run = RunDir.open(out)
    rows = [(float(r["t"]), float(r["loss"])) for r in run.read_csv("slice.csv")]
    assert [t for t, _ in rows] == pytest.approx([-0.5 + 0.25 * i for i in range(9)])
    # oracle: rebuild the same model from the seed and the run's own checkpoint, plain forwards
    from descentlab.experiments.train import load_checkpoint_model
    from descentlab.problems.workloads import get_workload

    workload = get_workload("moons")
    torch.manual_seed(0)
    init = workload.make_model()
    final = load_checkpoint_model(workload.make_model(), run.file("train/checkpoint.pt"))
    with torch.no_grad():
        at_init = float(workload.loss_fn(init(workload.X_train), workload.y_train))
        at_final = float(workload.loss_fn(final(workload.X_train), workload.y_train))
    losses = dict(rows)
    assert losses[0.0] == pytest.approx(at_init, rel=1e-5)
    assert losses[1.0] == pytest.approx(at_final, rel=1e-5)
    assert at_final < at_init


def test_pca_plane_with_the_projected_trajectory(tmp_path):
    out = tmp_path / "pca"
    assert main(["landscape", "--workload", "moons", "--train-steps", "15", "--plane", "pca", "--trajectory",
                 "--resolution", "6", "--out", str(out)]) == 0
    run = RunDir.open(out)
    trajectory = run.read_csv("trajectory.csv")
    assert [int(r["step"]) for r in trajectory][:2] == [0, 1] and int(trajectory[-1]["step"]) == 15
    # the final point is the centre of the plane
    assert float(trajectory[-1]["a"]) == pytest.approx(0.0, abs=1e-5)
    assert float(trajectory[-1]["b"]) == pytest.approx(0.0, abs=1e-5)
    # the grid was widened to hold the whole projected path
    a = [p for p, _, _ in _grid(run)]
    assert min(a) <= min(float(r["a"]) for r in trajectory) and max(a) >= max(float(r["a"]) for r in trajectory)
    saved = files.load_torch(run.file("directions.pt"))
    assert float(saved["d1"] @ saved["d2"]) == pytest.approx(0.0, abs=1e-5)  # principal directions


def test_direction_slice_from_a_saved_direction_file(tmp_path):
    ckpt, direction = tmp_path / "w.pt", tmp_path / "d.pt"
    files.save_torch(ckpt, {"w1": torch.tensor(0.5), "w2": torch.tensor(2.0)})
    files.save_torch(direction, torch.tensor([1.0, -1.0]))
    out = tmp_path / "dir"
    assert main(["landscape", "--workload", "lecture", "--checkpoint", str(ckpt), "--slice", "direction",
                 "--direction", str(direction), "--points", "5", "--out", str(out)]) == 0
    run = RunDir.open(out)
    for row in run.read_csv("slice.csv"):
        t = float(row["t"])
        assert float(row["loss"]) == pytest.approx((1 - (0.5 + t) * (2.0 - t)) ** 2, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    "argv",
    [
        [],  # no source
        ["--workload", "lecture", "--run", "x"],  # two sources
        ["--workload", "nope"],
        ["--workload", "moons", "--plane", "axes"],
        ["--workload", "lecture", "--plane", "random"],  # filter-normalised directions vanish on scalars
        ["--workload", "lecture", "--plane", "pca"],
        ["--workload", "lecture", "--resolution", "1"],
        ["--workload", "lecture", "--slice", "line"],  # init and final are the same point
        ["--workload", "lecture", "--slice", "direction", "--direction", "sideways"],
        ["--run", "no/such/dir"],
        ["--workload", "lecture", "--checkpoint", "no/such/file.pt"],
        ["--workload", "moons", "--train-steps", "3", "--checkpoint", "x.pt"],
        ["--workload", "moons", "--trajectory"],  # nothing was trained here
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, argv):
    out = tmp_path / "run"
    assert main(["landscape", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("descentlab landscape: error:") and "\n" not in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_config_records_the_arguments(tmp_path):
    out = tmp_path / "cfg"
    assert main(["landscape", "--workload", "lecture", "--resolution", "3", "--seed", "4", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "landscape" and config["seed"] == 4 and config["resolution"] == 3


def test_escape_slice_of_the_lecture_saddle_reports_curvature_minus_two(tmp_path):
    ckpt = tmp_path / "origin.pt"
    files.save_torch(ckpt, {"w1": torch.tensor(0.0), "w2": torch.tensor(0.0)})
    out = tmp_path / "escape"
    assert main(["landscape", "--workload", "lecture", "--dtype", "float64", "--checkpoint", str(ckpt),
                 "--slice", "direction", "--direction", "escape", "--span", "1.5", "--points", "7",
                 "--out", str(out)]) == 0
    run = RunDir.open(out)
    table = run.read_json("summary.json")["table"]
    assert table["eigenvalue"] == pytest.approx(-2.0) and table["curvature d^T H d"] == pytest.approx(-2.0)
    for row in run.read_csv("slice.csv"):
        t = float(row["t"])
        assert float(row["loss"]) == pytest.approx((1 - t * t / 2) ** 2, abs=1e-12)


def test_hessian_plane_uses_the_two_top_eigenvalues(tmp_path):
    from torch.func import functional_call, hessian

    from descentlab.landscape import flatten, layout_of, unflatten
    from descentlab.problems.workloads import get_workload

    out = tmp_path / "hess"
    assert main(["landscape", "--workload", "moons", "--dtype", "float64", "--plane", "hessian",
                 "--resolution", "5", "--out", str(out)]) == 0
    table = RunDir.open(out).read_json("summary.json")["table"]
    workload = get_workload("moons", dtype=torch.float64)
    torch.manual_seed(0)
    model = workload.make_model()
    layout = layout_of(model)

    def loss(flat):
        return workload.loss_fn(functional_call(model, unflatten(flat, layout), (workload.X_train,)), workload.y_train)

    exact = torch.linalg.eigvalsh(hessian(loss)(flatten(model)))  # oracle: torch.func + eigh
    assert table["eigenvalue 1"] == pytest.approx(float(exact[-1]), rel=1e-5)
    assert table["eigenvalue 2"] == pytest.approx(float(exact[-2]), rel=1e-5)


def test_line_of_a_saved_training_run_and_a_second_runs_solution(tmp_path):
    from descentlab.experiments.train import TrainConfig, load_checkpoint_model, train
    from descentlab.problems.workloads import get_workload

    workload = get_workload("moons")
    runs = []
    for seed in (0, 1):
        config = TrainConfig(optimizer="sgd", lr=0.1, batch_size=32, steps=10, seed=seed)
        train(workload, config, tmp_path / f"run{seed}", extra_config={"workload": {"workload": "moons", "seed": 0}},
              progress=False)
        runs.append(tmp_path / f"run{seed}")
    out = tmp_path / "between"
    assert main(["landscape", "--run", str(runs[0]), "--slice", "line", "--from", "final", "--to", str(runs[1]),
                 "--points", "5", "--margin", "0", "--out", str(out)]) == 0
    losses = [float(r["loss"]) for r in RunDir.open(out).read_csv("slice.csv")]
    with torch.no_grad():
        ends = [float(workload.loss_fn(load_checkpoint_model(workload.make_model(), run)(workload.X_train),
                                       workload.y_train)) for run in runs]
    assert losses[0] == pytest.approx(ends[0], rel=1e-5) and losses[-1] == pytest.approx(ends[1], rel=1e-5)


def test_user_model_and_data(tmp_path, monkeypatch):
    import numpy as np

    (tmp_path / "my_nets.py").write_text(
        "import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    np.savez(tmp_path / "data.npz", X=X, y=X.sum(axis=1), X_val=X[:5], y_val=X[:5].sum(axis=1))
    out = tmp_path / "user"
    assert main(["landscape", "--model", "my_nets:make", "--data", str(tmp_path / "data.npz"), "--resolution", "4",
                 "--span", "0.5", "--out", str(out)]) == 0
    run = RunDir.open(out)
    saved = files.load_torch(run.file("directions.pt"))
    from my_nets import make

    from descentlab.landscape import layout_of, unflatten

    torch.manual_seed(0)  # the command seeds the factory with --seed (0)
    model = make()
    layout = layout_of(model)
    Xt, yt = torch.tensor(X[:], dtype=torch.float32), torch.tensor(X.sum(axis=1), dtype=torch.float32)[:, None]
    for a, b, loss in _grid(run)[:5]:
        model.load_state_dict(unflatten(saved["center"] + a * saved["d1"] + b * saved["d2"], layout))
        with torch.no_grad():
            expected = float(((model(Xt) - yt) ** 2).mean())
        # the data split: with X_val given, every row of X is training data
        assert loss == pytest.approx(expected, rel=1e-4)


def test_a_checkpoint_of_another_model_is_one_line(tmp_path, capsys):
    ckpt = tmp_path / "other.pt"
    files.save_torch(ckpt, {"weight": torch.zeros(3, 3)})
    assert main(["landscape", "--workload", "lecture", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not fit this model" in err and "\n" not in err
    assert not (tmp_path / "o").exists()
