"""The fair protocol, the sweep runner (resume, process pool, Ray's absence) and ``descentlab compare``."""

import math
from pathlib import Path

import pytest

from descentlab.cli import main
from descentlab.errors import UserInputError
from descentlab.experiments.compare import CompareSettings, best_lr, lr_grid, run_compare, steps_to_target, summarise
from descentlab.experiments.rundir import RunDir
from descentlab.experiments.sweep import SweepPoint, open_sweep_root, run_sweep


def test_lr_grid_is_log_spaced_around_the_default():
    grid = lr_grid(1e-2, 7)
    assert len(grid) == 7
    assert grid[3] == pytest.approx(1e-2)
    assert grid[0] == pytest.approx(1e-2 * 10 ** -1.5) and grid[-1] == pytest.approx(1e-2 * 10 ** 1.5)
    ratios = [b / a for a, b in zip(grid, grid[1:])]
    assert all(r == pytest.approx(10 ** 0.5) for r in ratios)
    assert lr_grid(0.3, 1) == [0.3]
    with pytest.raises(ValueError, match="budget"):
        lr_grid(0.1, 0)


def test_best_lr_takes_the_lowest_finite_validation_loss():
    trials = [{"lr": 0.1, "final_val_loss": "nan"}, {"lr": 0.01, "final_val_loss": 0.5},
              {"lr": 0.001, "final_val_loss": 0.7}, {"lr": 1.0, "final_val_loss": "inf"}]
    assert best_lr(trials) == 0.01
    with pytest.raises(ValueError, match="diverged"):
        best_lr([{"lr": 0.1, "final_val_loss": "nan"}])


def test_steps_to_target_and_summary_table():
    assert steps_to_target([0, 10, 20], [2.0, 0.4, 0.1], 0.5) == 10
    assert math.isnan(steps_to_target([0, 10], [2.0, 1.0], 0.5))
    curves = []
    for optimizer, losses in (("a", [(2.0, 1.0, 0.2), (2.0, 0.8, 0.4)]), ("b", [(2.0, 1.5, 1.2), (2.0, 1.4, 1.0)])):
        for seed, series in enumerate(losses):
            for step, loss in zip((0, 5, 10), series):
                curves.append({"optimizer": optimizer, "seed": seed, "lr": 0.1, "step": step, "seconds": step / 100,
                               "train_loss": loss, "val_loss": loss + 0.1, "train_accuracy": 1 - loss / 2,
                               "val_accuracy": 0.9 - loss / 2})
    table, target = summarise(curves, 0.5)
    assert target == 0.5
    a, b = table
    assert a["final_train_loss"] == pytest.approx(0.3) and a["steps_to_target"] == 10 and a["reached"] == "2/2"
    assert a["seconds_to_target"] == pytest.approx(0.1)
    assert math.isnan(b["steps_to_target"]) and b["reached"] == "0/2"
    assert a["loss_gap"] == pytest.approx(0.1)
    assert a["best_val_accuracy"] == pytest.approx((0.8 + 0.7) / 2)  # each seed's best, then the mean
    _, median = summarise(curves, None)
    assert median == pytest.approx((0.3 + 1.1) / 2)


# --- sweep runner -------------------------------------------------------------------------------

def record_point(run, *, log, name, fail=False):
    """A sweep point that notes each call in ``log`` (outside the run) and can fail half-way."""
    with open(log, "a") as handle:
        handle.write(name + "\n")
    run.write_text("half.txt", "written before the crash")
    if fail:
        raise RuntimeError("interrupted")
    run.write_text("done.txt", "ok")


def _points(log, fail):
    return [SweepPoint(name, "test-point", record_point, {"log": str(log), "name": name, "fail": name in fail})
            for name in ("a", "b", "c")]


