"""The batch-size study: how the mini-batch size trades time, noise, sharpness and generalisation.

Per batch size B (``None`` = the full training set, one update per epoch):

- the learning rate, by a stated rule (:data:`LR_RULES`): ``"tuned"`` gives every size the
  same budget of rates on a log grid around the optimizer's default, each candidate trained for
  the same number of *updates* (``tune_updates``: a budget in epochs would give the full batch
  a handful of updates), chosen on validation loss, the grid widened a step at a time while the
  best rate sits at its edge (:mod:`descentlab.experiments.tuning`); ``"linear"`` / ``"sqrt"``
  tune once at the reference size and scale the rate by ``B / B_ref`` (Goyal et al. 2017) or
  ``sqrt(B / B_ref)`` (Krizhevsky 2014; Hoffer et al. 2017);
- the protocol (:data:`PROTOCOLS`):

  - ``"same-loss"`` (Keskar et al. 2017 compare minima this way): every size trains, one
    plain model per seed, until the full training loss falls to ``train_to`` (checked about
    64 times per epoch, at most ``max_updates`` updates); the updates, epochs and seconds
    that cost are measured, and the sharpness and generalisation gap are read *there*, at the
    same training loss for every size;
  - ``"same-epochs"``: every size trains the same number of epochs (so a small batch makes
    many more updates, and a large one may stop undertrained), ``seeds`` runs as one stacked
    ensemble when the optimizer is element-wise; the time per update is measured on one
    plain model over up to :data:`TIMED_UPDATES` updates; time per epoch = time per update x
    updates per epoch; seconds to the target loss = updates to target x time per update;

- per seed, where the run stopped: the sharpness λ_max (the largest eigenvalue of the Hessian of
  the full training loss, ``descentlab.curvature.lanczos``), Keskar et al.'s ε-sharpness beside it
  (:mod:`descentlab.curvature.epsilon_sharpness`), and the loss and accuracy on the training, the
  validation (tuned on) and the held-out test split
  (:func:`~descentlab.problems.workloads.with_test_split`); the generalisation gap is test minus
  training loss. ``seeds.csv`` holds one row per size and seed, with lr/B (Smith & Le 2018's
  noise scale); ``summary.csv`` the means per size with 95 % t intervals.

Each size's tuning and final runs are sweep points (``tune-b<B>``, ``tune-b<B>-w<k>``,
``final-b<B>`` under ``<run>/runs/``), complete or absent, so an interrupted study resumes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from descentlab import files
from descentlab.checks import check_int
from descentlab.experiments.compare import CURVE_COLUMNS, curve_rows, held_out_metrics, steps_to_target
from descentlab.experiments.ensemble import TIMED_UPDATES, time_per_update
from descentlab.experiments.tuning import lr_grid
from descentlab.rundir import RunDir

__all__ = ["BatchSizeSettings", "LR_RULES", "PROTOCOLS", "ToLoss", "scaled_lr", "run_batch_size", "sharpness",
           "size_label", "train_to_loss", "SEED_COLUMNS", "INTERVAL_KEYS"]

LR_RULES = ("tuned", "linear", "sqrt")
PROTOCOLS = ("same-loss", "same-epochs")

#: Full training-loss checks per epoch while training to a loss (``"same-loss"``).
CHECKS_PER_EPOCH = 64


def size_label(size: int | None) -> str:
    """``"full"`` for the full batch, else the number."""
    return "full" if size is None else str(size)


@dataclass(frozen=True)
class BatchSizeSettings:
    """Everything that defines one study (all of it goes into ``config.json``)."""

    workload: str | Mapping[str, Any]  # a built-in name, or {"model": ..., "data": ...}
    sizes: tuple[int | None, ...]
    epochs: float = 5
    optimizer: str = "sgd"
    lr_rule: str = "tuned"
    ref_size: int | None = 32
    budget: int = 6
    seeds: int = 5
    target_loss: float | None = None
    seed: int = 0
    records_per_epoch: int = 4
    protocol: str = "same-loss"
    train_to: float = 0.02
    max_updates: int = 20000
    tune_updates: int = 1000
    epsilon: float = 1e-3

    def __post_init__(self) -> None:
        if not self.sizes:
            raise ValueError("sizes must name at least one batch size")
        if len(set(self.sizes)) != len(self.sizes):
            raise ValueError("sizes must not repeat a batch size")
        for size in self.sizes:
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
                raise ValueError(f"sizes must be positive ints or None (full batch), got {size!r}")
        if not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.lr_rule not in LR_RULES:
            raise ValueError(f"lr_rule must be one of {', '.join(LR_RULES)}, got {self.lr_rule!r}")
        for name, value in (("budget", self.budget), ("seeds", self.seeds),
                            ("records_per_epoch", self.records_per_epoch), ("tune_updates", self.tune_updates)):
            check_int(name, value)
        if self.ref_size is not None and self.ref_size < 1:
            raise ValueError(f"ref_size must be >= 1 or None (full batch), got {self.ref_size}")
        if self.target_loss is not None and not self.target_loss > 0:
            raise ValueError(f"target_loss must be > 0, got {self.target_loss}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if not (math.isfinite(self.train_to) and self.train_to > 0):
            raise ValueError(f"train_to must be a positive number, got {self.train_to}")
        if isinstance(self.max_updates, bool) or not isinstance(self.max_updates, int) or self.max_updates < 1:
            raise ValueError(f"max_updates must be a positive int, got {self.max_updates!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"epsilon must be a positive number, got {self.epsilon}")

    def config(self) -> dict[str, Any]:
        return {"workload": self.workload, "sizes": list(self.sizes), "epochs": self.epochs,
                "optimizer": self.optimizer, "lr_rule": self.lr_rule, "ref_size": self.ref_size,
                "budget": self.budget, "seeds": self.seeds, "target_loss": self.target_loss, "seed": self.seed,
                "records_per_epoch": self.records_per_epoch, "protocol": self.protocol, "train_to": self.train_to,
                "max_updates": self.max_updates, "tune_updates": self.tune_updates, "epsilon": self.epsilon}


def scaled_lr(lr_ref: float, size: int, ref_size: int, rule: str) -> float:
    """``lr_ref`` scaled from ``ref_size`` to ``size``: ``linear`` x B/B_ref, ``sqrt`` x sqrt(B/B_ref)."""
    if rule == "linear":
        return lr_ref * size / ref_size
    if rule == "sqrt":
        return lr_ref * math.sqrt(size / ref_size)
    raise ValueError(f"rule must be 'linear' or 'sqrt', got {rule!r}")


def _effective(size: int | None, n: int) -> int:
    return n if size is None or size >= n else size


def sharpness(model: Any, loss_fn: Callable, X: Any, y: Any, seed: int = 0) -> float:
    """Largest eigenvalue of the Hessian of the mean training loss of ``model`` on ``(X, y)``."""
    from descentlab.curvature import HessianOperator, lanczos

    return float(lanczos(HessianOperator(model, loss_fn, (X, y)), k=1, which="LA", seed=seed).values[0])


#: The columns of ``seeds.csv``: one row per batch size and seed, measured where the run stopped.
SEED_COLUMNS = ("batch_size", "B", "lr", "lr_over_b", "seed", "updates", "epochs", "seconds", "reached",
                "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                "loss_gap", "accuracy_gap", "grad_norm", "sharpness", "epsilon_sharpness")

#: The quantities ``summary.csv`` gives with a 95 % interval over the seeds (``<key>_low``, ``<key>_high``).
INTERVAL_KEYS = ("sharpness", "epsilon_sharpness", "loss_gap", "test_accuracy")


def measure(work: Any, model: Any, epsilon: float) -> dict[str, float]:
    """One trained model (in eval mode) where it stopped: the three splits, the gap between test and
    training, and of the full training loss the gradient norm, λ_max and Keskar's ε-sharpness (whose
    box maximum has a first-order part |∇L|·b: away from a minimum the gradient counts too)."""
    from descentlab.curvature import EmpiricalLoss
    from descentlab.curvature.epsilon_sharpness import epsilon_sharpness

    params = {name: p.detach()[None] for name, p in model.named_parameters()}
    out = held_out_metrics(work, params, 0)
    out["loss_gap"] = out["test_loss"] - out["train_loss"]
    out["accuracy_gap"] = out["train_accuracy"] - out["test_accuracy"]
    if math.isfinite(out["train_loss"]):
        out["sharpness"] = sharpness(model, work.loss_fn, work.X_train, work.y_train)
        quantity = EmpiricalLoss(model, work.loss_fn, (work.X_train, work.y_train), eval_mode=True)
        out["grad_norm"] = float(quantity.loss_and_gradient()[1].norm())
        out["epsilon_sharpness"] = epsilon_sharpness(quantity, epsilon).value
    else:
        out["sharpness"] = out["epsilon_sharpness"] = out["grad_norm"] = math.nan
    return out


def _workload(workload: str | Mapping[str, Any], data_seed: int) -> Any:
    from descentlab.problems.user_workload import workload_from
    from descentlab.problems.workloads import with_test_split

    return with_test_split(workload_from(workload, seed=data_seed), seed=data_seed)


def tune_point(run: RunDir, *, workload: str | Mapping[str, Any], optimizer: str, batch_size: int | None,
               lrs: Sequence[float], seed: int, updates: int, data_seed: int) -> None:
    """Sweep point: every rate of ``lrs`` trained ``updates`` updates at ``batch_size`` from ``seed``
    (one stacked ensemble when the optimizer is element-wise); writes ``trials.csv``."""
    from descentlab.experiments.ensemble import Member, train_members

    work = _workload(workload, data_seed)
    notes: list[str] = []
    members = [Member(int(seed), float(lr)) for lr in lrs]
    result = train_members(work, optimizer, members, steps=updates, batch_size=batch_size, eval_every=updates,
                           log=lambda m: notes.append(f"batch {size_label(batch_size)}: {m}"))
    n = work.n_train
    run.write_csv("trials.csv", [
        {"batch_size": size_label(batch_size), "lr": m.lr, "seed": m.seed, "updates": updates,
         "epochs": updates / math.ceil(n / _effective(batch_size, n)),
         "final_train_loss": float(result.train_loss[k, -1]), "final_val_loss": float(result.val_loss[k, -1]),
         "final_val_accuracy": float(result.val_accuracy[k, -1])} for k, m in enumerate(members)])
    run.write_text("log.txt", "\n".join(notes) + "\n")
    run.write_json("result.json", {"stacked": result.stacked, "reason": result.reason})


def size_point(run: RunDir, *, workload: str | Mapping[str, Any], optimizer: str, batch_size: int | None,
               lr: float, seeds: Sequence[int], epochs: float, records_per_epoch: int, data_seed: int,
               epsilon: float) -> None:
    """Sweep point of the ``"same-epochs"`` protocol: ``seeds`` trained ``epochs`` epochs at ``batch_size``
    (one stacked ensemble when the optimizer is element-wise), timed, then each measured (:func:`measure`)."""
    from descentlab.experiments.ensemble import Member, train_members

    work = _workload(workload, data_seed)
    n = work.n_train
    per_epoch = math.ceil(n / _effective(batch_size, n))
    steps = max(1, round(epochs * per_epoch))
    eval_every = max(1, per_epoch // records_per_epoch)
    members = [Member(int(s), float(lr)) for s in seeds]
    notes: list[str] = []
    result = train_members(work, optimizer, members, steps=steps, batch_size=batch_size,
                           eval_every=eval_every, log=lambda m: notes.append(f"batch {size_label(batch_size)}: {m}"))
    rows = curve_rows(optimizer, result)
    seconds = time_per_update(work, optimizer, float(lr), batch_size, seed=int(seeds[0]),
                              updates=min(TIMED_UPDATES, max(per_epoch, 20)))
    for row in rows:
        row["batch_size"] = size_label(batch_size)
        row["epoch"] = row["step"] / per_epoch
        row["seconds"] = row["step"] * seconds  # one model's time per update, the same for every seed
    runs = []
    for k, member in enumerate(members):
        model = result.load_member(k, work.make_model()).eval()
        runs.append({"seed": member.seed, "updates": steps, "epochs": steps / per_epoch,
                     "seconds": steps * seconds, "reached": None, **measure(work, model, epsilon)})
    # Final weights, row k = member k, so the sharpness can be checked or recomputed later.
    files.save_torch(run.file("final_params.pt"), {name: t.contiguous() for name, t in result.params.items()})
    values = ", ".join(f"{r['sharpness']:.4g}" for r in runs)
    notes.append(f"batch {size_label(batch_size)}: {seconds * 1e3:.3g} ms per update (one model), sharpness {values}")
    run.write_csv("curves.csv", rows, ("batch_size", "epoch") + CURVE_COLUMNS)
    run.write_text("log.txt", "\n".join(notes) + "\n")
    run.write_json("result.json", {"stacked": result.stacked, "reason": result.reason, "steps": steps,
                                   "updates_per_epoch": per_epoch, "seconds_per_update": seconds, "runs": runs,
                                   "sharpness": [r["sharpness"] for r in runs]})


@dataclass(frozen=True)
class ToLoss:
    """One run trained until its full training loss fell to a target.

    Attributes:
        model: the trained model (in training mode), where it stopped.
        updates: updates made; ``epochs``: the same in passes over the data.
        seconds: wall-clock of the updates alone (the loss checks excluded).
        reached: whether the loss reached the target within the update budget.
        curve: ``(update, seconds, train_loss)`` at every check, starting at update 0.
    """

    model: Any
    updates: int
    epochs: float
    seconds: float
    reached: bool
    curve: tuple[tuple[int, float, float], ...]


def train_to_loss(workload: Any, optimizer: str, lr: float, batch_size: int | None, seed: int, target: float,
                  max_updates: int, checks_per_epoch: int = CHECKS_PER_EPOCH) -> ToLoss:
    """Train one model with mini-batches of ``batch_size`` until its full training loss is ``<= target``.

    The model starts from ``torch.manual_seed(seed); workload.make_model()`` and reshuffles
    every epoch with a generator seeded with ``seed`` (the ensemble's conventions, so the
    two protocols start alike). The full training loss is checked every
    ``max(1, updates_per_epoch // checks_per_epoch)`` updates; training stops at the first
    check at or below ``target``, after ``max_updates`` updates, or at a non-finite loss.
    """
    import torch

    from descentlab.engine.callbacks import LoopState
    from descentlab.engine.steps import StepInfo, batch_loss, run_steps
    from descentlab.optim import make_optimizer

    X, y = workload.X_train, workload.y_train
    n = X.shape[0]
    b = _effective(batch_size, n)
    per_epoch = math.ceil(n / b)
    every = max(1, per_epoch // checks_per_epoch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = workload.make_model()
    opt = make_optimizer(optimizer, model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(int(seed))

    def full_loss() -> float:  # in eval mode: a check must not move batch-norm statistics or draw dropout
        model.eval()
        try:
            with torch.no_grad():
                return float(workload.loss_fn(model(X), y))
        finally:
            model.train()

    def batches():
        while True:
            order = torch.randperm(n, generator=generator) if b < n else None
            for position in range(per_epoch):
                if order is None:
                    yield X, y
                else:
                    index = order[position * b:(position + 1) * b]
                    yield X.index_select(0, index), y.index_select(0, index)

    loss = full_loss()
    curve = [(0, 0.0, loss)]
    seconds = 0.0

    def check(loop: LoopState, info: StepInfo) -> bool:
        """Every ``every`` updates: the full training loss; stop at the target or a non-finite loss."""
        nonlocal loss, seconds
        seconds += info.seconds
        if info.step % every == 0 or info.step == max_updates:
            loss = full_loss()
            curve.append((info.step, seconds, loss))
        return loss <= target or not math.isfinite(loss)

    updates = 0
    if loss > target and math.isfinite(loss):
        updates = run_steps(LoopState(model, opt), batch_loss(model, workload.loss_fn), batches(),
                            steps=max_updates, after_step=check).steps
    return ToLoss(model=model, updates=updates, epochs=updates / per_epoch, seconds=seconds,
                  reached=loss <= target, curve=tuple(curve))


def size_point_to_loss(run: RunDir, *, workload: str | Mapping[str, Any], optimizer: str,
                       batch_size: int | None, lr: float,
                       seeds: Sequence[int], target: float, max_updates: int, data_seed: int,
                       epsilon: float) -> None:
    """Sweep point of the ``"same-loss"`` protocol: each seed trained to ``target``, then measured there."""
    import torch

    work = _workload(workload, data_seed)
    n = work.n_train
    per_epoch = math.ceil(n / _effective(batch_size, n))
    label = size_label(batch_size)
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    params: dict[str, list[Any]] = {}
    notes = []
    for seed in seeds:
        result = train_to_loss(work, optimizer, lr, batch_size, int(seed), target, max_updates)
        model = result.model.eval()  # measured as the checks were: batch-norm statistics, no dropout
        for update, seconds, loss in result.curve:
            rows.append({"batch_size": label, "seed": int(seed), "lr": lr, "step": update,
                         "epoch": update / per_epoch, "seconds": seconds, "train_loss": loss})
        measured: dict[str, Any] = {"seed": int(seed), "updates": result.updates, "epochs": result.epochs,
                                    "seconds": result.seconds, "reached": result.reached,
                                    **measure(work, model, epsilon)}
        runs.append(measured)
        for name, p in model.named_parameters():
            params.setdefault(name, []).append(p.detach().clone())
        notes.append(f"batch {label}: seed {seed} {'reached' if result.reached else 'did NOT reach'} training "
                     f"loss {target:g} after {result.updates} updates ({result.epochs:.3g} epochs, "
                     f"{result.seconds:.3g} s); sharpness {measured['sharpness']:.4g}, "
                     f"epsilon-sharpness {measured['epsilon_sharpness']:.3g} %")
    files.save_torch(run.file("final_params.pt"), {name: torch.stack(v) for name, v in params.items()})
    run.write_csv("curves.csv", rows, ("batch_size", "seed", "lr", "step", "epoch", "seconds", "train_loss"))
    run.write_text("log.txt", "\n".join(notes) + "\n")
    run.write_json("result.json", {"updates_per_epoch": per_epoch, "runs": runs, "stacked": False,
                                   "sharpness": [r["sharpness"] for r in runs]})


def run_batch_size(settings: BatchSizeSettings, out: str | os.PathLike, *, workers: int | None = None,
                   ray_address: str | None = None, progress: bool = False,
                   log: Callable[[str], None] | None = None) -> RunDir:
    """Run (or resume) the study into ``out`` and write its tables; returns the run.

    Writes ``trials.csv``, ``curves.csv``, ``seeds.csv`` (one row per size and seed),
    ``summary.csv`` (one row per size: means, and 95 % intervals of :data:`INTERVAL_KEYS`),
    ``log.txt`` and ``protocol.json``. The caller renders ``report.html``.
    """
    from descentlab.experiments.sweep import SweepPoint, import_ray, open_sweep_root, run_sweep
    from descentlab.experiments.tuning import tune_in_sweeps
    from descentlab.optim.registry import OPTIMIZERS, parse_name

    say = log or (lambda message: None)
    _, base = parse_name(settings.optimizer)
    grid = lr_grid(OPTIMIZERS[base].lr, settings.budget)
    if ray_address:
        import_ray()  # fail before anything is written
    run = open_sweep_root(out, "batch-size", settings.config())
    root = run.file("runs")
    sweep = dict(workers=workers, ray_address=ray_address, progress=progress)
    tune_sizes = list(settings.sizes) if settings.lr_rule == "tuned" else [settings.ref_size]

    def tune(label: str, rates: list[float], suffix: str) -> SweepPoint:
        size = None if label == "full" else int(label)
        return SweepPoint(f"tune-b{label}{suffix}", "batch-size-point", tune_point,
                          dict(workload=settings.workload, optimizer=settings.optimizer, batch_size=size, lrs=rates,
                               seed=settings.seed, updates=settings.tune_updates, data_seed=settings.seed))

    say(f"tuning: {len(tune_sizes)} batch sizes x {len(grid)} learning rates, {settings.tune_updates} updates each "
        f"({settings.lr_rule} rule)")
    tuned, tune_runs = tune_in_sweeps({size_label(s): grid for s in tune_sizes}, tune, root, say=say, **sweep)
    trials: list[dict[str, Any]] = []
    chosen: dict[str, float] = {}
    for label, outcome in tuned.items():
        if outcome.edge == "all diverged":
            raise ValueError(f"every tuning run at batch {label} diverged, down to lr "
                             f"{min(float(t['lr']) for t in outcome.trials):.3g}")
        chosen[label] = outcome.chosen
        trials.extend({**t, "chosen": float(t["lr"]) == outcome.chosen} for t in outcome.trials)
    n = _n_train(settings)
    if settings.lr_rule != "tuned":
        lr_ref = chosen[size_label(settings.ref_size)]
        ref = _effective(settings.ref_size, n)
        chosen = {size_label(s): scaled_lr(lr_ref, _effective(s, n), ref, settings.lr_rule) for s in settings.sizes}
    seeds = list(range(settings.seed, settings.seed + settings.seeds))
    if settings.protocol == "same-loss":
        final = [SweepPoint(f"final-b{size_label(s)}", "batch-size-point", size_point_to_loss,
                            dict(workload=settings.workload, optimizer=settings.optimizer, batch_size=s,
                                 lr=chosen[size_label(s)], seeds=seeds, target=settings.train_to,
                                 max_updates=settings.max_updates, data_seed=settings.seed, epsilon=settings.epsilon))
                 for s in settings.sizes]
        say(f"final: {len(final)} batch sizes x {len(seeds)} seeds, each trained to training loss "
            f"{settings.train_to:g}")
    else:
        final = [SweepPoint(f"final-b{size_label(s)}", "batch-size-point", size_point,
                            dict(workload=settings.workload, optimizer=settings.optimizer, batch_size=s,
                                 lr=chosen[size_label(s)], seeds=seeds, epochs=settings.epochs,
                                 records_per_epoch=settings.records_per_epoch, data_seed=settings.seed,
                                 epsilon=settings.epsilon))
                 for s in settings.sizes]
        say(f"final: {len(final)} batch sizes x {len(seeds)} seeds")
    finished = run_sweep(final, root, log=say, **sweep)

    curves: list[dict[str, Any]] = []
    notes: list[str] = []
    infos = []
    for point in list(tune_runs) + list(finished.runs):
        notes.extend(n for n in point.file("log.txt").read_text(encoding="utf-8").split("\n") if n)
    for point in finished.runs:
        curves.extend(point.read_csv("curves.csv"))
        infos.append(point.read_json("result.json"))
    per_seed = _seed_rows(settings, chosen, infos, n)
    if settings.protocol == "same-loss":
        target = settings.train_to
        columns: tuple[str, ...] = ("batch_size", "seed", "lr", "step", "epoch", "seconds", "train_loss")
    else:
        target = _same_epochs_target(settings, curves, per_seed)
        columns = ("batch_size", "epoch") + CURVE_COLUMNS
    summary = _summary(settings, chosen, infos, per_seed, curves, target, n)
    run.write_csv("trials.csv", trials)
    run.write_csv("curves.csv", curves, columns)
    run.write_csv("seeds.csv", per_seed, SEED_COLUMNS)
    run.write_csv("summary.csv", summary)
    run.write_text("log.txt", "\n".join(notes) + "\n")
    run.write_json("protocol.json", {"protocol": settings.protocol, "grid": grid, "chosen_lr": chosen,
                                     "tuned_sizes": [size_label(s) for s in tune_sizes],
                                     "tune_updates": settings.tune_updates,
                                     "edges": {label: outcome.edge for label, outcome in tuned.items()},
                                     "widenings": {label: outcome.widenings for label, outcome in tuned.items()},
                                     "seeds": seeds, "target_loss": target, "timed_updates": TIMED_UPDATES,
                                     "n_train": n, "n_val": _split_sizes(settings)[0],
                                     "n_test": _split_sizes(settings)[1], "epsilon": settings.epsilon})
    return run


def _seed_rows(settings: BatchSizeSettings, chosen: dict[str, float], infos: Sequence[dict[str, Any]],
               n: int) -> list[dict[str, Any]]:
    """``seeds.csv``: every size's runs, with its effective batch size B and lr/B."""
    rows = []
    for s, info in zip(settings.sizes, infos):
        label, b = size_label(s), _effective(s, n)
        for r in info["runs"]:
            rows.append({"batch_size": label, "B": b, "lr": chosen[label], "lr_over_b": chosen[label] / b,
                         **{k: r.get(k) for k in SEED_COLUMNS if k in r}})
    return rows


def _same_epochs_target(settings: BatchSizeSettings, curves: Sequence[dict[str, Any]],
                        per_seed: Sequence[dict[str, Any]]) -> float:
    """The same-epochs target loss: ``target_loss``, or the median of the sizes' mean final losses."""
    import numpy as np

    if settings.target_loss is not None:
        return settings.target_loss
    finals = [np.mean([float(r["train_loss"]) for r in per_seed if r["batch_size"] == size_label(s)])
              for s in settings.sizes]
    finite = [v for v in finals if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


def _summary(settings: BatchSizeSettings, chosen: dict[str, float], infos: Sequence[dict[str, Any]],
             per_seed: Sequence[dict[str, Any]], curves: Sequence[dict[str, Any]], target: float,
             n: int) -> list[dict[str, Any]]:
    """One row per size: what it cost, and the means over seeds where the runs stopped, with the
    95 % t intervals of :data:`INTERVAL_KEYS`."""
    import numpy as np

    from descentlab.intervals import mean_interval

    summary = []
    for s, info in zip(settings.sizes, infos):
        label = size_label(s)
        runs = [r for r in per_seed if r["batch_size"] == label]

        def mean(key: str) -> float:
            return float(np.mean([float(r[key]) for r in runs]))

        row: dict[str, Any] = {"batch_size": label, "B": _effective(s, n), "lr": chosen[label],
                               "lr_over_b": chosen[label] / _effective(s, n),
                               "updates_per_epoch": info["updates_per_epoch"]}
        if settings.protocol == "same-loss":
            updates, seconds = mean("updates"), mean("seconds")
            row.update(updates_to_target=updates, epochs_to_target=mean("epochs"), seconds_to_target=seconds,
                       seconds_per_update=seconds / updates if updates else math.nan,
                       reached=f"{sum(bool(r['reached']) for r in runs)}/{len(runs)}")
        else:
            per_update = float(info["seconds_per_update"])
            hits = []
            for seed in sorted({int(r["seed"]) for r in curves if r["batch_size"] == label}):
                mine = sorted((r for r in curves if r["batch_size"] == label and int(r["seed"]) == seed),
                              key=lambda r: int(r["step"]))
                hit = steps_to_target([float(r["step"]) for r in mine], [float(r["train_loss"]) for r in mine], target)
                if math.isfinite(hit):
                    hits.append(hit)
            updates = float(np.mean(hits)) if hits else math.nan
            row.update(seconds_per_update=per_update, seconds_per_epoch=per_update * info["updates_per_epoch"],
                       updates_to_target=updates, seconds_to_target=updates * per_update,
                       reached=f"{len(hits)}/{len(runs)}")
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                    "loss_gap", "accuracy_gap", "grad_norm", "sharpness", "epsilon_sharpness"):
            row[key] = mean(key)
        for key in INTERVAL_KEYS:
            interval = mean_interval([float(r[key]) for r in runs])
            row[f"{key}_low"], row[f"{key}_high"] = interval.low, interval.high
        row["sharpness_std"] = float(np.std([float(r["sharpness"]) for r in runs]))
        row["stacked"] = bool(info["stacked"])
        summary.append(row)
    return summary


def _n_train(settings: BatchSizeSettings) -> int:
    from descentlab.problems.user_workload import workload_from

    return workload_from(settings.workload, seed=settings.seed).n_train


def _split_sizes(settings: BatchSizeSettings) -> tuple[int, int]:
    work = _workload(settings.workload, settings.seed)
    return work.n_val, work.n_test
