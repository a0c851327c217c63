"""The edge of stability over several seeds: does the sharpness reach 2/lr and hover there in every run?

One run's :func:`~descentlab.critical.sharpness.edge_of_stability` summary says what one seed
did. ``descentlab diagnose --seeds N`` runs N seeds of the same configuration; :func:`over_seeds`
gathers their summaries and gives the mean of every number with its 95 % t interval
(:mod:`descentlab.intervals`), and :func:`seed_lines` states the findings only where the
intervals carry them: the sharpness *starts below* the threshold when the interval of its
starting ratio lies below 1, and *hovers at* it when the interval of the median ratio after
settling lies inside the band (±10 %).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["over_seeds", "seed_lines", "KEYS"]

#: The per-run numbers given with an interval over the seeds.
KEYS = ("start_ratio", "reached_step", "peak_ratio", "settled_step", "within_band", "median_ratio")


def over_seeds(summaries: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Every seed's summary, how many reached and settled at the threshold, and the intervals of :data:`KEYS`
    (over the runs that have the number: a run that never reached it has no peak)."""
    from descentlab.intervals import mean_interval

    if len(summaries) != len(seeds):
        raise ValueError(f"summaries and seeds must be as long as each other, got {len(summaries)} and {len(seeds)}")
    runs = []
    for seed, summary in zip(seeds, summaries):
        run = {"seed": int(seed), **dict(summary)}
        first, threshold = summary.get("first_sharpness"), summary.get("threshold")
        run["start_ratio"] = first / threshold if first is not None and threshold else None
        runs.append(run)
    intervals = {}
    for key in KEYS:
        values = [float(r[key]) for r in runs if r.get(key) is not None and math.isfinite(float(r[key]))]
        intervals[key] = mean_interval(values).to_dict()
    band = next((float(r["band"]) for r in runs if r.get("band") is not None), 0.1)
    return {"seeds": [int(s) for s in seeds], "band": band,
            "reached": sum(r.get("reached_step") is not None for r in runs),
            "settled": sum(r.get("settled_step") is not None for r in runs), "runs": runs, "intervals": intervals}


def _text(interval: Mapping[str, Any], digits: int = 3, percent: bool = False) -> str:
    scale = 100 if percent else 1
    unit = " %" if percent else ""
    estimate, low, high = interval["estimate"], interval["low"], interval["high"]
    if estimate is None:
        return "n/a"
    if low is None or high is None:
        return f"{scale * estimate:.{digits}g}{unit} (n = {interval['n']})"
    return f"{scale * estimate:.{digits}g}{unit} [{scale * low:.{digits}g}, {scale * high:.{digits}g}]"


def seed_lines(combined: Mapping[str, Any]) -> list[str]:
    """What the runs did together (means with 95 % intervals), and the two findings they allow."""
    n, band, ranges = len(combined["seeds"]), float(combined["band"]), combined["intervals"]
    lines = [f"over {n} seeds ({', '.join(map(str, combined['seeds']))}), means with 95 % t intervals: "
             f"sharpness at the start {_text(ranges['start_ratio'])}x the stability threshold; reached 90 % of it in "
             f"{combined['reached']} of {n} runs, at step {_text(ranges['reached_step'])}, peaked at "
             f"{_text(ranges['peak_ratio'])}x; settled within {band:.0%} of it in {combined['settled']} of {n}, from "
             f"step {_text(ranges['settled_step'])} on, with a median of {_text(ranges['median_ratio'])}x and "
             f"{_text(ranges['within_band'], percent=True)} of the estimates within {band:.0%}"]
    start, median = ranges["start_ratio"], ranges["median_ratio"]
    if start["high"] is not None and start["high"] < 1:
        lines.append(f"finding: the sharpness starts below the threshold (ratio {_text(start)}, interval below 1)")
    else:
        lines.append(f"the sharpness starting below the threshold is not shown at this size (ratio {_text(start)})")
    if combined["reached"] == n and median["low"] is not None and 1 - band <= median["low"] and \
            median["high"] <= 1 + band:
        lines.append(f"finding: in every run it reaches the threshold and hovers there (median ratio after "
                     f"settling {_text(median)}, interval inside 1 ± {band:g})")
    else:
        lines.append(f"hovering at the threshold is not shown at this size ({combined['reached']} of {n} runs "
                     f"reached it; median ratio {_text(median)})")
    return lines
