"""Learning-rate grids that cannot hit their edge silently.

A study tunes a rate on a log grid (:func:`lr_grid`) and keeps the one with the lowest final
validation loss (:func:`best_lr`). If that rate is the grid's largest or smallest, a better
one may lie beyond it, and the grid said nothing. :func:`widen` therefore adds one rate at a
time, one grid step beyond the edge where the best sits, until the best has a tried rate on both
sides (a diverged trial counts as tried: the rate above it is too large), or until
``max_widenings`` rates were added; :attr:`Widened.edge` then says at which edge the choice was
left. Every added rate is trained exactly like the grid's (the caller's ``train``), so every
candidate gets the same budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["lr_grid", "best_lr", "grid_ratio", "next_rate", "edge_of", "Widened", "widen", "tune_in_sweeps",
           "MAX_WIDENINGS"]

#: Rates added beyond an edge at most, per tuning.
MAX_WIDENINGS = 6


def lr_grid(default: float, budget: int, span: float = 1.5) -> list[float]:
    """``budget`` learning rates, log-spaced over ``default x 10^[-span, span]`` (just ``default`` if 1)."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if not default > 0:
        raise ValueError(f"default must be > 0, got {default}")
    if budget == 1:
        return [float(default)]
    return [float(default * 10 ** (-span + 2 * span * i / (budget - 1))) for i in range(budget)]


def best_lr(trials: Sequence[Mapping[str, Any]]) -> float:
    """The ``lr`` of the trial with the lowest finite ``final_val_loss`` (ties: the smaller rate)."""
    finite = [t for t in trials if math.isfinite(float(t["final_val_loss"]))]
    if not finite:
        raise ValueError("every trial diverged (non-finite validation loss); widen or lower the grid")
    return float(min(finite, key=lambda t: (float(t["final_val_loss"]), float(t["lr"])))["lr"])


def grid_ratio(grid: Sequence[float]) -> float:
    """The factor between neighbouring rates of a log grid (half a decade for a grid of one rate)."""
    rates = sorted(float(r) for r in grid)
    if len(rates) < 2:
        return 10 ** 0.5
    return (rates[-1] / rates[0]) ** (1 / (len(rates) - 1))


def edge_of(trials: Sequence[Mapping[str, Any]]) -> str | None:
    """``"high"`` / ``"low"`` when the best trial's rate is the largest / smallest tried, ``"all diverged"``
    when no trial has a finite validation loss, else ``None`` (a tried rate on both sides)."""
    rates = sorted({float(t["lr"]) for t in trials})
    if not any(math.isfinite(float(t["final_val_loss"])) for t in trials):
        return "all diverged"
    if len(rates) < 2:
        return "high"  # one rate: nothing on either side; widen upward first
    best = best_lr(trials)
    return "high" if best == rates[-1] else "low" if best == rates[0] else None


def next_rate(trials: Sequence[Mapping[str, Any]], ratio: float) -> float | None:
    """One grid step (a factor ``ratio``) beyond the edge where the best trial sits, below the lowest
    rate when every trial diverged, or ``None`` when the best is inside the tried rates."""
    rates = sorted({float(t["lr"]) for t in trials})
    where = edge_of(trials)
    if where is None:
        return None
    return rates[-1] * ratio if where == "high" else rates[0] / ratio


@dataclass(frozen=True)
class Widened:
    """The outcome of one tuning.

    Attributes:
        trials: every trial, the grid's and the added ones.
        chosen: the rate with the lowest final validation loss.
        edge: ``None`` when the chosen rate has a tried rate on both sides; else where it was left
            (``"high"``, ``"low"``, or ``"all diverged"``) after ``widenings`` added rates.
        widenings: how many rates were added beyond the grid.
    """

    trials: tuple[Mapping[str, Any], ...]
    chosen: float
    edge: str | None
    widenings: int


def widen(initial: Mapping[Hashable, Sequence[Mapping[str, Any]]], ratios: Mapping[Hashable, float],
          train: Callable[[Mapping[Hashable, float], int], Mapping[Hashable, Sequence[Mapping[str, Any]]]],
          max_widenings: int = MAX_WIDENINGS) -> dict[Hashable, Widened]:
    """Widen every tuning of ``initial`` (trials per key, e.g. per optimizer) until its best rate is inside.

    Each round asks ``train({key: rate}, round)`` for the trials of one new rate per key whose best
    is still at an edge (round 1, 2, ...; the keys train together, e.g. as one sweep), for at most
    ``max_widenings`` rounds. A rate never repeats. Returns a :class:`Widened` per key.
    """
    if isinstance(max_widenings, bool) or not isinstance(max_widenings, int) or max_widenings < 0:
        raise ValueError(f"max_widenings must be an int >= 0, got {max_widenings!r}")
    trials = {key: list(rows) for key, rows in initial.items()}
    added = {key: 0 for key in trials}
    for round_ in range(1, max_widenings + 1):
        wanted = {}
        for key, rows in trials.items():
            rate = next_rate(rows, ratios[key])
            if rate is not None and rate not in {float(t["lr"]) for t in rows}:
                wanted[key] = rate
        if not wanted:
            break
        for key, rows in train(wanted, round_).items():
            trials[key].extend(rows)
            added[key] += 1
    out = {}
    for key, rows in trials.items():
        where = edge_of(rows)
        chosen = best_lr(rows) if where != "all diverged" else math.nan
        out[key] = Widened(tuple(rows), chosen, where, added[key])
    return out


def tune_in_sweeps(grids: Mapping[Hashable, Sequence[float]], point: Callable[[Hashable, list[float], str], Any],
                   root: Any, *, max_widenings: int = MAX_WIDENINGS, say: Callable[[str], None] | None = None,
                   **sweep: Any) -> tuple[dict[Hashable, Widened], list[Any]]:
    """Tune every key's grid as sweep points, then :func:`widen` them in rounds of sweep points.

    ``point(key, rates, suffix)`` makes the :class:`~descentlab.experiments.sweep.SweepPoint` that
    trains ``rates`` and writes ``trials.csv``: ``suffix`` is ``""`` for the grid and ``"-w<k>"``
    for the rate added in round k, so a resumed study finds every finished point under its name.
    ``sweep`` goes to :func:`~descentlab.experiments.sweep.run_sweep`. Returns the outcome per key
    and every point's run directory.
    """
    from descentlab.experiments.sweep import run_sweep

    keys = list(grids)
    first = run_sweep([point(key, list(grids[key]), "") for key in keys], root, log=say, **sweep)
    runs = list(first.runs)
    initial = {key: run.read_csv("trials.csv") for key, run in zip(keys, first.runs)}

    def train(wanted: Mapping[Hashable, float], round_: int) -> dict[Hashable, list[Mapping[str, Any]]]:
        if say is not None:
            say(f"widening the grid (round {round_}): " + ", ".join(f"{k} at {r:.3g}" for k, r in wanted.items()))
        done = run_sweep([point(key, [rate], f"-w{round_}") for key, rate in wanted.items()], root, log=say, **sweep)
        runs.extend(done.runs)
        return {key: run.read_csv("trials.csv") for key, run in zip(wanted, done.runs)}

    return widen(initial, {key: grid_ratio(grids[key]) for key in keys}, train, max_widenings), runs
