"""``descentlab spectrum``: the lecture's saddle and minimum from a checkpoint, and its one-line errors."""

import pytest
import torch

from descentlab.cli import main
from descentlab.experiments.rundir import RunDir


def _checkpoint(path, w1, w2):
    torch.save({"w1": torch.tensor(w1), "w2": torch.tensor(w2)}, path)
    return path


@pytest.mark.parametrize("w, kind, eigenvalues", [
    ((0.0, 0.0), "saddle", (-2.0, 2.0)),  # H = [[0, -2], [-2, 0]]
    ((1.0, 1.0), "local_min", (0.0, 4.0)),  # H = [[2 w2^2, 4 w1 w2 - 2], [., 2 w1^2]] = [[2, 2], [2, 2]]
])
def test_lecture_points_from_a_checkpoint(tmp_path, capsys, w, kind, eigenvalues):
    out = tmp_path / "spectrum"
    code = main(["spectrum", "--workload", "lecture", "--checkpoint", str(_checkpoint(tmp_path / "w.pt", *w)),
                 "--k", "2", "--out", str(out)])
    assert code == 0
    result = RunDir.open(out).read_json("spectrum.json")
    assert result["kind"] == kind and result["n_params"] == 2
    assert result["spectrum"] == pytest.approx(list(eigenvalues), abs=1e-6)
    assert result["min_eigenvalue"] == pytest.approx(eigenvalues[0], abs=1e-6)
    assert result["max_eigenvalue"] == pytest.approx(eigenvalues[1], abs=1e-6)
    printed = capsys.readouterr().out
    assert kind in printed and "report:" in printed
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 1


@pytest.mark.parametrize("args, message", [
    (["--workload", "lecture", "--checkpoint", "{d}/missing.pt"], "missing.pt does not exist"),
    (["--workload", "lecture", "--checkpoint", "{d}/wrong.pt"], "does not fit this model (another architecture?): "
                                                                 "missing w1, w2; unexpected other"),
    (["--run", "{d}/norun"], "is not a run directory"),
    ([], "say which model"),
    (["--workload", "lecture", "--k", "1"], "--k must be an integer >= 2"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    torch.save({"other": torch.zeros(3)}, tmp_path / "wrong.pt")
    code = main(["spectrum", *[a.format(d=tmp_path) for a in args], "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_spectrum_of_a_diagnose_run_uses_its_checkpoint(tmp_path, capsys):
    run = tmp_path / "train"
    assert main(["diagnose", "--workload", "lecture", "--steps", "5", "--seed", "4", "--out", str(run),
                 "--no-progress"]) == 0
    w1, w2 = (float(v) for v in torch.load(run / "checkpoint.pt", weights_only=True)["model"].values())
    # the lecture's Hessian of (1 - w1 w2)^2 written out
    hessian = torch.tensor([[2 * w2**2, 4 * w1 * w2 - 2], [4 * w1 * w2 - 2, 2 * w1**2]], dtype=torch.float64)
    expected = torch.linalg.eigvalsh(hessian).tolist()
    out = tmp_path / "spectrum"
    assert main(["spectrum", "--run", str(run), "--k", "2", "--out", str(out)]) == 0
    result = RunDir.open(out).read_json("spectrum.json")
    assert result["spectrum"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert result["loss"] == pytest.approx((1 - w1 * w2) ** 2, rel=1e-5)
