"""The one plain training loop: zero the gradients, loss, backward, optimizer step, scheduler step.

Every loop of the project that trains (``train()``, the studies, ensembles, remedy trials) runs
its steps through :func:`run_steps`, and what makes the loops differ is said in *hooks* rather
than in another copy of the loop:

- ``batches``: an iterable drawn one item per step, lazily, just before the step, so a
  generator may read the loop's current batch size (a callback may have changed it);
- ``loss``: ``loss(batch) -> scalar tensor``, the objective of one step (:func:`batch_loss`
  for a model and a ``loss_fn(output, target)``; a stacked ensemble's summed losses);
- ``after_backward(loop, loss)``: while the gradients are there (a gradient norm); what it
  returns is handed on in :attr:`StepInfo.after_backward`;
- ``after_step(loop, info)``: after the optimizer and scheduler stepped and the callbacks
  ran (record, evaluate, checkpoint); returning ``True`` stops the loop;
- ``callbacks``: :class:`~descentlab.engine.callbacks.Callback` s, called with the loop's
  :class:`~descentlab.engine.callbacks.LoopState`; their requests are applied with
  :meth:`Control.apply <descentlab.engine.callbacks.Control.apply>`, so the next step uses
  the new optimizer and scheduler;
- ``stop_on_non_finite``: a non-finite loss ends the loop before its backward pass.

The loop reads ``loop.optimizer`` and ``loop.scheduler`` afresh at every step. Each step's
seconds cover drawing its batch up to the scheduler's step (``after_backward`` runs inside
it); ``after_step`` and the callbacks are not counted, so a study's clock is its training alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from descentlab.curvature.losses import apply_loss
from descentlab.engine.callbacks import Callback, LoopState
from descentlab.engine.timing import synchronize as wait

__all__ = ["StepInfo", "Outcome", "Joint", "run_steps", "train_step", "batch_loss"]


@dataclass(frozen=True)
class StepInfo:
    """What one step did, as :func:`run_steps` hands it to ``after_step``.

    Attributes:
        step: steps taken, this one included (``loop.step``).
        loss: the step's loss (detached; reading it as a number waits for the device).
        lr: the rate of the optimizer's first param group *before* it stepped (the rate this
            step used), ``None`` for an optimizer without param groups.
        seconds: wall time of this step, from drawing its batch to the scheduler's step.
        after_backward: what ``after_backward`` returned (``None`` without one).
    """

    step: int
    loss: torch.Tensor
    lr: float | None
    seconds: float
    after_backward: Any = None


@dataclass(frozen=True)
class Outcome:
    """How :func:`run_steps` ended.

    Attributes:
        status: ``"completed"`` (every step asked for taken, or the batches ran out),
            ``"stopped"`` (``after_step`` or a callback asked), ``"non_finite"`` (a non-finite
            loss with ``stop_on_non_finite``).
        steps: steps taken in all (``loop.step`` at the end).
        seconds: the steps' own wall time together (``after_step`` and callbacks excluded).
        non_finite_step: the number of the step whose loss was non-finite (``steps + 1``: it
            was not taken), else ``None``.
        stop_reason: the first callback's stop reason (``"after_step"`` where that hook stopped).
        loss: the last loss computed (the non-finite one), or ``None`` if no step ran.
    """

    status: str
    steps: int
    seconds: float
    non_finite_step: int | None = None
    stop_reason: str | None = None
    loss: torch.Tensor | None = None


class Joint:
    """Several optimizers stepped as one, each followed by its own scheduler: the members of a
    stacked forward that each keep their own optimizer (remedy trials) share one
    :func:`run_steps` step (one backward pass gives every member its own gradients).

    Args:
        pairs: ``(optimizer, scheduler or None)`` per member.
    """

    def __init__(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        self.pairs = list(pairs)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Every member's param groups, in member order."""
        return [group for optimizer, _ in self.pairs for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero every member's gradients."""
        for optimizer, _ in self.pairs:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        """Step every member's optimizer, then its scheduler."""
        for optimizer, scheduler in self.pairs:
            optimizer.step()
            if scheduler is not None:
                scheduler.step()


def batch_loss(model: Callable, loss_fn: Callable[[Any, Any], torch.Tensor]) -> Callable[[Any], torch.Tensor]:
    """The objective of a plain step on ``(inputs, target)`` batches: ``loss_fn(model(inputs), target)``
    (``loss_fn(model, inputs)`` for a :class:`~descentlab.curvature.ModelLoss`, the target ``None``)."""

    def loss(batch: Any) -> torch.Tensor:
        inputs, target = batch
        return apply_loss(loss_fn, model, inputs, target)

    return loss


def train_step(model: Callable, optimizer: Any, loss_fn: Callable[[Any, Any], torch.Tensor],
               batch: tuple[Any, Any]) -> torch.Tensor:
    """One plain training step on ``batch = (inputs, target)`` (zero the gradients, forward,
    loss, backward, optimizer step) and its loss: :func:`run_steps`' step without hooks or a
    scheduler, for timing (:func:`descentlab.engine.timing.seconds_per_step`)."""
    optimizer.zero_grad(set_to_none=True)
    loss = apply_loss(loss_fn, model, batch[0], batch[1])
    loss.backward()
    optimizer.step()
    return loss


def run_steps(
    loop: LoopState,
    loss: Callable[[Any], torch.Tensor],
    batches: Iterable[Any],
    *,
    steps: int | None = None,
    after_backward: Callable[[LoopState, torch.Tensor], Any] | None = None,
    after_step: Callable[[LoopState, StepInfo], bool | None] | None = None,
    callbacks: Sequence[Callback] = (),
    stop_on_non_finite: bool = False,
    synchronize: bool = False,
) -> Outcome:
    """Train ``loop.model`` with ``loop.optimizer`` (and ``loop.scheduler``) for ``steps`` steps.

    Each step: draw the next batch, ``optimizer.zero_grad(set_to_none=True)``,
    ``value = loss(batch)``, ``value.backward()``, ``after_backward``, ``optimizer.step()``,
    ``scheduler.step()``, ``loop.step += 1``; then every callback's ``on_step_end`` (a
    pending request applied at once), then ``after_step``. See the module docstring.

    Args:
        loop: the live objects; ``loop.step`` counts on from where it is (a resumed run).
        loss: the step's objective, ``loss(batch)``.
        batches: one item per step; the loop ends early (``"completed"``) when they run out.
        steps: steps to take in this call (``None``: until ``batches`` run out).
        after_backward, after_step, callbacks: the hooks (module docstring). Callbacks get
            ``on_train_start`` before the first step and ``on_train_end`` after the last
            (also after a stop).
        stop_on_non_finite: stop before the backward pass of a non-finite loss (without it a
            non-finite loss is stepped and handed on like any other).
        synchronize: wait for the model's device before reading the clock, so each step's
            ``seconds`` are its own on CUDA or MPS too (on the CPU they are either way); it
            costs the overlap of host and device, so leave it off where seconds do not matter.
    """
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ValueError(f"steps must be an integer >= 0 or None, got {steps!r}")
    device = _device(loop.model) if synchronize else None
    source = iter(batches)
    for callback in callbacks:
        callback.on_train_start(loop)
    status, total, last, bad, reason, taken = "completed", 0.0, None, None, None, 0
    while steps is None or taken < steps:
        wait(device)
        start = time.perf_counter()
        try:
            batch = next(source)
        except StopIteration:
            break
        optimizer, scheduler = loop.optimizer, loop.scheduler
        optimizer.zero_grad(set_to_none=True)
        value = loss(batch)
        last = value.detach()
        if stop_on_non_finite and not bool(torch.isfinite(last).all()):
            status, bad = "non_finite", loop.step + 1
            break
        value.backward()
        probe = after_backward(loop, value) if after_backward is not None else None
        lr = _rate(optimizer)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        wait(device)
        seconds = time.perf_counter() - start
        total += seconds
        taken += 1
        loop.step += 1
        for callback in callbacks:
            callback.on_step_end(loop, last)
            if callback.control.pending is not None:
                loop = callback.control.apply(loop)
        stop = after_step(loop, StepInfo(loop.step, last, lr, seconds, probe)) if after_step is not None else None
        reason = next((c.control.stop_reason for c in callbacks if c.control.should_stop), None)
        if stop or reason is not None:
            status, reason = "stopped", reason if reason is not None else "after_step"
            break
    for callback in callbacks:
        callback.on_train_end(loop)
    return Outcome(status, loop.step, total, bad, reason, last)


def _rate(optimizer: Any) -> float | None:
    groups = getattr(optimizer, "param_groups", None)
    return float(groups[0]["lr"]) if groups and "lr" in groups[0] else None


def _device(model: Any) -> torch.device | None:
    params = model.parameters() if isinstance(model, nn.Module) else ()
    first = next(iter(params), None)
    return first.device if first is not None else None

