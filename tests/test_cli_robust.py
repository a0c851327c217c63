"""Every command as a user meets it: bad input in one line, true numbers printed, the habits
users bring (pipes, Ctrl-C, umask, --json, --no-progress, --model from the current directory).

Each test here failed before the fix it covers (issue 18).
"""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from descentlab.cli import BROKEN_PIPE, COMMANDS, build_parser, main
from descentlab.problems.workloads import WORKLOADS, get_workload
from descentlab.rundir import RunDir

SCRIPT = Path(sys.executable).with_name("descentlab")


def _one_line_error(capsys, code, *needles):
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    for needle in needles:
        assert needle in captured.err, captured.err
    return captured.err


# --- tracebacks that are now one line -------------------------------------------------------------

def test_surface_negative_start_and_a_diverging_path_render(tmp_path, capsys):
    # --start -1,2 was refused by argparse; nesterov from there overflowed matplotlib's ticks
    out = tmp_path / "s"
    assert main(["surface", "--optimizers", "nesterov,sgd", "--start", "-1,2", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"nesterov\s+0\.05\s+inf\s+diverged", text)
    assert (out / "report.html").stat().st_size > 0 and (out / "loss.png").exists()


def test_truncated_junk_and_foreign_checkpoints_are_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    stall = get_workload("stall").make_model()
    torch.save(stall.state_dict(), tmp_path / "stall.pt")
    data = (tmp_path / "stall.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "text.pt").write_text("not a tensor\n")
    out = str(tmp_path / "out")
    for path in ("trunc.pt", "junk.pt"):
        code = main(["landscape", "--workload", "stall", "--checkpoint", str(tmp_path / path), "--out", out])
        _one_line_error(capsys, code, "is not a checkpoint (truncated, or not written by torch.save)")
        code = main(["landscape", "--workload", "stall", "--slice", "line", "--to", str(tmp_path / path), "--out", out])
        _one_line_error(capsys, code, "is not a checkpoint")
    code = main(["landscape", "--workload", "stall", "--slice", "direction", "--direction", str(tmp_path / "text.pt"),
                 "--out", out])
    _one_line_error(capsys, code, "text.pt is not a checkpoint")
    # another architecture: every mismatched size is named
    code = main(["spectrum", "--workload", "digits-mlp", "--checkpoint", str(tmp_path / "stall.pt"), "--out", out])
    _one_line_error(capsys, code, "0.weight: checkpoint (8, 64), model (64, 64)", "2.weight: checkpoint (10, 8)")
    assert not (tmp_path / "out").exists()


def test_out_naming_a_file_or_an_unwritable_place(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    for out in (tmp_path / "file.txt", tmp_path / "file.txt" / "run"):
        code = main(["spectrum", "--workload", "lecture", "--out", str(out)])
        _one_line_error(capsys, code, "is a file, not a directory")
    if Path("/proc/self").exists():  # a place even root cannot create a directory in
        _one_line_error(capsys, main(["surface", "--out", "/proc/descentlab-run"]), "cannot create it")


def test_report_of_a_corrupt_or_kindless_config(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text("{bad")
    _one_line_error(capsys, main(["report", str(tmp_path / "a")]), "config.json is not valid JSON")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text('{"steps": 3}')
    _one_line_error(capsys, main(["report", str(tmp_path / "b")]), 'has no "kind"')
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text('{"kind": "spectrum"}')
    _one_line_error(capsys, main(["report", str(tmp_path / "c")]), "spectrum.json is missing")


def test_schedules_plot_into_a_directory(tmp_path, capsys):
    _one_line_error(capsys, main(["schedules", "--plot", str(tmp_path)]), "is a directory")
    assert list(tmp_path.iterdir()) == []


def test_a_closed_pipe_exits_quietly_after_the_run_is_saved(tmp_path):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write fails with EPIPE
    out = tmp_path / "run"
    result = subprocess.run([str(SCRIPT), "surface", "--steps", "5", "--out", str(out), "--no-progress"],
                            stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert result.returncode == BROKEN_PIPE and result.stderr == "", result.stderr
    assert (out / "report.html").exists()  # surface wrote its run before it printed


# --- numbers printed ----------------------------------------------------------------------------

def test_line_slice_reports_the_loss_at_both_ends_exactly(tmp_path, capsys):
    out = tmp_path / "line"
    # 8 points over [-0.25, 1.25] miss t = 0 and t = 1; both are measured exactly anyway
    assert main(["landscape", "--workload", "lecture", "--train-steps", "5", "--slice", "line", "--points", "8",
                 "--out", str(out), "--no-progress"]) == 0
    table = RunDir.open(out).read_json("summary.json")["table"]
    workload = get_workload("lecture")
    torch.manual_seed(0)
    init = workload.make_model()  # the seeded initial weights: theta(t=0)
    with torch.no_grad():
        oracle = float(workload.loss_fn(init(workload.X_train), workload.y_train))
    assert table["loss at init (t=0)"] == pytest.approx(oracle, rel=1e-6)  # float32 loss of one datum
    rows = RunDir.open(out).read_csv("slice.csv")
    assert {0.0, 1.0} <= {float(r["t"]) for r in rows}
    printed = capsys.readouterr().out
    # numbers are printed with 4 significant digits, not as raw floats
    assert not re.search(r"\d\.\d{6,}", printed), printed


def test_spectrum_lists_half_the_extremes_from_each_end(tmp_path, capsys):
    out = tmp_path / "sp"
    assert main(["spectrum", "--workload", "stall", "--k", "6", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lowest = [float(v) for v in re.search(r"lowest eigenvalues\s+(.*)", text).group(1).split(", ")]
    highest = [float(v) for v in re.search(r"highest eigenvalues\s+(.*)", text).group(1).split(", ")]
    full = np.sort(np.asarray(RunDir.open(out).read_json("spectrum.json")["spectrum"]))
    assert len(lowest) == len(highest) == 3
    np.testing.assert_allclose(lowest, full[:3], rtol=1e-3)  # printed with 4 significant digits
    np.testing.assert_allclose(highest, full[-3:], rtol=1e-3)


def test_compare_says_not_reached_instead_of_nan(tmp_path, capsys):
    assert main(["compare", "--optimizers", "sgd", "--seeds", "1", "--budget", "1", "--steps", "10",
                 "--target-loss", "1e-9", "--workers", "1", "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "steps to target not reached" in text and "nan" not in text


# --- cryptic messages -----------------------------------------------------------------------------

@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A folder with mymodels.py (a 3-class linear model, one with dropout) and data files."""
    (tmp_path / "mymodels.py").write_text(
        "import torch.nn as nn\n"
        "def linear():\n    return nn.Linear(4, 3)\n"
        "def dropout():\n    return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))\n")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)), rng.integers(0, 3, 60)
    np.savez(tmp_path / "int.npz", X=X, y=y)
    np.savez(tmp_path / "float.npz", X=X, y=y.astype(np.float32))
    (tmp_path / "text.npz").write_text("1,2,3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_float_class_labels_are_classification(user_dir):
    from descentlab.problems.user_workload import user_workload

    as_float = user_workload("mymodels:linear", user_dir / "float.npz")
    as_int = user_workload("mymodels:linear", user_dir / "int.npz")  # the oracle: the same labels as integers
    assert as_float.task == "classification" and as_float.y_train.dtype == torch.long
    assert torch.equal(as_float.y_train, as_int.y_train) and torch.equal(as_float.y_val, as_int.y_val)


def test_a_text_file_as_npz_is_named(user_dir, capsys):
    code = main(["spectrum", "--model", "mymodels:linear", "--data", "text.npz"])
    err = _one_line_error(capsys, code, "is not an .npz archive")
    assert "allow_pickle" not in err


def test_library_warnings_are_one_line_without_python_advice(user_dir, capsys):
    assert main(["spectrum", "--model", "mymodels:dropout", "--data", "int.npz", "--k", "2", "--out", "sp"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning:" in line]
    assert lines == ["descentlab spectrum: warning: the model has Dropout in training mode, which makes the quantity "
                     "random; evaluating those in eval mode"]


# --- one rule for every command -----------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["spectrum", "--workload", "lecture"],
    ["surface", "--steps", "5"],
    ["landscape", "--workload", "lecture", "--resolution", "5"],
    ["minimum-ratio", "--workload", "lecture", "--hidden", "0", "--train-steps", "0", "--networks", "1",
     "--weight-decay", "0", "--init-scale", "0.05", "--newton-steps", "5"],
])
def test_an_empty_out_is_accepted_a_full_one_refused(tmp_path, capsys, argv):
    out = tmp_path / "empty"
    out.mkdir()
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    assert (out / "report.html").exists() and (out / "config.json").exists()
    capsys.readouterr()
    _one_line_error(capsys, main([*argv, "--out", str(out), "--no-progress"]), "already exists and is not empty")


def test_every_command_has_json_and_no_progress():
    parser = build_parser()
    for name in COMMANDS:
        args = parser.parse_args([name, "--json", "--no-progress"] + (["x"] if name == "report" else []))
        assert args.json is True and args.progress is False


def test_options_that_would_be_ignored_are_refused(tmp_path, capsys):
    _one_line_error(capsys, main(["surface", "--tune", "--lr", "0.1"]), "--tune", "drop --lr")
    run = tmp_path / "d"
    assert main(["diagnose", "--workload", "minimum", "--steps", "20", "--out", str(run), "--no-progress"]) == 0
    before = (run / "metrics.csv").read_text()
    capsys.readouterr()
    _one_line_error(capsys, main(["diagnose", "--resume", str(run), "--steps", "80", "--lr", "0.5"]),
                    "drop --lr, --steps")
    assert (run / "metrics.csv").read_text() == before
    # a finished diagnose run is continued with --resume, not overwritten through --out
    _one_line_error(capsys, main(["diagnose", "--out", str(run)]), f"--resume {run}")


def test_workloads_lists_every_workload(capsys):
    for name in ("diagnose", "spectrum", "landscape", "minimum-ratio", "compare", "batch-size"):
        assert "`descentlab workloads` lists them" in " ".join(_help(name).split()), name
    assert main(["workloads", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["workloads"]
    assert [w["name"] for w in listed] == list(WORKLOADS)
    lecture = next(w for w in listed if w["name"] == "lecture")
    assert lecture["parameters"] == 2 and lecture["train"] == 1  # y = w1 w2 x on its one datum


def _help(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return sub.format_help()


# --- habits ------------------------------------------------------------------------------------------

def test_console_script_imports_a_model_from_the_current_directory(user_dir):
    result = subprocess.run([str(SCRIPT), "spectrum", "--model", "mymodels:linear", "--data", "int.npz", "--k", "2",
                             "--out", "sp", "--json"], cwd=user_dir, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n_params"] == 15  # 4 x 3 weights + 3 biases


def test_resume_from_another_directory_finds_the_data(user_dir, tmp_path_factory, monkeypatch, capsys):
    run = user_dir / "run"
    assert main(["diagnose", "--model", "mymodels:linear", "--data", "int.npz", "--steps", "10", "--out", "run",
                 "--no-progress"]) == 0
    assert Path(RunDir.open(run).config["workload"]["data"]).is_absolute()
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert main(["diagnose", "--resume", str(run), "--no-progress"]) == 0


def test_files_and_run_directories_follow_the_umask(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert main(["surface", "--steps", "5", "--out", str(tmp_path / "staged"), "--no-progress"]) == 0
        assert main(["diagnose", "--workload", "minimum", "--steps", "5", "--out", str(tmp_path / "live"),
                     "--no-progress"]) == 0
    finally:
        os.umask(old)
    for run in (tmp_path / "staged", tmp_path / "live"):
        assert run.stat().st_mode & 0o777 == 0o755
        for path in run.iterdir():
            if path.is_file():
                assert path.stat().st_mode & 0o777 == 0o644, path


def test_ctrl_c_says_how_to_resume(tmp_path):
    out = tmp_path / "long"
    # A shell without job control starts background commands with SIGINT ignored (POSIX), and
    # the child would inherit that: give it the default disposition a terminal's Ctrl-C meets.
    process = subprocess.Popen([str(SCRIPT), "diagnose", "--workload", "minimum", "--steps", "1000000", "--out",
                                str(out), "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 90
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # never leave a million-step run behind
            process.kill()
            process.communicate()
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == f"descentlab diagnose: interrupted; resume with: descentlab diagnose " \
                                           f"--resume {out}"


def test_json_is_the_only_thing_on_stdout(tmp_path, capsys):
    for argv in (["optimizers"], ["schedules", "--steps", "10"],
                 ["surface", "--steps", "5", "--out", str(tmp_path / "s")], ["report", str(tmp_path / "s")],
                 ["landscape", "--workload", "lecture", "--resolution", "5", "--out", str(tmp_path / "l")]):
        assert main([*argv, "--json", "--no-progress"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary, argv
    assert summary["points evaluated"] == 25 and summary["run"] == str(tmp_path / "l")


def test_compare_and_batch_size_take_a_user_model(user_dir, capsys):
    assert main(["compare", "--model", "mymodels:linear", "--data", "int.npz", "--optimizers", "sgd,adam",
                 "--seeds", "1", "--budget", "1", "--steps", "10", "--workers", "1", "--out", "c", "--json",
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [row["optimizer"] for row in summary["optimizers"]] == ["sgd", "adam"]
    assert RunDir.open(user_dir / "c").config["workload"]["model"] == "mymodels:linear"
    assert main(["batch-size", "--model", "mymodels:linear", "--data", "int.npz", "--sizes", "8,full",
                 "--protocol", "same-epochs", "--epochs", "1", "--seeds", "1", "--budget", "1", "--workers", "1",
                 "--out", "b", "--json", "--no-progress"]) == 0
    assert [row["batch_size"] for row in json.loads(capsys.readouterr().out)["sizes"]] == [8, "full"]


def test_tensorboard_scalars_match_the_metrics(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    assert main(["diagnose", "--workload", "minimum", "--steps", "30", "--out", str(out), "--tensorboard",
                 "--no-progress"]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    metrics = RunDir.open(out).read_csv("metrics.csv")
    assert [s for s, _ in logged] == [int(r["step"]) for r in metrics]
    np.testing.assert_allclose([v for _, v in logged], [float(r["train_loss"]) for r in metrics], rtol=1e-6)
    tracked = RunDir.open(out).read_csv("tracked.csv")
    assert [e.step for e in events.Scalars("monitor/tracked_loss")] == [int(r["step"]) for r in tracked]


def test_stall_monitor_writes_to_a_summary_writer():
    from descentlab.critical import StallMonitor

    class Recorder:
        def __init__(self):
            self.scalars, self.texts = [], []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, float(value), step))

        def add_text(self, tag, text, step):
            self.texts.append((tag, text, step))

    workload = get_workload("stall")
    torch.manual_seed(0)
    model = workload.make_model()
    writer = Recorder()
    monitor = StallMonitor(workload.loss_fn, (workload.X_train, workload.y_train), writer=writer,
                           window=10, sample_size=64)
    for step in range(1, 41):
        monitor.update(step, 2.3, model)  # a model that never moves: a plateau
    tracked = [(tag, value, step) for tag, value, step in writer.scalars if tag == "monitor/tracked_loss"]
    assert [step for _, _, step in tracked] == [s for s, _ in monitor.tracked]
    assert [value for _, value, _ in tracked] == pytest.approx([v for _, v in monitor.tracked])
    assert monitor.stalls and writer.texts[0][2] == monitor.stalls[0].step
    assert ("stall/loss", pytest.approx(monitor.stalls[0].loss), monitor.stalls[0].step) in writer.scalars


# --- the last tracebacks (issue 23): one line, exit 2, nothing half-written -----------------------------

def _entries(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


_MODEL_COMMANDS = [
    ["diagnose", "--steps", "5"], ["spectrum", "--k", "2"], ["landscape", "--resolution", "5"],
    ["compare", "--optimizers", "sgd", "--seeds", "1", "--budget", "1", "--steps", "5", "--workers", "1"],
    ["batch-size", "--sizes", "8", "--seeds", "1", "--budget", "1", "--epochs", "1", "--protocol", "same-epochs",
     "--workers", "1"],
]


def test_a_model_without_parameters_or_a_factory_needing_arguments(user_dir, capsys):
    # a module name no other test imports: the in-process import cache cannot hand over another one
    (user_dir / "odd_factories.py").write_text(
        "import torch.nn as nn\n"
        "def no_parameters():\n    return nn.Sequential(nn.Flatten(), nn.Identity())\n"
        "def frozen():\n    net = nn.Linear(4, 3)\n    net.requires_grad_(False)\n    return net\n"
        "def sized(width, depth=1):\n    return nn.Linear(4, width)\n")
    before = _entries(user_dir)
    for argv in _MODEL_COMMANDS:
        for factory in ("no_parameters", "frozen"):
            code = main([*argv, "--model", f"odd_factories:{factory}", "--data", "int.npz", "--out", "o"])
            _one_line_error(capsys, code, f"odd_factories:{factory}() returned a model with no trainable parameters")
        code = main([*argv, "--model", "odd_factories:sized", "--data", "int.npz", "--out", "o"])
        _one_line_error(capsys, code, "odd_factories:sized needs arguments (width)")
    assert _entries(user_dir) == before


def test_tensorboard_at_a_file_or_an_unwritable_place_writes_nothing(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    (tmp_path / "file.txt").write_text("x")
    places = [(tmp_path / "file.txt", "is a file, not a directory"),
              (tmp_path / "file.txt" / "logs", "file.txt is a file, not a directory")]
    if Path("/proc/self").exists():  # a place even root cannot create a directory in
        places.append((Path("/proc/descentlab-logs"), "cannot create it in /proc"))
    for argv in (["diagnose", "--workload", "minimum", "--steps", "5"], *_MODEL_COMMANDS[3:]):
        if argv[0] != "diagnose":
            argv = [*argv, "--workload", "lecture"]
        for place, why in places:
            code = main([*argv, "--out", str(tmp_path / "run"), "--tensorboard", str(place), "--no-progress"])
            _one_line_error(capsys, code, f"--tensorboard {place}", why)
    assert _entries(tmp_path) == ["file.txt"]


def test_a_landscape_grid_beyond_memory_is_refused_before_any_work(tmp_path, capsys):
    code = main(["landscape", "--workload", "lecture", "--resolution", "100000"])
    _one_line_error(capsys, code, "--resolution 100000 is too large", "10,000,000,000 points", "of memory",
                    "at most --resolution")
    code = main(["landscape", "--workload", "lecture", "--slice", "direction", "--points", str(10**12)])
    _one_line_error(capsys, code, f"--points {10**12} is too large", "at most --points")
    assert _entries(tmp_path) == []


class _DiskFillsUp:
    """``os`` as :mod:`descentlab.files` sees it, on a disk that is full from the ``nth`` write of
    the file ``name`` on: the ``fsync`` of its temporary file fails with ENOSPC (where a file
    system that allocates late reports a full disk)."""

    def __init__(self, name, nth):
        self.name, self.nth, self.seen = name, nth, 0

    def __getattr__(self, attr):
        return getattr(os, attr)

    def fsync(self, fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{self.name}."):
            self.seen += 1
            if self.seen >= self.nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync(fd)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="names an open file through /proc")
@pytest.mark.parametrize("fills_at", ["checkpoint.pt", "metrics.csv"])
def test_a_full_disk_during_diagnose_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys, fills_at):
    from descentlab import files

    argv = ["diagnose", "--workload", "minimum", "--steps", "150", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0  # the oracle: the same run, never stopped
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        # checkpoints (with the metrics) at steps 0, 100 and 150: the disk fills while the last is written
        patch.setattr(files, "os", _DiskFillsUp(fills_at, 3))
        capsys.readouterr()
        code = main([*argv, "--out", str(run)])
    err = _one_line_error(capsys, code, f"no space left on device writing {run / fills_at}")
    assert err.strip().endswith(f"resume with: descentlab diagnose --resume {run}")
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # the temporary file is gone
    assert files.load_torch(run / "checkpoint.pt")["step"] == 100  # the previous checkpoint, intact
    assert main(["diagnose", "--resume", str(run), "--no-progress"]) == 0
    resumed, whole = RunDir.open(run).read_csv("metrics.csv"), RunDir.open(tmp_path / "whole").read_csv("metrics.csv")
    columns = ("step", "train_loss", "grad_norm", "val_loss")
    assert [[r[c] for c in columns] for r in resumed] == [[r[c] for c in columns] for r in whole]


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="names an open file through /proc")
def test_a_full_disk_during_an_all_or_nothing_run_leaves_nothing(tmp_path, monkeypatch, capsys):
    from descentlab import files

    monkeypatch.setattr(files, "os", _DiskFillsUp("config.json", 1))
    code = main(["surface", "--steps", "5", "--out", str(tmp_path / "runs" / "s"), "--no-progress"])
    # the file is named where the user will look for it, not in the hidden staging folder
    _one_line_error(capsys, code, f"no space left on device writing {tmp_path / 'runs' / 's' / 'config.json'}: ")
    assert _entries(tmp_path) == []


def test_a_user_model_resumes_from_another_directory(tmp_path_factory, monkeypatch, capsys):
    home, elsewhere = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("elsewhere")
    (home / "resumable_nets").mkdir()
    (home / "resumable_nets" / "__init__.py").write_text("")
    (home / "resumable_nets" / "linear.py").write_text("import torch.nn as nn\ndef make():\n    return nn.Linear(4, 3)\n")
    rng = np.random.default_rng(0)
    np.savez(home / "data.npz", X=rng.normal(size=(60, 4)), y=rng.integers(0, 3, 60))
    monkeypatch.setattr(sys, "path", list(sys.path))  # what the commands put on it goes away after the test
    monkeypatch.chdir(home)
    model = ["--model", "resumable_nets.linear:make", "--data", str(home / "data.npz")]
    assert main(["diagnose", *model, "--steps", "10", "--out", "run", "--no-progress"]) == 0
    compare = ["compare", *model, "--optimizers", "sgd", "--seeds", "1", "--budget", "1", "--steps", "5",
               "--workers", "1", "--out", str(home / "cmp"), "--no-progress"]
    assert main(compare) == 0
    # another process, started in another directory: the package is neither imported nor importable
    sys.path[:] = [entry for entry in sys.path if entry not in ("", ".", str(home))]
    for name in [name for name in sys.modules if name.split(".")[0] == "resumable_nets"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["diagnose", "--resume", str(home / "run"), "--no-progress"]) == 0
    assert main(["spectrum", "--run", str(home / "run"), "--k", "2", "--out", "sp", "--no-progress"]) == 0
    assert main(compare) == 0
    err = capsys.readouterr().err  # tuning, each rate added beyond the grid's edge, and final: all finished
    assert err.count("resuming: 1 of 1 runs already finished") == err.count("resuming:") >= 2
    assert sys.modules["resumable_nets"].__file__ == str(home / "resumable_nets" / "__init__.py")


@pytest.fixture(autouse=True)
def _no_stray_runs(tmp_path, monkeypatch):
    """Commands without --out write runs/ in the current directory: keep that inside tmp_path."""
    monkeypatch.chdir(tmp_path)
    yield
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
