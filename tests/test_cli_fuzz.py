"""Every command driven with bad arguments: exit status 2, one line on stderr, no traceback,
nothing on stdout, nothing left behind.

Cases are generated: every integer or float option of every command (read from the parser)
gets a value that is not a number, and each command gets the out-of-range values, unknown
names, missing or junk files and clashing options of its table below; every command also gets
an unknown option and an ``--out`` that is a file or a full directory. A fixed-seed sample of
at most :data:`LIMIT` cases runs (all of them today), so the test stays deterministic and
within about a minute.
"""

import argparse
import random
import time

import pytest

from descentlab.cli import COMMANDS, build_parser, main

LIMIT = 400

# {missing}: no such path; {file}: a text file; {full}: a non-empty directory that is no run;
# {junk}: a file of random bytes named .pt; {empty}: an empty directory; {text_npz}: a text file named .npz
TABLE: dict[str, list[list[str]]] = {
    "diagnose": [
        ["--workload", "nope"], ["--model", "nomodule_xyz:f", "--data", "{text_npz}"], ["--data", "{missing}.npz"],
        ["--model", "x:f"], ["--workload", "stall", "--model", "a:b"], ["--lr", "-1"], ["--lr", "0"],
        ["--lr", "nan"], ["--lr", "inf"], ["--steps", "0"], ["--steps", "-3"], ["--window", "0"],
        ["--rel-tol", "-1"], ["--rel-tol", "nan"], ["--grad-tol", "0"], ["--budget", "0"], ["--budget", "-1"],
        ["--budget", "abc"], ["--sample", "1"], ["--max-stalls", "-1"], ["--max-step", "0"], ["--seeds", "0"],
        ["--workload", "moons", "--seeds", "2"],
        ["--batch-size", "0"], ["--batch-size", "abc"], ["--optimizer", "nope"], ["--schedule", "nope"],
        ["--resume", "{missing}"], ["--resume", "{full}"], ["--resume", "{file}"],
        ["--workload", "minimum", "--escape", "--max-step", "-2"],
    ],
    "spectrum": [
        ["--workload", "lecture", "--k", "1"], ["--workload", "lecture", "--k", "-4"], ["--run", "{missing}"],
        ["--run", "{full}"], ["--workload", "nope"], ["--workload", "lecture", "--checkpoint", "{missing}"],
        ["--workload", "lecture", "--checkpoint", "{junk}"], ["--workload", "lecture", "--checkpoint", "{file}"],
        [], ["--run", "{full}", "--workload", "lecture"], ["--model", "a:b"], ["--data", "{text_npz}"],
        ["--model", "nomodule_xyz:f", "--data", "{text_npz}"],
    ],
    "landscape": [
        ["--workload", "lecture", "--span", "0"], ["--workload", "lecture", "--span", "-1"],
        ["--workload", "lecture", "--span", "nan"], ["--workload", "lecture", "--margin", "-1"],
        ["--workload", "lecture", "--points", "1"], ["--workload", "lecture", "--resolution", "1"],
        ["--workload", "lecture", "--chunk-size", "0"], ["--workload", "lecture", "--workers", "0"],
        ["--workload", "lecture", "--train-steps", "-1"], ["--workload", "lecture", "--slice", "nope"],
        ["--workload", "lecture", "--plane", "nope"], ["--workload", "lecture", "--slice", "direction",
                                                       "--direction", "nope"],
        ["--workload", "lecture", "--slice", "direction", "--direction", "{junk}"],
        ["--workload", "lecture", "--slice", "line", "--from", "{missing}"],
        ["--workload", "lecture", "--slice", "line", "--to", "{junk}"],
        ["--workload", "lecture", "--checkpoint", "{junk}"], ["--workload", "lecture", "--dtype", "float16"],
        ["--workload", "lecture", "--trajectory", "--slice", "line"], ["--workload", "lecture", "--plane", "pca"],
        [], ["--workload", "lecture", "--run", "{full}"], ["--run", "{missing}"], ["--model", "a:b"],
        ["--workload", "nope"],
    ],
    "minimum-ratio": [
        ["--networks", "0"], ["--newton-steps", "-1"], ["--samples", "-1"], ["--train-steps", "-1"],
        ["--batch-size", "-1"], ["--hidden", "-1"], ["--init-scale", "0"], ["--init-scale", "nan"],
        ["--radius", "0"], ["--weight-decay", "-1"], ["--weight-decay", "nan"], ["--grad-tol", "-1"],
        ["--flat-tol", "-1"], ["--eig-tol", "-1"], ["--eig-tol", "nan"], ["--lr-range", "0", "1"],
        ["--lr-range", "1", "0.1"], ["--lr-range", "nan", "1"], ["--workload", "nope"], ["--optimizer", "nope"],
        ["--optimizer", "adamw", "--weight-decay", "0.01"], ["--init-scale", "0.5"], ["--workload", "digits-cnn"],
        ["--hidden", "0,2"], ["--newton-tol", "-1"], ["--merge-tol", "nan"],
    ],
    "surface": [
        ["--function", "nope"], ["--optimizers", "nope"], ["--optimizers", ","], ["--optimizers", "sgd,sgd"],
        ["--steps", "0"], ["--steps", "-1"], ["--start", "1"], ["--start", "a,b"], ["--start", "nan,1"],
        ["--start", "inf,0"], ["--start", "1,2,3"], ["--lr", "0"], ["--lr", "-1"], ["--lr", "nan"],
        ["--frame-every", "0"], ["--tune", "--lr", "0.1"], ["--schedule", "nope"],
        ["--function", "double-well", "--basin-rates", "0"], ["--function", "double-well", "--basin-momenta", "1"],
        ["--function", "double-well", "--basin-momenta", "0.5,0.5"], ["--function", "double-well", "--basin-steps", "0"],
        ["--basin-rates", "0.1"], ["--function", "lecture", "--basins", "--steps", "1"],
    ],
    "compare": [
        ["--workload", "nope"], ["--optimizers", "nope"], ["--optimizers", "sgd,sgd"], ["--seeds", "0"],
        ["--budget", "0"], ["--steps", "0"], ["--batch-size", "0"], ["--batch-size", "abc"],
        ["--eval-every", "0"], ["--target-loss", "0"], ["--target-loss", "nan"], ["--schedule", "nope"],
        ["--workers", "0"], ["--model", "a:b"], ["--workload", "moons", "--model", "a:b"],
        ["--model", "nomodule_xyz:f", "--data", "{text_npz}"], ["--data", "{missing}.npz"],
    ],
    "batch-size": [
        ["--workload", "nope"], ["--sizes", "0"], ["--sizes", "abc"], ["--sizes", "8,8"], ["--sizes", ","],
        ["--ref-size", "0"], ["--train-to", "0"], ["--train-to", "nan"], ["--max-updates", "0"],
        ["--epochs", "0"], ["--epochs", "nan"], ["--optimizer", "nope"], ["--budget", "0"], ["--seeds", "0"],
        ["--target-loss", "-1"], ["--workers", "0"], ["--model", "a:b"],
        ["--data", "{missing}.npz"], ["--tune-updates", "0"], ["--epsilon", "0"], ["--epsilon", "nan"],
    ],
    "normalization": [
        ["--hidden", "-1"], ["--steps", "0"], ["--target-loss", "0"], ["--target-loss", "nan"],
        ["--rates", "abc"], ["--rates", "0"], ["--rates", "-1,1"], ["--bowl-features", "a,b"],
        ["--models", "nope"], ["--seeds", "0"], ["--track-every", "-1"],
        ["--bowl-features", "mean texture"], ["--bowl-features", "mean texture,mean texture"],
    ],
    "schedules": [
        ["--steps", "1"], ["--steps", "0"], ["--schedule", "nope"], ["--schedule", "warmup-cosine:warmup=-1"],
        ["--plot", "{empty}"], ["--plot", "{tmp}/x.txt"], ["--plot", "{file}/x.png"],
    ],
    "optimizers": [["--format", "nope"]],
    "report": [["{missing}"], ["{file}"], ["{empty}"], ["{full}"], ["{corrupt}"], ["{kindless}"], ["{unknown}"], []],
    "workloads": [["--seed", "{file}"]],
    "zoo": [["--only", "nope"], ["--only", ","], ["--family", "gnn"], ["--verdict", "bored"],
            ["--family", "transformer", "--verdict", "maximum"]],
}

