"""The protocol between a training loop and what watches it: events in, requests out.

A loop (:func:`descentlab.experiments.train.train`, your own, Lightning's or Hugging Face's
through :mod:`descentlab.integrations`) calls a :class:`Callback`'s events with one
:class:`LoopState`, the live objects it trains with. A callback never probes the loop and
never changes the loop's objects itself: it *requests* a change through its
:class:`Control` (a new rate schedule, a new optimizer, momentum, noise, a batch size, stop),
and the loop makes it with one call, :meth:`Control.apply`, which updates the shared
:class:`LoopState` so every callback sees what the loop now steps::

    loop = LoopState(model, optimizer, scheduler, batch_size=64, total_steps=1000)
    monitor.on_train_start(loop)
    for step in range(1, 1001):
        ...                                   # forward, backward, optimizer.step(), scheduler.step()
        loop.step = step
        monitor.on_step_end(loop, loss)       # loss as a tensor: read only when the monitor checks
        if monitor.control.pending:
            loop = monitor.control.apply(loop)   # optimizer, scheduler, batch size as requested
        if monitor.control.should_stop:
            break
    monitor.on_train_end(loop)

(the order of Lightning's ``Callback`` and Hugging Face's ``TrainerCallback``/``TrainerControl``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from descentlab.engine.changes import Applied, Change, apply_change
from descentlab.ranks import unwrap

__all__ = ["LoopState", "Callback", "Control", "Request", "StepFunction", "as_callback", "restore_weights"]


@dataclass
class LoopState:
    """The live objects of a training loop, shared by the loop and its callbacks.

    Attributes:
        model: the module being trained.
        optimizer: what steps it (``None``: a callback cannot read the rate).
        scheduler: the learning-rate scheduler the loop steps, or ``None``.
        batch_size: samples per optimizer step (the effective batch under gradient
            accumulation); ``None``: unknown.
        n_train: samples in the training set (``None``: unknown).
        total_steps: optimizer steps the run will take (``None``: unknown).
        step: optimizer steps taken so far.
        status: shows a short text while a callback works (a progress bar's description);
            called with ``None`` when it is done.
        changes_modules: the loop takes changes to the model's modules (a swapped activation, an
            input standardization), which the model's ``state_dict`` does not record; a loop that
            saves its model that way and rebuilds it from its own code leaves this ``False``, and
            such a remedy is then only reported (``train()``, which saves and re-applies every
            change, says ``True``).
        shuffle: a remedy asked the loop to draw each step's batch from the whole data, shuffled
            (its batches were not a sample of the data: a class order, one batch repeated); a loop
            that draws its own batches reads it, no callback can reorder them.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    batch_size: int | None = None
    n_train: int | None = None
    total_steps: int | None = None
    step: int = 0
    status: Callable[[str | None], Any] | None = field(default=None, repr=False)
    changes_modules: bool = False
    shuffle: bool = False

    def show(self, text: str | None) -> None:
        """Pass ``text`` to :attr:`status` (nothing without one)."""
        if self.status is not None:
            self.status(text)


