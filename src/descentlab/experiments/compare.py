"""A fair comparison of optimizers on one workload.

The protocol (written into every report):

1. *Same tuning budget.* Each optimizer tries ``budget`` learning rates on a log grid
   centred on its registry default (:func:`lr_grid`: default x 10^[-1.5 .. 1.5]), all with
   the first seed, for the same number of steps and the same batch size.
2. *A grid that cannot hit its edge silently.* When the best rate is the grid's largest or
   smallest, one more rate a grid step beyond it is tried (same steps, same seed), until the
   best has a tried rate on both sides or :data:`~descentlab.experiments.tuning.MAX_WIDENINGS`
   were added; the report says where a choice was left at an edge.
3. *Chosen on validation, measured on test.* The rate with the lowest final validation loss
   wins (a diverged trial never wins). The validation split is the one tuned on; a held-out
   test split (:func:`~descentlab.problems.workloads.with_test_split`: the workload's own, or
   the other half of its validation split) is read only at the end of the seeded runs.
4. *Rerun with seeds.* The winner is trained again with ``seeds`` seeds. Seed s fixes the
   initial weights and the data order, and is the same for every optimizer, so all of them
   start from the same points and see the same batches. With ``resample_data`` seed s also
   draws its own data set (or split) with seed s, for workloads whose runs differ only through
   their data (``Workload.seeds_draw_data``: a zero start trained full batch).
5. *Findings with their uncertainty.* Per optimizer the final test accuracy (or loss), the
   generalisation gap and the training loss are means over seeds with 95 % t intervals; each
   optimizer is set against the best one by the paired interval of the difference (the seeds are
   shared), and a difference is stated only when its interval excludes 0
   (:mod:`descentlab.intervals`).
6. *Steps and seconds.* Curves record the update count and the seconds of one run:
   updates x the time per update of one plain model with that optimizer, measured
   separately (:func:`~descentlab.experiments.ensemble.time_per_update`), the same way for an
   optimizer trained stacked and one trained separately.

Every trial and every seeded run is one point of a sweep (:mod:`descentlab.experiments.sweep`):
``tune-<optimizer>`` (``tune-<optimizer>-w<k>`` for an added rate) and ``final-<optimizer>``
directories under ``<run>/runs/``, each complete or absent, so an interrupted comparison resumes
where it stopped. Within a point, the rates (or seeds) of an element-wise optimizer train as one
stacked ensemble (:mod:`descentlab.experiments.ensemble`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from descentlab.checks import check_int
from descentlab.experiments.ensemble import TIMED_UPDATES
from descentlab.experiments.tuning import best_lr, lr_grid  # best_lr: part of this module's API too
from descentlab.rundir import RunDir

__all__ = [
    "CompareSettings",
    "lr_grid",
    "best_lr",
    "run_compare",
    "summarise",
    "steps_to_target",
    "point_dir_name",
    "held_out_metrics",
    "CURVE_COLUMNS",
    "FINAL_COLUMNS",
]

CURVE_COLUMNS = ("optimizer", "seed", "lr", "step", "seconds", "train_loss", "train_accuracy",
                 "val_loss", "val_accuracy")
TRIAL_COLUMNS = ("optimizer", "lr", "seed", "final_train_loss", "final_val_loss", "final_val_accuracy", "chosen")
FINAL_COLUMNS = ("optimizer", "seed", "data_seed", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                 "test_loss", "test_accuracy")


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
    resample_data: bool = False

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
            "dtype": self.dtype, "schedule": self.schedule, "resample_data": self.resample_data,
        }


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


def held_out_metrics(work: Any, params: Mapping[str, Any], k: int) -> dict[str, float]:
    """Member ``k``'s final weights (rows of ``params``) measured on ``work``'s splits, in eval mode:
    ``{"<split>_loss", "<split>_accuracy"}`` for train, val and test (accuracy NaN for regression)."""
    import torch

    with torch.random.fork_rng(devices=[]):  # building the skeleton must not move the caller's RNG
        model = work.make_model()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(params[name][k])
    model.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        for split, (X, y) in (("train", (work.X_train, work.y_train)), ("val", (work.X_val, work.y_val)),
                              ("test", (work.X_test, work.y_test))):
            output = model(X)
            out[f"{split}_loss"] = float(work.loss_fn(output, y))
            out[f"{split}_accuracy"] = (float((output.argmax(-1) == y).double().mean())
                                        if work.task == "classification" else math.nan)
    return out


def train_point(run: RunDir, *, workload: str | Mapping[str, Any], optimizer: str, lrs: Sequence[float],
                seeds: Sequence[int],
                steps: int, batch_size: int | None, eval_every: int, data_seed: int, dtype: str,
                role: str, schedule: str | None = None, resample_data: bool = False) -> None:
    """Sweep point: train every (seed, lr) pair of ``seeds x lrs`` and write ``curves.csv``, ``result.json``.

    ``role`` is ``"tune"`` (also writes ``trials.csv``) or ``"final"`` (also ``finals.csv``: every
    seed's final weights measured on the training, validation and held-out test splits). With
    ``resample_data`` a final point trains each seed on the data drawn with that seed.
    """
    from descentlab.experiments.ensemble import Member, time_per_update, train_members
    from descentlab.problems.user_workload import workload_from
    from descentlab.problems.workloads import with_test_split

    groups = [(int(s), [int(s)]) for s in seeds] if resample_data and role == "final" else [(data_seed, list(seeds))]
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    finals: list[dict[str, Any]] = []
    info: dict[str, Any] = {"stacked": True, "reason": "", "wall_seconds": 0.0, "n_runs": 0}
    trials = []
    per_update = None
    for data, group in groups:
        work = with_test_split(workload_from(workload, seed=data, dtype=_dtype(dtype)), seed=data)
        members = [Member(int(s), float(lr)) for lr in lrs for s in group]
        result = train_members(work, optimizer, members, steps=steps, batch_size=batch_size,
                               eval_every=eval_every, schedule=schedule, log=notes.append)
        mine = curve_rows(optimizer, result)
        info.update(stacked=info["stacked"] and result.stacked, reason=result.reason or info["reason"],
                    wall_seconds=info["wall_seconds"] + result.wall_seconds, n_runs=info["n_runs"] + len(members),
                    n_val=work.n_val, n_test=work.n_test)
        if role == "final":
            if per_update is None:  # seconds of one plain run, measured the same way for every optimizer
                per_update = time_per_update(work, optimizer, float(lrs[0]), batch_size, seed=int(group[0]),
                                             updates=min(TIMED_UPDATES, steps))
            for row in mine:
                row["seconds"] = row["step"] * per_update
            for k, m in enumerate(members):
                finals.append({"optimizer": optimizer, "seed": m.seed, "data_seed": data, "lr": m.lr,
                               **held_out_metrics(work, result.params, k)})
        else:
            trials += [{"optimizer": optimizer, "lr": m.lr, "seed": m.seed,
                        "final_train_loss": float(result.train_loss[k, -1]),
                        "final_val_loss": float(result.val_loss[k, -1]),
                        "final_val_accuracy": float(result.val_accuracy[k, -1])} for k, m in enumerate(members)]
        rows += mine
    if per_update is not None:
        info["seconds_per_update"] = per_update
    run.write_csv("curves.csv", rows, CURVE_COLUMNS)
    run.write_text("log.txt", "\n".join(notes) + "\n")
    run.write_json("result.json", info)
    if role == "tune":
        run.write_csv("trials.csv", trials, TRIAL_COLUMNS)
    else:
        run.write_csv("finals.csv", finals, FINAL_COLUMNS)


def run_compare(settings: CompareSettings, out: str | os.PathLike, *, workers: int | None = None,
                ray_address: str | None = None, progress: bool = False,
                log: Callable[[str], None] | None = None) -> RunDir:
    """Run (or resume) the whole comparison into ``out`` and write its tables; returns the run.

    Writes ``trials.csv`` (every tuning trial, the chosen one marked), ``curves.csv`` (every
    seeded run's curves), ``finals.csv`` (every seeded run's final weights on the training,
    validation and test splits), ``summary.csv`` (one row per optimizer, means with their 95 %
    intervals), ``log.txt`` and ``protocol.json``. The caller renders ``report.html``.
    """
    from descentlab.experiments.sweep import SweepPoint, import_ray, open_sweep_root, run_sweep
    from descentlab.experiments.tuning import tune_in_sweeps
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
    sweep = dict(workers=workers, ray_address=ray_address, progress=progress)

    def tune_point(name: str, rates: list[float], suffix: str) -> SweepPoint:
        return SweepPoint(point_dir_name("tune", name) + suffix, "compare-point", train_point,
                          dict(common, optimizer=name, lrs=rates, seeds=tune_seed, role="tune"))

    say(f"tuning: {len(grids)} optimizers x {settings.budget} learning rates")
    tuned, tune_runs = tune_in_sweeps(grids, tune_point, root, say=say, **sweep)
    trials: list[dict[str, Any]] = []
    chosen: dict[str, float] = {}
    for name in settings.optimizers:
        outcome = tuned[name]
        if outcome.edge == "all diverged":
            raise ValueError(f"every trial of {name} diverged (non-finite validation loss), down to lr "
                             f"{min(float(t['lr']) for t in outcome.trials):.3g}")
        chosen[name] = outcome.chosen
        for row in outcome.trials:
            trials.append({**row, "chosen": float(row["lr"]) == chosen[name]})
    final = [SweepPoint(point_dir_name("final", name), "compare-point", train_point,
                        dict(common, optimizer=name, lrs=[chosen[name]], seeds=seeds, role="final",
                             resample_data=settings.resample_data))
             for name in settings.optimizers]
    say(f"final: {len(final)} optimizers x {len(seeds)} seeds at their chosen rates"
        + (", each seed on its own data draw" if settings.resample_data else ""))
    finished = run_sweep(final, root, log=say, **sweep)

    curves: list[dict[str, str]] = []
    finals: list[dict[str, str]] = []
    notes: list[str] = []
    stacked: dict[str, bool] = {}
    sizes: dict[str, int] = {}
    for name, point in zip(settings.optimizers, finished.runs):
        curves.extend(point.read_csv("curves.csv"))
        finals.extend(point.read_csv("finals.csv"))
        info = point.read_json("result.json")
        stacked[name] = bool(info["stacked"])
        sizes = {"n_val": int(info["n_val"]), "n_test": int(info["n_test"])}
        notes.extend(point.file("log.txt").read_text(encoding="utf-8").split("\n"))
    for point in tune_runs:
        notes.extend(point.file("log.txt").read_text(encoding="utf-8").split("\n"))
    summary, target = summarise(curves, settings.target_loss, finals)
    for row in summary:
        row["stacked"] = stacked[row["optimizer"]]
    run.write_csv("trials.csv", trials, TRIAL_COLUMNS)
    run.write_csv("curves.csv", curves, CURVE_COLUMNS)
    run.write_csv("finals.csv", finals, FINAL_COLUMNS)
    run.write_csv("summary.csv", summary)
    run.write_text("log.txt", "\n".join(n for n in notes if n) + "\n")
    run.write_json("protocol.json", {
        "grids": {n: sorted(float(t["lr"]) for t in tuned[n].trials) for n in settings.optimizers},
        "initial_grids": grids, "chosen_lr": chosen,
        "edges": {n: tuned[n].edge for n in settings.optimizers},
        "widenings": {n: tuned[n].widenings for n in settings.optimizers},
        "tune_seed": settings.seed, "seeds": seeds, "resample_data": settings.resample_data,
        "target_loss": target, "trials_per_optimizer": {n: len(tuned[n].trials) for n in settings.optimizers},
        **sizes,
    })
    return run


def summarise(curves: Sequence[Mapping[str, Any]], target_loss: float | None,
              finals: Sequence[Mapping[str, Any]] | None = None) -> tuple[list[dict[str, Any]], float]:
    """One table row per optimizer from the seeded curves (means over seeds); returns (rows, target).

    Columns: final train loss (mean and std), best validation accuracy (mean over seeds of each
    seed's best), the generalisation gap on the validation split (final validation loss minus
    final training loss, and training minus validation accuracy), the steps and seconds until the
    training loss first reaches ``target_loss`` (mean over the seeds that reach it, and how many
    did), and the learning rate. With ``target_loss=None`` the target is the median of the
    optimizers' final mean training losses, so roughly half of them reach it.

    With ``finals`` (rows of ``finals.csv``) also, on the held-out test split: ``test_loss``,
    ``test_accuracy``, ``test_gap`` (test minus training loss) and ``test_accuracy_gap`` (training
    minus test accuracy), each the mean over seeds with its 95 % t interval (``_low``, ``_high``).
    """
    import numpy as np

    from descentlab.intervals import mean_interval

    by_run: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    order: list[str] = []
    for row in curves:
        name = str(row["optimizer"])
        if name not in order:
            order.append(name)
        by_run.setdefault((name, int(row["seed"])), []).append(row)

    def series(rows, key):
        return np.array([float(r[key]) for r in sorted(rows, key=lambda r: int(r["step"]))])

    last_losses = {}
    for name in order:
        runs = [rows for (n, _), rows in by_run.items() if n == name]
        last_losses[name] = float(np.mean([series(r, "train_loss")[-1] for r in runs]))
    if target_loss is None:
        finite = [v for v in last_losses.values() if math.isfinite(v)]
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
        row = {
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
        }
        mine = [f for f in finals or () if f["optimizer"] == name]
        if mine:
            per_seed = {
                "test_loss": [float(f["test_loss"]) for f in mine],
                "test_accuracy": [float(f["test_accuracy"]) for f in mine],
                "test_gap": [float(f["test_loss"]) - float(f["train_loss"]) for f in mine],
                "test_accuracy_gap": [float(f["train_accuracy"]) - float(f["test_accuracy"]) for f in mine],
            }
            for key, values in per_seed.items():
                interval = mean_interval(values)
                row.update({key: interval.estimate, f"{key}_low": interval.low, f"{key}_high": interval.high})
        table.append(row)
    return table, float(target_loss)