#: The value no int or float option accepts.
NOT_A_NUMBER = "twelve"


def _generated() -> list[tuple[str, list[str]]]:
    cases = []
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in COMMANDS:
        for args in TABLE[name]:
            cases.append((name, args))
        options = [a for a in commands[name]._actions if a.option_strings]
        for action in options:
            if action.type in (int, float):
                value = [NOT_A_NUMBER] * (action.nargs if isinstance(action.nargs, int) else 1)
                cases.append((name, [action.option_strings[0], *value]))
            if action.dest == "seed":  # seeds are non-negative everywhere (numpy's and torch's generators)
                cases.append((name, ["--seed", "-1"]))
        cases.append((name, ["--no-such-option"]))
        if any("--out" in a.option_strings for a in options):
            cases.append((name, ["--out", "{file}"]))
            cases.append((name, ["--out", "{full}"]))
            cases.append((name, ["--out"]))
    return cases


CASES = _generated()
SAMPLE = sorted(random.Random(18).sample(range(len(CASES)), min(LIMIT, len(CASES))))


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "file.txt").write_text("hello\n")
    (root / "full").mkdir()
    (root / "full" / "notes.txt").write_text("mine\n")
    (root / "empty").mkdir()
    (root / "junk.pt").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(3000)))
    (root / "text.npz").write_text("1,2,3\n")
    for name, text in (("corrupt", "{bad"), ("kindless", '{"steps": 1}'), ("unknown", '{"kind": "nope"}')):
        (root / name).mkdir()
        (root / name / "config.json").write_text(text)
    return {"tmp": root, "missing": root / "missing", "file": root / "file.txt", "full": root / "full",
            "empty": root / "empty", "junk": root / "junk.pt", "text_npz": root / "text.npz",
            "corrupt": root / "corrupt", "kindless": root / "kindless", "unknown": root / "unknown"}


def _tree(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


@pytest.mark.parametrize("index", SAMPLE, ids=lambda i: f"{CASES[i][0]} {' '.join(CASES[i][1])}"[:80])
def test_bad_arguments_are_one_line_exit_2_and_leave_nothing(index, places, capsys, monkeypatch):
    command, template = CASES[index]
    argv = [command, *(arg.format(**places) for arg in template)]
    monkeypatch.chdir(places["tmp"])  # a command without --out would write runs/ here
    before = _tree(places["tmp"])
    started = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    seconds = time.perf_counter() - started
    captured = capsys.readouterr()
    assert code == 2, f"{argv}: exit {code}\n{captured.err[-2000:]}"
    assert captured.err.count("\n") == 1 and captured.err.startswith("descentlab"), f"{argv}:\n{captured.err}"
    assert "Traceback" not in captured.err and captured.out == "", argv
    assert _tree(places["tmp"]) == before, f"{argv} left files behind"
    assert seconds < 20, f"{argv} took {seconds:.1f} s to refuse its arguments"


def test_the_fuzz_covers_every_command():
    assert {CASES[i][0] for i in SAMPLE} == set(COMMANDS)
