"""The edge of stability over seeds: intervals of each run's summary, and the findings they allow."""

import json

import pytest

from descentlab.cli import main
from descentlab.report.edge_seeds import over_seeds, seed_lines


def _summary(first, reached, median, within=0.9):
    return {"band": 0.1, "first_sharpness": first, "threshold": 4.0, "reached_step": reached, "peak_ratio": 1.2,
            "settled_step": None if reached is None else reached + 50, "median_ratio": median,
            "within_band": within}


def test_intervals_are_the_t_intervals_of_the_runs_numbers():
    from scipy import stats

    runs = [_summary(3.0, 100, 1.04), _summary(2.8, 120, 1.06), _summary(3.2, 90, 1.03)]
    combined = over_seeds(runs, [0, 1, 2])
    medians = [1.04, 1.06, 1.03]
    low, high = stats.t.interval(0.95, 2, loc=sum(medians) / 3, scale=stats.sem(medians))
    median = combined["intervals"]["median_ratio"]
    assert (median["estimate"], median["low"], median["high"]) == pytest.approx((sum(medians) / 3, low, high))
    assert combined["intervals"]["start_ratio"]["estimate"] == pytest.approx(0.75)  # 3.0 / 4
    lines = seed_lines(combined)
    assert lines[1].startswith("finding: the sharpness starts below the threshold")
    assert lines[2].startswith("finding: in every run it reaches the threshold and hovers there")


def test_no_hovering_finding_when_a_run_never_reaches_or_the_interval_leaves_the_band():
    missed = over_seeds([_summary(3.0, 100, 1.04), _summary(3.0, None, None)], [0, 1])
    assert missed["reached"] == 1 and "not shown at this size (1 of 2 runs" in seed_lines(missed)[2]
    wide = over_seeds([_summary(3.0, 100, 1.02), _summary(3.0, 100, 1.09)], [0, 1])  # interval beyond 1.1
    assert "hovering at the threshold is not shown" in seed_lines(wide)[2]
    with pytest.raises(ValueError, match="as long"):
        over_seeds([_summary(3.0, 100, 1.0)], [0, 1])


def test_diagnose_runs_the_other_seeds_and_summarises_them(tmp_path, capsys):
    out = tmp_path / "eos"
    assert main(["diagnose", "--workload", "eos", "--steps", "15", "--seeds", "2", "--no-remedies",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    combined = json.loads((out / "sharpness_seeds.json").read_text())
    assert combined["seeds"] == [0, 1] and len(combined["runs"]) == 2
    assert (out / "seeds" / "seed-1" / "sharpness.csv").exists() and (out / "seeds" / "seed-1" / "tracked.csv").exists()
    assert "over 2 seeds (0, 1)" in printed
    # the second seed's first estimate is its own run's, measured at step 0
    assert combined["runs"][1]["first_sharpness"] != combined["runs"][0]["first_sharpness"]
    assert main(["diagnose", "--workload", "moons", "--seeds", "2", "--out", str(tmp_path / "x")]) == 2
    assert "--track-sharpness" in capsys.readouterr().err and not (tmp_path / "x").exists()
