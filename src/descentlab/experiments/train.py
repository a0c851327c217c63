"""The training loop: plain, readable, resumable bit-for-bit, writing one run directory.

One step is the textbook one: take the next mini-batch (a fresh permutation every epoch when
shuffling), ``zero_grad``, forward, loss, backward, measure the gradient norm, ``step`` the
optimizer (from :func:`descentlab.optim.make_optimizer`) and the schedule, then the callbacks'
events (:class:`~descentlab.engine.Callback`: a :class:`~descentlab.critical.StallMonitor` is
one). They share one :class:`~descentlab.engine.LoopState` (the model, optimizer, scheduler,
batch size, training-set size, run length and a status line on the progress bar); a request a
callback makes through its :class:`~descentlab.engine.Control` (a remedy's new rate schedule,
optimizer or batch size) is applied after the step, and a request to stop ends the run
(``status == "stopped"``). A non-finite loss is passed to the callbacks too (a monitor says why
the run diverged) before the run stops.

The run directory gets ``config.json`` (``"train"``: the :class:`TrainConfig`), ``metrics.csv``
(one row per step: ``step, epoch, train_loss, grad_norm, lr, val_loss, val_accuracy,
wall_time``; validation columns every ``eval_every`` steps, empty otherwise) and
``checkpoint.pt`` (model, optimizer, schedule, the shuffling generator, torch's RNG, the
callbacks' state, the step), each written atomically. ``resume=True`` reloads the checkpoint
and continues from its step: the resumed run computes the same numbers as one never stopped. A
non-finite loss stops the run at that step (``status == "non_finite"``) and leaves the last
good checkpoint in place, unless a callback puts back earlier weights (a
:class:`~descentlab.critical.StallMonitor` with ``apply_remedy`` rolls a diverged run back to
its last good point at a lower rate): the run then goes on from there, the step not taken.
The requests a run applied are saved with it and applied again on resume, so the resumed run
steps the same optimizer and schedule.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from descentlab.engine.callbacks import Callback, LoopState, Request, as_callback
from descentlab.engine.changes import apply_change
from descentlab.engine.steps import StepInfo, batch_loss, run_steps
from descentlab.errors import UserInputError
from descentlab.rundir import GrowingCsv, RunDir

__all__ = ["TrainConfig", "TrainResult", "train", "prepare", "METRICS", "CHECKPOINT", "COLUMNS", "load_checkpoint_model"]

METRICS = "metrics.csv"
CHECKPOINT = "checkpoint.pt"
COLUMNS = ("step", "epoch", "train_loss", "grad_norm", "lr", "val_loss", "val_accuracy", "wall_time")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimizer, learning rate, schedule, batches, length, seed.

    Attributes:
        optimizer: a registry name (``"sgd"``, ``"adam"``, ``"lookahead:adam"``, ...).
        lr: learning rate; ``None`` takes the registry's default for that optimizer.
        schedule: a schedule spec for :func:`descentlab.schedules.make_scheduler`, or ``None``.
        batch_size: samples per step; ``None`` (or more than the data) is full batch.
        shuffle: draw a fresh permutation every epoch (else the data order, every epoch).
        steps: optimizer steps to take; or give ``epochs`` instead (exactly one of the two).
        epochs: passes over the training data.
        seed: seeds the model's initial weights, the shuffling and torch's RNG.
        eval_every: validation loss/accuracy every this many steps (and at the last step).
        checkpoint_every: write ``checkpoint.pt`` every this many steps (and at the last step).
        optimizer_options: other hyperparameters passed to the optimizer (``momentum``, ...).
    """

    optimizer: str = "sgd"
    lr: float | None = None
    schedule: str | None = None
    batch_size: int | None = 64
    shuffle: bool = True
    steps: int | None = None
    epochs: int | None = None
    seed: int = 0
    eval_every: int = 25
    checkpoint_every: int = 100
    optimizer_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise UserInputError(f"lr must be a positive number, got {self.lr!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise UserInputError(f"batch_size must be a positive integer (or None for full batch), got {self.batch_size!r}")
        if (self.steps is None) == (self.epochs is None):
            raise UserInputError("give exactly one of steps and epochs")
        for name in ("steps", "epochs", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserInputError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UserInputError(f"seed must be a non-negative integer, got {self.seed!r}")

    def batches_per_epoch(self, n_train: int) -> int:
        size = n_train if self.batch_size is None else min(self.batch_size, n_train)
        return math.ceil(n_train / size)

    def total_steps(self, n_train: int) -> int:
        """Steps this config takes on ``n_train`` samples."""
        return self.steps if self.steps is not None else self.epochs * self.batches_per_epoch(n_train)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "optimizer_options": dict(self.optimizer_options)}


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) run reports.

    ``status`` is ``"completed"``, ``"non_finite"`` (the loss became NaN/inf at ``step``; the
    parameters are those of the last good step) or ``"stopped"`` (a callback asked). ``model`` is the trained module.
    """

    path: Path
    status: str
    step: int
    total_steps: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    model: nn.Module = field(repr=False)

    @property
    def message(self) -> str:
        if self.status == "stopped":
            return f"stopped at step {self.step} of {self.total_steps}, as a callback asked; the checkpoint is there"
        if self.status == "non_finite":
            return (f"the loss became non-finite at step {self.step}; stopped there, the last good "
                    f"checkpoint is {self.path / CHECKPOINT}")
        return f"trained {self.step} steps: train loss {self.train_loss:.4g}" + (
            f", validation loss {self.val_loss:.4g}" if self.val_loss is not None else "")


@dataclass
class _Prepared:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    total_steps: int


def prepare(workload: Any, config: TrainConfig) -> _Prepared:
    """Seed, build the model, the optimizer and the schedule; raise on bad input before any file exists."""
    from descentlab.optim import OPTIMIZERS, make_optimizer, parse_name

    _, base = parse_name(config.optimizer)  # unknown names raise UserInputError
    torch.manual_seed(config.seed)
    model = workload.make_model()
    if not isinstance(model, nn.Module):
        raise UserInputError(f"the model factory returned {type(model).__name__}, not a torch.nn.Module")
    lr = config.lr if config.lr is not None else OPTIMIZERS[base].lr
    try:
        optimizer = make_optimizer(config.optimizer, model.parameters(), lr=lr, **dict(config.optimizer_options))
    except TypeError as error:  # an option the optimizer does not take
        raise UserInputError(f"optimizer {config.optimizer!r}: {error}") from None
    scheduler = None
    if config.schedule:
        try:
            from descentlab.schedules import make_scheduler
        except ImportError:
            raise UserInputError("learning-rate schedules are not available in this build") from None
        scheduler = make_scheduler(optimizer, config.schedule)
    return _Prepared(model, optimizer, scheduler, config.total_steps(len(workload.X_train)))


def _grad_norm(model: nn.Module) -> float:
    """The norm of every gradient together: the norm of the per-tensor norms (no joined copy)."""
    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor, task: str) -> tuple[float, float | None]:
    """(mean loss, accuracy or ``None`` for regression) of ``model`` on ``(X, y)``, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        out = model(X)
        loss = float(loss_fn(out, y))
        accuracy = float((out.argmax(dim=1) == y).double().mean()) if task == "classification" else None
    finally:
        model.train(was_training)
    return loss, accuracy


