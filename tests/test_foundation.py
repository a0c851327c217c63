"""The package skeleton: CLI dispatch, atomic files, run directories, the HTML page."""

import json
import subprocess
import sys

import pytest
import torch

from descentlab import files
from descentlab.cli import COMMANDS, build_parser, main
from descentlab.errors import UserInputError
from descentlab.experiments.rundir import RunDir, staged_run
from descentlab.report.html import Page


def test_every_command_has_help(capsys):
    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert name in capsys.readouterr().out


def test_help_does_not_import_torch():
    code = "import sys; from descentlab.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_optimizers_table_lists_every_entry(capsys):
    from descentlab.optim import OPTIMIZERS

    assert main(["optimizers"]) == 0
    out = capsys.readouterr().out
    for name in OPTIMIZERS:
        assert f"\n{name} " in out


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    files.write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_checkpoint_round_trip_refuses_arbitrary_objects(tmp_path):
    files.save_torch(tmp_path / "ok.pt", {"w": torch.arange(3.0)})
    assert torch.equal(files.load_torch(tmp_path / "ok.pt")["w"], torch.arange(3.0))

    from fractions import Fraction  # any class outside torch's allow-list

    torch.save({"evil": Fraction(1, 3)}, tmp_path / "evil.pt")
    with pytest.raises(UserInputError, match="holds objects other than tensors and numbers"):
        files.load_torch(tmp_path / "evil.pt")  # refused, in one line the command line can print


def test_staged_run_is_complete_or_absent(tmp_path):
    target = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with staged_run(target, "test", {"a": 1}) as run:
            run.write_text("half.txt", "x")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with staged_run(target, "test", {"a": 1}) as run:
        run.write_csv("m.csv", [{"step": 0, "loss": 1.5}])
    opened = RunDir.open(target)
    assert opened.kind == "test" and opened.config["a"] == 1
    assert opened.read_csv("m.csv") == [{"step": "0", "loss": "1.5"}]


def test_run_dir_refuses_non_empty_and_missing(tmp_path):
    RunDir.create(tmp_path / "r", "test", {})
    with pytest.raises(UserInputError):
        RunDir.create(tmp_path / "r", "test", {})
    with pytest.raises(UserInputError):
        RunDir.open(tmp_path / "nothing")


def test_page_is_self_contained(tmp_path):
    import matplotlib.pyplot as plt

    page = Page("t<1>")
    page.table([{"name": "adam", "loss": 1.23456789e-7}])
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    page.figure(fig, "a line", save_to=tmp_path / "line.png")
    html = page.write(tmp_path / "report.html").read_text()
    assert "t&lt;1&gt;" in html and "1.235e-07" in html and "data:image/png;base64," in html
    assert (tmp_path / "line.png").stat().st_size > 0


def test_a_growing_csv_writes_what_write_csv_writes(tmp_path):
    from descentlab.rundir import GrowingCsv

    run = RunDir.create(tmp_path / "run", "train", {})
    columns = ("step", "loss", "note")
    rows = []
    log = GrowingCsv(run, "metrics.csv", columns)
    log.write(rows)
    assert (tmp_path / "run" / "metrics.csv").read_text() == "step,loss,note\n"
    for chunk in range(3):
        rows += [{"step": 10 * chunk + i, "loss": 1 / (1 + i), "note": None if i else "a, \"quoted\" one", "x": 0}
                 for i in range(5)]
        log.write(rows)
        run.write_csv("oracle.csv", rows, columns)
        assert (tmp_path / "run" / "metrics.csv").read_text() == (tmp_path / "run" / "oracle.csv").read_text()
    with pytest.raises(ValueError, match="shrank"):
        log.write(rows[:3])
