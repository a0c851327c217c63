"""``descentlab diagnose`` / ``spectrum`` / ``report`` end to end: bad input, determinism, resume, the preset's story."""

import math
import sys
import textwrap

import numpy as np
import pytest
import torch

from descentlab.cli import main
from descentlab.experiments.rundir import RunDir
from descentlab.problems.workloads import get_workload


@pytest.fixture
def user_files(tmp_path, monkeypatch):
    package = tmp_path / "pkg_diag"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent("""
        from torch import nn

        def net():
            return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "good.npz", X=rng.normal(size=(40, 3)), y=rng.integers(0, 3, size=40))
    np.savez(tmp_path / "short.npz", X=rng.normal(size=(40, 3)), y=rng.integers(0, 3, size=39))
    X = rng.normal(size=(40, 3))
    X[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", X=X, y=rng.integers(0, 3, size=40))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("pkg_diag")]:
        del sys.modules[name]


@pytest.mark.parametrize("args, message", [
    (["--model", "pkg_diag.nets:net", "--data", "{d}/missing.npz"], "missing.npz does not exist"),
    (["--model", "pkg_diag.nowhere:net", "--data", "{d}/good.npz"], "cannot import model module 'pkg_diag.nowhere'"),
    (["--model", "pkg_diag.nets:net", "--data", "{d}/short.npz"], "X has 40 samples but y has 39"),
    (["--model", "pkg_diag.nets:net", "--data", "{d}/nan.npz"], "X contains NaN"),
    (["--workload", "moons", "--optimizer", "adamm"], "unknown optimizer 'adamm'"),
    (["--workload", "nope"], "unknown workload 'nope'"),
    (["--workload", "moons", "--lr", "-1"], "--lr must be a positive number"),
    (["--workload", "moons", "--model", "pkg_diag.nets:net"], "either --workload or --model"),
    (["--workload", "moons", "--budget", "0"], "--budget must be a positive fraction or 'none'"),
    (["--workload", "moons", "--budget", "lots"], "--budget must be a positive fraction or 'none'"),
    (["--workload", "moons", "--sample", "1"], "--sample must be an integer >= 2"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(user_files, capsys, args, message):
    out = user_files / "run"
    code = main(["diagnose", *[a.format(d=user_files) for a in args], "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("descentlab diagnose: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_bad_input_from_a_real_process_has_no_traceback(tmp_path):
    import subprocess

    result = subprocess.run([sys.executable, "-m", "descentlab", "diagnose", "--data", str(tmp_path / "x.npz"),
                             "--model", "a.b:c", "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


_CLOCK = {"seconds", "rate", "ranking", "winner"}  # read from the clock (remedy trials are ranked per second)


def _without_clock(value):
    if isinstance(value, dict):
        return {k: _without_clock(v) for k, v in value.items() if k not in _CLOCK}
    if isinstance(value, list):
        return [_without_clock(v) for v in value]
    return value


def _numbers(path):
    run = RunDir.open(path)
    metrics = [{k: v for k, v in row.items() if k != "wall_time"} for row in run.read_csv("metrics.csv")]
    saved = run.read_json("stalls.json") if run.exists("stalls.json") else []
    return metrics, _without_clock(saved)


def test_user_workload_runs_and_report_re_renders(user_files, capsys):
    out = user_files / "run"
    assert main(["diagnose", "--model", "pkg_diag.nets:net", "--data", str(user_files / "good.npz"),
                 "--steps", "30", "--batch-size", "8", "--optimizer", "adam", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "trained 30 steps" in printed and f"report: {out / 'report.html'}" in printed
    run = RunDir.open(out)
    assert run.kind == "diagnose" and run.config["workload"]["model"] == "pkg_diag.nets:net"
    assert len(run.read_csv("metrics.csv")) == 30
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 1 and "Verdict" in html


def test_report_of_a_missing_directory_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


SHORT = ["--steps", "130", "--window", "20", "--max-stalls", "1", "--budget", "none", "--no-progress"]


def test_same_seed_same_numbers_and_resume_equals_uninterrupted(tmp_path, monkeypatch, capsys):
    from descentlab.critical import StallMonitor

    assert main(["diagnose", *SHORT, "--out", str(tmp_path / "a")]) == 0
    assert _numbers(tmp_path / "a")[1], "the preset must stall within 130 steps"

    step_end = StallMonitor.on_step_end

    def crash_at_110(self, loop, loss):
        if loop.step == 110:
            raise KeyboardInterrupt
        return step_end(self, loop, loss)

    monkeypatch.setattr(StallMonitor, "on_step_end", crash_at_110)
    assert main(["diagnose", *SHORT, "--out", str(tmp_path / "c")]) == 130  # interrupted after the checkpoint at 100
    monkeypatch.setattr(StallMonitor, "on_step_end", step_end)
    # steps 1..100 (with the stall at step 40) ran afresh with the same seed: same numbers as run a;
    # steps 101..130 come from the checkpoint: the same numbers as if never stopped
    metrics_cut, stalls_cut = _numbers(tmp_path / "c")
    assert len(metrics_cut) == 100 and metrics_cut == _numbers(tmp_path / "a")[0][:100]
    assert stalls_cut == []  # stalls.json is written at the end; the monitor's state is in the checkpoint
    assert main(["diagnose", "--resume", str(tmp_path / "c"), "--no-progress"]) == 0
    assert _numbers(tmp_path / "c") == _numbers(tmp_path / "a")


def test_stall_preset_is_a_saddle_and_escape_lowers_the_loss(tmp_path, capsys):
    """The default demo's story, shortened to 250 steps: plateau -> saddle with negative eigenvalues -> escape."""
    out = tmp_path / "demo"
    assert main(["diagnose", "--steps", "250", "--max-stalls", "1", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    stalls = RunDir.open(out).read_json("stalls.json")
    assert len(stalls) == 1
    stall = stalls[0]
    # the plateau: ln 10 is the loss of the uniform guess at the origin, unmoved from the start, so
    # told at the first look (the third tracked loss, step 20), not two windows later
    assert stall["step"] == 20 and abs(stall["loss"] - math.log(10)) < 1e-3
    assert stall["status"] == "diagnosed" and stall["kind"] == "saddle" and stall["verdict"] == "saddle"
    # the gradient test on all 1,437 samples; the sample's negative curvature confirmed on all of them
    confirmed = stall["evidence"]["curvature"]["confirmed_on_all_data"]
    assert stall["evidence"]["gradient"]["critical"] and confirmed["held"] and confirmed["samples"] == 1437
    assert min(confirmed["rayleigh_quotients"]) < -0.5
    # the closed form of the origin's most negative curvature (see test_workloads): -sigma_max(C) ~ -0.76
    assert stall["min_eigenvalue"] < -0.5 and stall["max_eigenvalue"] > 0.5
    # the escape margin: at least 0.1 nats below the plateau, and the loss is lower after it
    assert stall["escaped"] and stall["escape_loss_after"] <= stall["escape_loss_before"] - 0.1
    metrics = RunDir.open(out).read_csv("metrics.csv")
    with_escape = float(metrics[-1]["train_loss"])
    # plain SGD from the same start, no escape, 250 steps: still on the plateau
    workload = get_workload("stall")
    torch.manual_seed(0)
    model = workload.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=workload.lr)
    for _ in range(250):
        optimizer.zero_grad()
        loss = workload.loss_fn(model(workload.X_train), workload.y_train)
        loss.backward()
        optimizer.step()
    assert loss.item() > 2.2 and with_escape < loss.item() - 0.2
    assert "saddle" in printed and "report:" in printed
    # the slice along the escape direction goes downhill on both sides of the saddle
    t, slice_loss = np.array(stall["slice_t"]), np.array(stall["slice_loss"])
    centre = slice_loss[np.argmin(np.abs(t))]
    assert slice_loss[0] < centre and slice_loss[-1] < centre


def test_non_finite_loss_stops_the_command_with_the_step(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["diagnose", "--workload", "teacher-student", "--lr", "50", "--batch-size", "full", "--steps", "100",
                 "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    status = RunDir.open(out).read_json("status.json")
    assert status["status"] == "non_finite" and f"non-finite at step {status['step']}" in captured.err
    assert (out / "checkpoint.pt").exists() and (out / "report.html").exists()