def _state(obj: Any) -> Any:
    return obj.state_dict() if obj is not None and hasattr(obj, "state_dict") else None


def train(
    workload: Any,
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    kind: str = "train",
    extra_config: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callback | Callable[[int, Any, nn.Module], Any]] = (),
    resume: bool = False,
    progress: bool = True,
    writer: Any = None,
) -> TrainResult:
    """Train ``workload`` (anything with ``make_model``, ``loss_fn``, ``X_train``... and ``task``,
    e.g. a :class:`~descentlab.problems.workloads.Workload`) under ``config`` into run directory ``out``.

    ``callbacks`` are :class:`~descentlab.engine.Callback` objects (a plain function
    ``fn(step, loss, model)`` is called at every step's end): their events get the run's
    :class:`~descentlab.engine.LoopState`, their ``metrics`` join ``metrics.csv``, their
    requests (:class:`~descentlab.engine.Control`) are applied after each step and recorded, so
    a resumed run re-applies them, and their state is checkpointed with the run. With
    ``resume=True``, ``out`` must be a run directory this function wrote with the same config;
    training continues from its checkpoint. Every argument is checked before the directory is
    created. ``writer`` (a ``torch.utils.tensorboard.SummaryWriter``) also gets every row of
    ``metrics.csv`` as scalars (``train/loss``, ``train/grad_norm``, ``train/lr``, ``val/loss``,
    ``val/accuracy``, and a tracked sharpness as ``curvature/...``).
    """
    callbacks = [as_callback(c) for c in callbacks]
    prepared = prepare(workload, config)
    model, optimizer, scheduler, total = prepared.model, prepared.optimizer, prepared.scheduler, prepared.total_steps
    X, y = workload.X_train, workload.y_train
    n = len(X)
    batch = n if config.batch_size is None else min(config.batch_size, n)
    per_epoch = config.batches_per_epoch(n)
    shuffler = torch.Generator().manual_seed(config.seed)

    record = {"train": config.to_json(), "total_steps": total, **(extra_config or {})}
    step, elapsed, rows, order = 0, 0.0, [], None
    columns = COLUMNS + tuple(c for callback in callbacks for c in callback.columns)
    changes: list[dict[str, Any]] = []  # the requests the run applied, in order (re-applied on resume)
    epoch_start, epochs_before = 0, 0  # where the current batch size's epochs began
    if resume:
        run = RunDir.open(out)
        saved = run.config
        if saved.get("kind") != kind or saved.get("train") != record["train"]:
            raise UserInputError(f"{out} was written with a different configuration; cannot resume it")
        if not run.exists(CHECKPOINT):
            raise UserInputError(f"{out} has no {CHECKPOINT} to resume from")
        from descentlab import files

        ckpt = files.load_torch(run.file(CHECKPOINT))
        for change in ckpt.get("changes", []):  # the model, optimizer, rate and batch the run had switched to
            request = Request.from_dict(change)
            done = apply_change(request.change, optimizer, scheduler, model=model, seed=request.seed)
            optimizer, scheduler, batch = done.optimizer, done.scheduler, done.batch_size or batch
            changes.append(change)
        model.load_state_dict(ckpt["model"])  # after the changes: a re-initialised layer's weights are the saved ones
        epoch_start, epochs_before = ckpt.get("epoch_start", 0), ckpt.get("epochs_before", 0)
        per_epoch = math.ceil(n / batch)
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        shuffler.set_state(ckpt["shuffler"])
        torch.set_rng_state(ckpt["torch_rng"])
        order = ckpt["order"]
        step, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
        for callback, state in zip(callbacks, ckpt.get("callbacks", [])):
            if state is not None:
                callback.load_state_dict(state)
        rows = [_parse_row(r) for r in run.read_csv(METRICS) if int(r["step"]) <= step] if run.exists(METRICS) else []
    else:
        run = RunDir.create(out, kind, record)

    metrics = GrowingCsv(run, METRICS, columns)
    loop = LoopState(model, optimizer, scheduler, batch_size=batch, n_train=n, total_steps=total, step=step,
                     changes_modules=True)

    def checkpoint() -> None:
        from descentlab import files

        # metrics first: if the disk fills between the two writes, the checkpoint stays the
        # previous one and a resume drops the metrics rows past it (never a gap of missing rows)
        metrics.write(rows)
        files.save_torch(run.file(CHECKPOINT), {
            "model": model.state_dict(), "optimizer": loop.optimizer.state_dict(), "scheduler": _state(loop.scheduler),
            "shuffler": shuffler.get_state(), "torch_rng": torch.get_rng_state(), "order": order,
            "step": step, "elapsed": elapsed, "callbacks": [c.state_dict() for c in callbacks],
            "changes": changes, "epoch_start": epoch_start, "epochs_before": epochs_before,
        })

    if step == 0:
        checkpoint()  # the first good state, so a run that diverges at once still has one

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, desc=kind, unit="step", file=sys.stderr, disable=not progress, leave=False)
    loop.status = lambda text: bar.set_description_str(text or kind)
    for callback in callbacks:
        callback.on_train_start(loop)
    run_status = "completed"
    started = time.perf_counter() - elapsed

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The next mini-batch, a fresh permutation every epoch (drawn when the step needs it, so
        a batch size a callback changed applies from the next step on)."""
        nonlocal order
        while True:
            position = (loop.step - epoch_start) % per_epoch
            if position == 0:
                order = torch.randperm(n, generator=shuffler) if config.shuffle else torch.arange(n)
            index = order[position * batch:(position + 1) * batch]
            yield X[index], y[index]

    def after_step(loop: LoopState, info: StepInfo) -> bool:
        """The step's row and the callbacks' events and requests; a checkpoint when due."""
        nonlocal step, elapsed, batch, per_epoch, epoch_start, epochs_before
        step = loop.step
        last_loss = float(info.loss)
        row = {"step": step, "epoch": epochs_before + (step - 1 - epoch_start) // per_epoch, "train_loss": last_loss,
               "grad_norm": info.after_backward, "lr": info.lr, "val_loss": None, "val_accuracy": None,
               "wall_time": None}
        for callback in callbacks:
            callback.on_step_end(loop, info.loss)
            row.update(callback.metrics(step))
        if step % config.eval_every == 0 or step == total:
            row["val_loss"], row["val_accuracy"] = evaluate(model, workload.loss_fn, workload.X_val, workload.y_val,
                                                            workload.task)
            for callback in callbacks:
                callback.on_eval_end(loop, {"val_loss": row["val_loss"], "val_accuracy": row["val_accuracy"]})
        for callback in callbacks:
            request = callback.control.pending
            if request is None:
                continue
            callback.control.apply(loop)  # the requested optimizer, rate schedule, batch size
            changes.append(request.to_dict())
            if loop.batch_size != batch:
                epochs_before = row["epoch"] + 1
                batch, per_epoch, epoch_start = loop.batch_size, math.ceil(n / loop.batch_size), step
        elapsed = time.perf_counter() - started
        row["wall_time"] = round(elapsed, 4)
        rows.append(row)
        if writer is not None:
            _write_scalars(writer, row)
        bar.update(1)
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{last_loss:.4g}")
        stop = any(c.control.should_stop for c in callbacks)
        if stop or step % config.checkpoint_every == 0 or step == total:
            checkpoint()
        return stop

    def rolled_back() -> bool:
        """After a non-finite loss: a callback asked to put back earlier weights (and none to
        stop), so the run goes on from there; the requests are applied and checkpointed."""
        pending = [c for c in callbacks if c.control.pending is not None]
        if any(c.control.should_stop for c in callbacks) or not any(c.control.pending.restore is not None
                                                                     for c in pending):
            return False
        for callback in pending:
            changes.append(callback.control.pending.to_dict())
            callback.control.apply(loop)
        checkpoint()
        return True

    model.train()
    try:
        while True:
            outcome = run_steps(loop, batch_loss(model, workload.loss_fn), batches(), steps=total - loop.step,
                                after_backward=lambda loop, value: _grad_norm(model), after_step=after_step,
                                stop_on_non_finite=True)
            run_status = outcome.status
            if outcome.status != "non_finite":
                break
            step = loop.step = outcome.non_finite_step  # the step was not taken; the callbacks hear of its loss
            for callback in callbacks:
                callback.on_step_end(loop, float(outcome.loss.sum()))  # read already: a callback acts at once
            if not rolled_back():
                break
    finally:
        bar.close()
    for callback in callbacks:
        callback.on_train_end(loop)
    if run_status == "non_finite":
        metrics.write(rows)  # the rows up to the bad step; the checkpoint stays the last good one
    final = rows[-1] if rows else {}
    val_loss = next((r["val_loss"] for r in reversed(rows) if r["val_loss"] is not None), None)
    val_acc = next((r["val_accuracy"] for r in reversed(rows) if r["val_accuracy"] is not None), None)
    run.write_json("status.json", {"status": run_status, "step": step, "total_steps": total})
    return TrainResult(run.path, run_status, step, total, float(final.get("train_loss", math.nan)), val_loss, val_acc,
                       time.perf_counter() - started, model)


_SCALARS = {"train_loss": "train/loss", "grad_norm": "train/grad_norm", "lr": "train/lr", "val_loss": "val/loss",
            "val_accuracy": "val/accuracy", "sharpness": "curvature/sharpness",
            "stability_threshold": "curvature/stability_threshold", "lambda_min": "curvature/lambda_min"}


def _write_scalars(writer: Any, row: Mapping[str, Any]) -> None:
    for column, tag in _SCALARS.items():
        if row.get(column) is not None:
            writer.add_scalar(tag, row[column], row["step"])


def _parse_row(row: Mapping[str, str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, value in row.items():
        if value in ("", None):
            parsed[key] = None
        elif key in ("step", "epoch"):
            parsed[key] = int(value)
        else:
            parsed[key] = float(value)
    return parsed


def load_checkpoint_model(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the weights of a run's ``checkpoint.pt`` (or a run directory) into ``model`` (weights only)."""
    from descentlab import files

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    return files.load_state_dict(model, files.load_torch(path), path)