def test_interrupted_sweep_resumes_without_redoing_finished_runs(tmp_path):
    log = tmp_path / "calls.txt"
    root = tmp_path / "sweep"
    with pytest.raises(RuntimeError, match="interrupted"):
        run_sweep(_points(log, fail={"b"}), root, workers=1)
    # a finished; b crashed and left nothing (not even a hidden partial folder); c never started
    assert sorted(p.name for p in root.iterdir()) == ["a"]
    assert (root / "a" / "done.txt").exists()
    result = run_sweep(_points(log, fail=set()), root, workers=1)
    assert result.skipped == ("a",) and result.ran == ("b", "c")
    assert log.read_text().split() == ["a", "b", "b", "c"]
    assert all((run.path / "done.txt").exists() for run in result.runs)
    again = run_sweep(_points(log, fail=set()), root, workers=1)
    assert again.ran == () and log.read_text().split() == ["a", "b", "b", "c"]


def test_staging_leftovers_of_a_killed_run_are_removed(tmp_path):
    root = tmp_path / "sweep"
    (root / ".b.k1ll3d.partial").mkdir(parents=True)  # what SIGKILL in the middle of b leaves
    (root / ".b.k1ll3d.partial" / "half.txt").write_text("x")
    notes = []
    run_sweep(_points(tmp_path / "log", set()), root, workers=1, log=notes.append)
    assert sorted(p.name for p in root.iterdir()) == ["a", "b", "c"]
    assert "removed 1 unfinished" in notes[0]


