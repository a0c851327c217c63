"""A fair comparison of optimizers on one workload.

The protocol (written into every report):

1. *Same tuning budget.* Each optimizer tries ``budget`` learning rates on a log grid
   centred on its registry default (:func:`lr_grid`: default x 10^[-1.5 .. 1.5]), all with
   the first seed, for the same number of steps and the same batch size.
2. *Chosen on validation.* The rate with the lowest final validation loss wins (a diverged
   trial, with a non-finite loss, never wins).
3. *Rerun with seeds.* The winner is trained again with ``seeds`` seeds. Seed s fixes the
   initial weights and the data order, and is the same for every optimizer, so all of them
   start from the same points and see the same batches.
4. *Steps and seconds.* Curves record the update count and the seconds of one run:
   updates x the time per update of one plain model with that optimizer, measured
   separately (:func:`~descentlab.experiments.ensemble.time_per_update`), the same way for an
   optimizer trained stacked and one trained separately.

Every trial and every seeded run is one point of a sweep (:mod:`descentlab.experiments.sweep`):
``tune-<optimizer>`` and ``final-<optimizer>`` directories under ``<run>/runs/``, each complete
or absent, so an interrupted comparison resumes where it stopped. Within a point, the
rates (or seeds) of an element-wise optimizer train as one stacked ensemble
(:mod:`descentlab.experiments.ensemble`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from descentlab.checks import check_int
from descentlab.experiments.ensemble import TIMED_UPDATES
from descentlab.rundir import RunDir

__all__ = [
    "CompareSettings",
    "lr_grid",
    "best_lr",
    "run_compare",
    "summarise",
    "steps_to_target",
    "point_dir_name",
    "CURVE_COLUMNS",
]

CURVE_COLUMNS = ("optimizer", "seed", "lr", "step", "seconds", "train_loss", "train_accuracy",
                 "val_loss", "val_accuracy")
TRIAL_COLUMNS = ("optimizer", "lr", "seed", "final_train_loss", "final_val_loss", "final_val_accuracy", "chosen")


@dataclass(frozen=True)
class CompareSettings:
    """Everything that defines one comparison (all of it goes into ``config.json``)."""

    workload: str | Mapping[str, Any]  # a built-in name, or {"model": ..., "data": ...}
    optimizers: tuple[str, ...]
    seeds: int = 3
    budget: int = 8
    steps: int = 300
    batch_size: int | None = 64
    eval_every: int = 10
    seed: int = 0
    target_loss: float | None = None
    dtype: str = "float32"
    schedule: str | None = None

    def __post_init__(self) -> None:
        if not self.optimizers:
            raise ValueError("optimizers must name at least one optimizer")
        if len(set(self.optimizers)) != len(self.optimizers):
            raise ValueError("optimizers must not repeat a name")
        for name, value in (("seeds", self.seeds), ("budget", self.budget), ("steps", self.steps),
                            ("eval_every", self.eval_every)):
            check_int(name, value)
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (full batch), got {self.batch_size!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.target_loss is not None and not self.target_loss > 0:
            raise ValueError(f"target_loss must be > 0, got {self.target_loss}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")

    def config(self) -> dict[str, Any]:
        return {
            "workload": self.workload, "optimizers": list(self.optimizers), "seeds": self.seeds,
            "budget": self.budget, "steps": self.steps, "batch_size": self.batch_size,
            "eval_every": self.eval_every, "seed": self.seed, "target_loss": self.target_loss,
            "dtype": self.dtype, "schedule": self.schedule,
        }


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


def steps_to_target(steps: Sequence[float], losses: Sequence[float], target: float) -> float:
    """The first recorded step whose loss is at most ``target`` (NaN if never)."""
    for step, loss in zip(steps, losses):
        if loss <= target:
            return float(step)
    return math.nan


def point_dir_name(prefix: str, optimizer: str) -> str:
    """A file-system-safe run name: ``tune-lookahead+adam`` for ``lookahead:adam``."""
    return f"{prefix}-{optimizer.replace(':', '+')}"


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def curve_rows(optimizer: str, result: Any) -> list[dict[str, Any]]:
    """One CSV row per (member, recorded step) of an :class:`~descentlab.experiments.ensemble.EnsembleResult`."""
    rows = []
    for k, member in enumerate(result.members):
        for t, step in enumerate(result.steps):
            rows.append({
                "optimizer": optimizer, "seed": member.seed, "lr": member.lr, "step": step,
                "seconds": float(result.seconds[k, t]),
                "train_loss": float(result.train_loss[k, t]), "train_accuracy": float(result.train_accuracy[k, t]),
                "val_loss": float(result.val_loss[k, t]), "val_accuracy": float(result.val_accuracy[k, t]),
            })
    return rows


def train_point(run: RunDir, *, workload: str | Mapping[str, Any], optimizer: str, lrs: Sequence[float],
                seeds: Sequence[int],
                steps: int, batch_size: int | None, eval_every: int, data_seed: int, dtype: str,
                role: str, schedule: str | None = None) -> None:
    """Sweep point: train every (seed, lr) pair of ``seeds x lrs`` and write ``curves.csv``, ``result.json``.

    ``role`` is ``"tune"`` (also writes ``trials.csv``) or ``"final"``.
    """
    from descentlab.experiments.ensemble import Member, time_per_update, train_members
    from descentlab.problems.user_workload import workload_from

    work = workload_from(workload, seed=data_seed, dtype=_dtype(dtype))
    members = [Member(int(s), float(lr)) for lr in lrs for s in seeds]
    notes: list[str] = []
    result = train_members(work, optimizer, members, steps=steps, batch_size=batch_size,
                           eval_every=eval_every, schedule=schedule, log=notes.append)
    rows = curve_rows(optimizer, result)
    info = {"stacked": result.stacked, "reason": result.reason, "wall_seconds": result.wall_seconds,
            "n_runs": len(members)}
    if role == "final":
        # Seconds of one plain run, measured the same way for every optimizer (stacked or not).
        per_update = time_per_update(work, optimizer, float(lrs[0]), batch_size, seed=int(seeds[0]),
                                     updates=min(TIMED_UPDATES, steps))
        info["seconds_per_update"] = per_update
        for row in rows:
            row["seconds"] = row["step"] * per_update
    run.write_csv("curves.csv", rows, CURVE_COLUMNS)
    run.write_text("log.txt", "\n".join(notes) + "\n")
    run.write_json("result.json", info)
    if role == "tune":
        rows = [{"optimizer": optimizer, "lr": m.lr, "seed": m.seed,
                 "final_train_loss": float(result.train_loss[k, -1]),
                 "final_val_loss": float(result.val_loss[k, -1]),
                 "final_val_accuracy": float(result.val_accuracy[k, -1])} for k, m in enumerate(members)]
        run.write_csv("trials.csv", rows, TRIAL_COLUMNS)


def run_compare(settings: CompareSettings, out: str | os.PathLike, *, workers: int | None = None,
                ray_address: str | None = None, progress: bool = False,
                log: Callable[[str], None] | None = None) -> RunDir:
    """Run (or resume) the whole comparison into ``out`` and write its tables; returns the run.

    Writes ``trials.csv`` (every tuning trial, the chosen one marked), ``curves.csv`` (every
    seeded run's curves), ``summary.csv`` (one row per optimizer), ``log.txt`` and ``protocol.json``.
    The caller renders ``report.html``.
    """
    from descentlab.experiments.sweep import SweepPoint, import_ray, open_sweep_root, run_sweep
    from descentlab.optim.registry import OPTIMIZERS, parse_name

    say = log or (lambda message: None)
    grids = {}
    for name in settings.optimizers:
        _, base = parse_name(name)
        grids[name] = lr_grid(OPTIMIZERS[base].lr, settings.budget)
    if ray_address:
        import_ray()  # fail before anything is written
    run = open_sweep_root(out, "compare", settings.config())
    common = dict(workload=settings.workload, steps=settings.steps, batch_size=settings.batch_size,
                  eval_every=settings.eval_every, data_seed=settings.seed, dtype=settings.dtype,
                  schedule=settings.schedule)
    tune_seed = [settings.seed]
    seeds = list(range(settings.seed, settings.seed + settings.seeds))
    root = run.file("runs")
    tune = [SweepPoint(point_dir_name("tune", name), "compare-point", train_point,
                       dict(common, optimizer=name, lrs=grids[name], seeds=tune_seed, role="tune"))
            for name in settings.optimizers]
    say(f"tuning: {len(tune)} optimizers x {settings.budget} learning rates")
    tuned = run_sweep(tune, root, workers=workers, ray_address=ray_address, progress=progress, log=say)
    trials: list[dict[str, Any]] = []
    chosen: dict[str, float] = {}
    for name, point in zip(settings.optimizers, tuned.runs):
        rows = point.read_csv("trials.csv")
        chosen[name] = best_lr(rows)
        for row in rows:
            row["chosen"] = float(row["lr"]) == chosen[name]
        trials.extend(rows)
    final = [SweepPoint(point_dir_name("final", name), "compare-point", train_point,
                        dict(common, optimizer=name, lrs=[chosen[name]], seeds=seeds, role="final"))
             for name in settings.optimizers]
    say(f"final: {len(final)} optimizers x {len(seeds)} seeds at their chosen rates")
    finished = run_sweep(final, root, workers=workers, ray_address=ray_address, progress=progress, log=say)

    curves: list[dict[str, str]] = []
    notes: list[str] = []
    stacked: dict[str, bool] = {}
    for name, point in zip(settings.optimizers, finished.runs):
        curves.extend(point.read_csv("curves.csv"))
        info = point.read_json("result.json")
        stacked[name] = bool(info["stacked"])
        notes.extend(point.file("log.txt").read_text(encoding="utf-8").split("\n"))
    for point in tuned.runs:
        notes.extend(point.file("log.txt").read_text(encoding="utf-8").split("\n"))
    summary, target = summarise(curves, settings.target_loss)
    for row in summary:
        row["stacked"] = stacked[row["optimizer"]]
    run.write_csv("trials.csv", trials, TRIAL_COLUMNS)
    run.write_csv("curves.csv", curves, CURVE_COLUMNS)
    run.write_csv("summary.csv", summary)
    run.write_text("log.txt", "\n".join(n for n in notes if n) + "\n")
    run.write_json("protocol.json", {
        "grids": grids, "chosen_lr": chosen, "tune_seed": settings.seed, "seeds": seeds,
        "target_loss": target, "trials_per_optimizer": {n: len(grids[n]) for n in settings.optimizers},
    })
    return run


def summarise(curves: Sequence[Mapping[str, Any]], target_loss: float | None) -> tuple[list[dict[str, Any]], float]:
    """One table row per optimizer from the seeded curves (means over seeds); returns (rows, target).

    Columns: final train loss (mean and std), best validation accuracy (mean over seeds of each
    seed's best), the generalisation gap (final validation loss minus final training loss, and
    training minus validation accuracy), the steps and seconds until the training loss first
    reaches ``target_loss`` (mean over the seeds that reach it, and how many did), and the
    learning rate. With ``target_loss=None`` the target is the median of the optimizers' final
    mean training losses, so roughly half of them reach it.
    """
    import numpy as np

    by_run: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    order: list[str] = []
    for row in curves:
        name = str(row["optimizer"])
        if name not in order:
            order.append(name)
        by_run.setdefault((name, int(row["seed"])), []).append(row)

    def series(rows, key):
        return np.array([float(r[key]) for r in sorted(rows, key=lambda r: int(r["step"]))])

    finals = {}
    for name in order:
        runs = [rows for (n, _), rows in by_run.items() if n == name]
        finals[name] = float(np.mean([series(r, "train_loss")[-1] for r in runs]))
    if target_loss is None:
        finite = [v for v in finals.values() if math.isfinite(v)]
        target_loss = float(np.median(finite)) if finite else math.nan
    table = []
    for name in order:
        runs = [rows for (n, _), rows in by_run.items() if n == name]
        final_train = [series(r, "train_loss")[-1] for r in runs]
        final_val = [series(r, "val_loss")[-1] for r in runs]
        best_acc = [np.nanmax(series(r, "val_accuracy")) if np.isfinite(series(r, "val_accuracy")).any() else math.nan
                    for r in runs]
        acc_gap = [series(r, "train_accuracy")[-1] - series(r, "val_accuracy")[-1] for r in runs]
        hit_steps, hit_seconds = [], []
        for r in runs:
            s = steps_to_target(series(r, "step"), series(r, "train_loss"), target_loss)
            if math.isfinite(s):
                index = int(np.nonzero(series(r, "step") == s)[0][0])
                hit_steps.append(s)
                hit_seconds.append(series(r, "seconds")[index])
        table.append({
            "optimizer": name,
            "lr": float(runs[0][0]["lr"]),
            "final_train_loss": float(np.mean(final_train)),
            "final_train_loss_std": float(np.std(final_train)),
            "best_val_accuracy": float(np.mean(best_acc)),
            "loss_gap": float(np.mean(final_val) - np.mean(final_train)),
            "accuracy_gap": float(np.mean(acc_gap)),
            "steps_to_target": float(np.mean(hit_steps)) if hit_steps else math.nan,
            "seconds_to_target": float(np.mean(hit_seconds)) if hit_seconds else math.nan,
            "reached": f"{len(hit_steps)}/{len(runs)}",
        })
    return table, float(target_loss)