@dataclass(frozen=True)
class Request:
    """A change a callback asks for: ``change`` from ``step`` on, named ``name``; ``seed`` seeds
    any randomness the change adds (gradient noise); ``restore``: weights to put back first, the
    model's trainable parameters in order (a run rolled back to its last good point). ``restore``
    is not plain data and not saved: a resumed run's checkpoint holds the weights it continued with."""

    step: int
    name: str
    change: Change
    seed: int = 0
    restore: tuple[torch.Tensor, ...] | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (a run saves the requests it applied, and re-applies them on resume)."""
        return {"step": self.step, "name": self.name, "change": self.change.to_dict(), "seed": self.seed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Request":
        """The inverse of :meth:`to_dict`."""
        return cls(int(data["step"]), str(data["name"]), Change.from_dict(data["change"]), int(data.get("seed", 0)))


class Control:
    """What one callback asks of the loop. The callback fills it; the loop reads it after the
    callback's events and applies it with :meth:`apply`.

    Attributes:
        pending: the change asked for and not yet applied (``None``: none).
        applied: the requests applied so far, in order, with what became of the loop's scheduler.
        stop_reason: why the callback asks the loop to stop (``None``: it does not).
    """

    def __init__(self) -> None:
        self.pending: Request | None = None
        self.applied: list[tuple[Request, str]] = []
        self.stop_reason: str | None = None

    @property
    def should_stop(self) -> bool:
        """The callback asks the loop to stop."""
        return self.stop_reason is not None

    def request(self, request: Request) -> None:
        """Ask for ``request`` (it replaces one still pending)."""
        self.pending = request

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop after this step."""
        self.stop_reason = str(reason)

    def apply(self, loop: LoopState) -> LoopState:
        """Make the pending change on the loop's objects (:func:`~descentlab.engine.changes.apply_change`;
        the request's ``restore`` weights put back first) and return ``loop``, updated in place:
        from now on step ``loop.optimizer`` and ``loop.scheduler`` on batches of
        ``loop.batch_size``. Nothing pending: ``loop`` as it is."""
        request, self.pending = self.pending, None
        if request is None:
            return loop
        if loop.optimizer is None:
            raise ValueError("the loop has no optimizer to change")
        if request.restore is not None:
            restore_weights(unwrap(loop.model), request.restore)
        done: Applied = apply_change(request.change, loop.optimizer, loop.scheduler, model=loop.model,
                                     seed=request.seed)
        loop.optimizer, loop.scheduler = done.optimizer, done.scheduler
        if done.batch_size is not None:
            loop.batch_size = done.batch_size
        loop.shuffle = loop.shuffle or done.shuffle
        self.applied.append((request, done.text))
        return loop

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the pending and applied requests and the stop reason."""
        return {"pending": None if self.pending is None else self.pending.to_dict(),
                "applied": [[r.to_dict(), text] for r, text in self.applied], "stop_reason": self.stop_reason}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.pending = None if state.get("pending") is None else Request.from_dict(state["pending"])
        self.applied = [(Request.from_dict(r), str(text)) for r, text in state.get("applied", [])]
        self.stop_reason = state.get("stop_reason")


def restore_weights(model: nn.Module, weights: tuple[torch.Tensor, ...]) -> None:
    """Put ``weights`` (the model's trainable parameters, in order) back into ``model``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if [tuple(p.shape) for p in params] != [tuple(w.shape) for w in weights]:
        raise ValueError("restore: the weights to put back do not match the model's trainable parameters")
    with torch.no_grad():
        torch._foreach_copy_(params, [w.to(p.device) for p, w in zip(params, weights)])


class Callback:
    """The base of everything a loop calls back: every event does nothing until overridden.

    Events, in order: :meth:`on_train_start` once (step 0, or the step a resumed run starts
    from), :meth:`on_step_end` after every optimizer step (and scheduler step), with the step's
    loss (a tensor is read only where the callback needs it, so a loop on a GPU is not
    synchronised every step; a non-finite loss is passed like any other), :meth:`on_eval_end`
    after each validation, :meth:`on_train_end` once. :attr:`columns` and :meth:`metrics` are
    what the callback adds to the loop's per-step metrics; :meth:`state_dict` and
    :meth:`load_state_dict` make a resumed run continue as if never stopped.
    """

    #: Metric names the callback adds to a loop's rows.
    columns: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.control = Control()

    def on_train_start(self, loop: LoopState) -> None:
        """Before the first step (or the first step after a resume)."""

    def on_step_end(self, loop: LoopState, loss: torch.Tensor | float | None) -> None:
        """After optimizer step ``loop.step`` (1 for the first); ``loss`` is that step's mini-batch loss."""

    def on_eval_end(self, loop: LoopState, metrics: Mapping[str, float]) -> None:
        """After a validation at ``loop.step`` (``metrics``: e.g. ``val_loss``, ``val_accuracy``)."""

    def on_train_end(self, loop: LoopState) -> None:
        """After the last step (also when the loop stopped early)."""

    def metrics(self, step: int) -> dict[str, float | None]:
        """This callback's :attr:`columns` at ``step`` (empty where it measured nothing)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything the callback's future decisions depend on (plain data and tensors)."""
        return {"control": self.control.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        if "control" in state:
            self.control.load_state_dict(state["control"])


class StepFunction(Callback):
    """A plain function ``fn(step, loss, model)`` as a callback: called at every step's end
    (``loss`` as the loop passes it)."""

    def __init__(self, fn: Callable[[int, Any, nn.Module], Any]) -> None:
        super().__init__()
        self.fn = fn

    def on_step_end(self, loop: LoopState, loss: torch.Tensor | float | None) -> None:
        self.fn(loop.step, loss, loop.model)


def as_callback(callback: Any) -> Callback:
    """``callback`` if it is a :class:`Callback`, a plain function ``fn(step, loss, model)``
    wrapped as one, else ``ValueError``."""
    if isinstance(callback, Callback):
        return callback
    if callable(callback):
        return StepFunction(callback)
    raise ValueError(f"callbacks must be Callback instances or functions fn(step, loss, model), "
                     f"got {type(callback).__name__}")