def test_ray_is_optional_and_says_how_to_get_it(tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("ray is installed here")
    with pytest.raises(UserInputError, match=r"descentlab\[ray\]"):
        run_sweep(_points(tmp_path / "log", set()), tmp_path / "s", ray_address="127.0.0.1:6379")


def test_sweep_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        run_sweep([], tmp_path, workers=0)
    points = _points(tmp_path / "log", set())
    with pytest.raises(ValueError, match="unique"):
        run_sweep(points + points[:1], tmp_path, workers=1)


def test_resuming_a_different_sweep_is_refused(tmp_path):
    open_sweep_root(tmp_path / "r", "compare", {"x": 1})
    assert open_sweep_root(tmp_path / "r", "compare", {"x": 1}).config["x"] == 1
    with pytest.raises(UserInputError, match="different"):
        open_sweep_root(tmp_path / "r", "compare", {"x": 2})


# --- the fair protocol end to end (tiny) ----------------------------------------------------------

SETTINGS = CompareSettings(workload="moons", optimizers=("sgd", "adam"), seeds=2, budget=3, steps=8,
                           batch_size=100, eval_every=4, seed=0, dtype="float64")


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    return run_compare(SETTINGS, tmp_path_factory.mktemp("cmp") / "run", workers=1)


def test_every_optimizer_gets_its_grid_widened_until_the_best_is_inside(compare_run):
    trials = compare_run.read_csv("trials.csv")
    protocol = compare_run.read_json("protocol.json")
    for name in SETTINGS.optimizers:
        mine = [t for t in trials if t["optimizer"] == name]
        rates = sorted(float(t["lr"]) for t in mine)
        grid = protocol["initial_grids"][name]
        assert len(grid) == SETTINGS.budget and set(grid) <= set(rates)
        added = len(rates) - len(grid)
        assert protocol["widenings"][name] == added and protocol["trials_per_optimizer"][name] == len(rates)
        # the grid's log spacing goes on beyond it: every neighbouring pair has the same factor
        ratio = grid[1] / grid[0]
        assert all(b / a == pytest.approx(ratio) for a, b in zip(rates, rates[1:]))
        assert sum(t["chosen"] == "True" for t in mine) == 1
        chosen = protocol["chosen_lr"][name]
        # inside: a tried rate on both sides, or the report names the edge it was left at
        assert (rates[0] < chosen < rates[-1]) == (protocol["edges"][name] is None)
    assert sum(protocol["widenings"].values()) >= 1  # sgd's best at 8 steps is its grid's top rate


def test_chosen_rate_is_the_best_trial_and_seeds_share_their_start(compare_run):
    trials = compare_run.read_csv("trials.csv")
    curves = compare_run.read_csv("curves.csv")
    protocol = compare_run.read_json("protocol.json")
    for name in SETTINGS.optimizers:
        mine = [t for t in trials if t["optimizer"] == name]
        best = min(mine, key=lambda t: float(t["final_val_loss"]))
        assert protocol["chosen_lr"][name] == float(best["lr"])
        assert {float(r["lr"]) for r in curves if r["optimizer"] == name} == {float(best["lr"])}
    # Shared initialisation: at step 0 each seed's loss is the same for every optimizer.
    for seed in (0, 1):
        starts = {r["train_loss"] for r in curves if int(r["seed"]) == seed and r["step"] == "0"}
        assert len(starts) == 1
    starts = {r["train_loss"] for r in curves if r["step"] == "0"}
    assert len(starts) == 2  # and two seeds really are two different initialisations
    summary = compare_run.read_csv("summary.csv")
    assert [r["optimizer"] for r in summary] == ["sgd", "adam"]
    assert all(r["stacked"] == "True" for r in summary)


def test_report_renders_from_the_run_directory_alone(compare_run):
    from descentlab.report.render import render

    path = render(RunDir.open(compare_run.path))
    text = path.read_text()
    counts = compare_run.read_json("protocol.json")["trials_per_optimizer"]
    assert "same tuning budget" in text and f"Trials per optimizer: sgd {counts['sgd']}, adam {counts['adam']}" in text
    assert "held-out test split of 100 samples" in text and "Best test accuracy" in text
    assert text.count("<img") >= 3


def test_compare_command_writes_a_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["compare", "--workload", "moons", "--optimizers", "sgd,momentum", "--seeds", "2", "--budget", "2",
            "--steps", "4", "--eval-every", "2", "--batch-size", "full", "--workers", "1", "--out", str(out)]
    assert main(argv) == 0
    assert (out / "report.html").exists() and (out / "summary.csv").exists()
    names = sorted(p.name for p in (out / "runs").iterdir())
    widened = [n for n in names if "-w" in n]  # rates added beyond a grid's edge: tune-<optimizer>-w<round>
    assert sorted(set(names) - set(widened)) == ["final-momentum", "final-sgd", "tune-momentum", "tune-sgd"]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    capsys.readouterr()
    assert main(argv) == 0  # the same command again: everything is finished, nothing reruns
    err = capsys.readouterr().err
    assert err.count("resuming:") == err.count("runs already finished") >= 2
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamps
    assert main(argv[:-2] + ["--steps", "5", "--out", str(out)]) == 2  # other settings: refused


def test_compare_command_rejects_bad_input(tmp_path, capsys):
    assert main(["compare", "--optimizers", "sgd,nosuch", "--out", str(tmp_path / "x")]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert main(["compare", "--workload", "moons", "--batch-size", "zero", "--out", str(tmp_path / "y")]) == 2
    assert main(["compare", "--workload", "moons", "--budget", "0", "--out", str(tmp_path / "z")]) == 2
    assert not Path(tmp_path / "z").exists()
    try:
        import ray  # noqa: F401
    except ImportError:
        assert main(["compare", "--workload", "moons", "--ray", "127.0.0.1:6379", "--out", str(tmp_path / "r")]) == 2
        assert "descentlab[ray]" in capsys.readouterr().err and not (tmp_path / "r").exists()


@pytest.mark.slow  # two spawned worker pools: a few seconds of interpreter start-up
def test_process_pool_runs_every_point_once_and_resumes(tmp_path):
    log = tmp_path / "calls.txt"
    root = tmp_path / "pool"
    with pytest.raises(RuntimeError, match="interrupted"):
        run_sweep(_points(log, fail={"c"}), root, workers=2)
    assert sorted(p.name for p in root.iterdir()) == ["a", "b"]  # the failure did not stop the others
    result = run_sweep(_points(log, fail=set()), root, workers=2)
    assert result.ran == ("c",) and sorted(log.read_text().split()) == ["a", "b", "c", "c"]


def test_seconds_are_updates_times_one_runs_time_per_update(tmp_path, monkeypatch):
    # The oracle: a clock on which every optimizer update takes exactly TICK seconds and nothing
    # else takes any time, so one run's k-th update ends at k * TICK, whatever the machine.
    import time

    from torch.optim.optimizer import register_optimizer_step_post_hook

    TICK = 0.25  # exact in binary: k * TICK has no rounding
    updates = [0]

    def count(optimizer, args, kwargs):
        updates[0] += 1

    handle = register_optimizer_step_post_hook(count)
    monkeypatch.setattr(time, "perf_counter", lambda: updates[0] * TICK)
    try:
        settings = CompareSettings(workload="moons", optimizers=("sgd", "adam"), seeds=2, budget=1, steps=8,
                                   batch_size=100, eval_every=4, seed=0, dtype="float64")
        run = run_compare(settings, tmp_path / "run", workers=1)
    finally:
        handle.remove()
    curves = run.read_csv("curves.csv")
    assert {r["optimizer"] for r in curves} == {"sgd", "adam"} and len(curves) == 2 * 2 * 3  # steps 0, 4, 8
    for row in curves:
        assert float(row["seconds"]) == int(row["step"]) * TICK
    reached = [r for r in run.read_csv("summary.csv") if math.isfinite(float(r["steps_to_target"]))]
    assert reached  # the default target, the median final loss, is reached by at least one optimizer
    for row in reached:
        assert float(row["seconds_to_target"]) == pytest.approx(float(row["steps_to_target"]) * TICK, rel=1e-12)


# --- findings with their uncertainty, and the Adam-vs-SGD generalisation gap ------------------------

def test_findings_set_every_optimizer_against_the_best_by_the_paired_interval():
    from scipy import stats

    from descentlab.report.compare_page import findings

    accuracy = {"sgd": [0.90, 0.93, 0.91, 0.92], "adam": [0.50, 0.61, 0.55, 0.58], "momentum": [0.91, 0.92, 0.92, 0.90]}
    finals = [{"optimizer": name, "seed": seed, "test_accuracy": value, "test_loss": 1 - value}
              for name, values in accuracy.items() for seed, value in enumerate(values)]
    lines = findings(finals, list(accuracy))
    assert lines[0].startswith("Best test accuracy: sgd, 0.915 [")  # the highest mean (momentum: 0.9125)
    # oracle: scipy's paired t test and its confidence interval of the mean difference, at the
    # Bonferroni level for the two comparisons (adam and momentum against sgd)
    assert "at 97.5 % each (Bonferroni for 2 comparisons" in lines[1]
    low, high = stats.ttest_rel(accuracy["adam"], accuracy["sgd"]).confidence_interval(0.975)
    adam = next(line for line in lines if line.startswith("adam against sgd"))
    assert f"lower by {0.915 - 0.56:.3g} (97.5 % interval" in adam and f"[{low:.3g}, {high:.3g}]" in adam
    assert "momentum against sgd, test accuracy: no effect detectable at this size" in " ".join(lines)
    assert lines[-1] == ("Generalize as well as sgd (no difference detectable at this size): sgd, momentum. "
                         "Generalize worse (test accuracy lower): adam (by 0.355).")


def test_wilson_workload_in_compare_shows_the_generalisation_gap(tmp_path):
    settings = CompareSettings(workload="wilson", optimizers=("sgd", "adam"), seeds=3, budget=2, steps=200,
                               batch_size=None, eval_every=50, resample_data=True)
    run = run_compare(settings, tmp_path / "wilson", workers=1)
    finals = run.read_csv("finals.csv")
    from descentlab.problems.workloads import get_workload

    for row in finals:  # each seed on its own draw; the oracle is that draw's share of negative test labels
        assert int(row["data_seed"]) == int(row["seed"])
        negatives = float((get_workload("wilson", seed=int(row["seed"])).y_test == 0).double().mean())
        expected = 1.0 if row["optimizer"] == "sgd" else 1 - negatives
        assert float(row["test_accuracy"]) == pytest.approx(expected)
        assert float(row["train_accuracy"]) == 1.0
    summary = {r["optimizer"]: r for r in run.read_csv("summary.csv")}
    adam = [float(r["test_accuracy"]) for r in finals if r["optimizer"] == "adam"]
    assert float(summary["adam"]["test_accuracy"]) == pytest.approx(sum(adam) / 3)
    from scipy import stats

    low, high = stats.t.interval(0.95, 2, loc=sum(adam) / 3, scale=stats.sem(adam))
    assert float(summary["adam"]["test_accuracy_low"]) == pytest.approx(low)
    assert float(summary["adam"]["test_accuracy_high"]) == pytest.approx(high)
    from descentlab.report.render import render

    assert "Generalize worse (test accuracy lower): adam" in render(run).read_text()
