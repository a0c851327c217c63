"""The one step timer: how many seconds a piece of work, or a plain training step, takes.

**The fastest counts.** A timing on a shared machine is the work's own time plus whatever
other jobs took from it; other jobs only ever *add* time. So of several timings the smallest
is the best estimate of the work's own cost, and :func:`fastest` returns the minimum.

**The device is waited for.** CUDA (and MPS) run asynchronously: a call returns before its
kernels finish. Where the work runs on such a device, the clock starts and stops only after
the device has finished (:func:`synchronize`), so a timing is the work's, not its launch's.

**A plain step.** :func:`seconds_per_step` times ordinary training steps of one model and its
optimizer (zero the gradients, forward, loss, backward, optimizer step;
:func:`descentlab.engine.steps.train_step`): the cost of one run of that model, the same
measure whether the run itself trains alone or stacked with others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from descentlab.checks import check_int

__all__ = ["fastest", "seconds_per_step", "synchronize"]


def synchronize(device: torch.device | str | None) -> None:
    """Wait until ``device`` has finished the work queued on it (CUDA, MPS; nothing for the CPU
    or ``None``)."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def fastest(work: Callable[[], Any], repeats: int = 3, *, warmup: int = 0,
            device: torch.device | str | None = None) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``work()`` (see the module docstring).

    Args:
        work: called ``warmup + repeats`` times; what it returns is ignored.
        repeats: timed calls (at least 1).
        warmup: untimed calls first (caches, lazy state such as an optimizer's first step).
        device: where ``work`` runs; on CUDA or MPS each timing waits for it to finish.
    """
    check_int("repeats", repeats)
    check_int("warmup", warmup, low=0)
    for _ in range(warmup):
        work()
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        work()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def seconds_per_step(model: nn.Module, optimizer: Any, loss_fn: Callable[[Any, Any], torch.Tensor],
                     batches: Iterable[tuple[Any, Any]], *, steps: int = 1, repeats: int = 5,
                     warmup: int = 1) -> float:
    """Seconds per plain training step of ``model`` with ``optimizer``: the fastest of ``repeats``
    timings of ``steps`` consecutive steps, divided by ``steps``, after ``warmup`` untimed steps.

    The steps really train: ``model`` and ``optimizer`` change (time a copy to keep them).
    No scheduler is stepped (its cost is negligible, and the rate does not change the cost).

    Args:
        loss_fn: ``loss_fn(output, target)``, a scalar tensor.
        batches: ``(inputs, target)`` pairs, one per step (``warmup + repeats * steps`` are
            read; drawing a batch, such as indexing the data, is timed with its step). Inputs
            that are a tuple or list are passed as separate arguments. For one fixed batch:
            ``itertools.repeat((x, y))``.
        steps: steps per timing: 1 for the cost of one step, more to average a cycle of
            batches (an epoch's varying indices) into one timing.
    """
    from descentlab.engine.steps import train_step  # on use: steps imports this module

    check_int("steps", steps)
    check_int("repeats", repeats)
    check_int("warmup", warmup, low=0)
    source = iter(batches)
    device = next(model.parameters()).device if any(True for _ in model.parameters()) else None

    def run(count: int) -> None:
        for _ in range(count):
            train_step(model, optimizer, loss_fn, next(source))

    run(warmup)
    return fastest(lambda: run(steps), repeats, device=device) / steps
