"""What the trainer adapters share: the monitor they drive, the stalls they have logged, and
which of its requests a trainer's own controls can make.

A trainer builds its own ``DataLoader`` and steps whatever optimizer and scheduler sit in its
slots. So a request for a new rate schedule, momentum, gradient noise, clipping, a new
optimizer or re-initialised layers can be made (the adapter puts :func:`apply_change`'s
optimizer and scheduler into those slots), while a request for another batch size cannot: it
needs a new loader, which only the user's code can build. Such a request is not faked: it is
taken off the monitor's :class:`~descentlab.engine.Control`, logged, and kept in
:attr:`MonitorBridge.not_applied`. (Changes to the model's modules never reach an adapter: its
loop says ``changes_modules=False``, so the monitor reports them instead of requesting them.)
"""

from __future__ import annotations

import math
from typing import Any

from descentlab.critical.monitor import LOGGER, StallMonitor
from descentlab.critical.stall import Stall
from descentlab.engine.callbacks import LoopState, Request

__all__ = ["MonitorBridge", "BridgedCallback", "dataset_size", "make_monitor", "stall_metrics"]

#: The numbers of a stall logged as metrics (the names of ``StallMonitor(writer=...)``'s scalars).
STALL_NUMBERS = ("loss", "grad_norm", "min_eigenvalue", "max_eigenvalue")


def make_monitor(monitor: StallMonitor | None, loss_fn: Any, data: Any, monitor_args: dict[str, Any]) -> StallMonitor:
    """``monitor`` as given, or a :class:`StallMonitor` built from ``loss_fn``, ``data`` and
    ``monitor_args`` (its keyword arguments); ``ValueError`` for both or neither."""
    if monitor is not None:
        if loss_fn is not None or data is not None or monitor_args:
            raise ValueError("monitor: give a StallMonitor or the arguments to build one (loss_fn, data, ...), "
                             "not both")
        if not isinstance(monitor, StallMonitor):
            raise ValueError(f"monitor must be a descentlab.critical.StallMonitor, got {type(monitor).__name__}")
        return monitor
    if loss_fn is None or data is None:
        raise ValueError("loss_fn and data are needed to build the StallMonitor (or pass monitor=)")
    return StallMonitor(loss_fn, data, **monitor_args)


def stall_metrics(stall: Stall) -> dict[str, float]:
    """A stall as numbers any metrics logger takes: ``stall/step``, its finite ``stall/loss``,
    ``stall/grad_norm``, ``stall/min_eigenvalue``, ``stall/max_eigenvalue``, and its verdict as
    ``stall/verdict/<verdict>`` = 1 (a CSV or MLflow logger has no text column; the name carries it)."""
    metrics = {"stall/step": float(stall.step)}
    for name in STALL_NUMBERS:
        value = getattr(stall, name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            metrics[f"stall/{name}"] = float(value)
    if stall.verdict is not None:
        metrics[f"stall/verdict/{stall.verdict}"] = 1.0
    return metrics


def dataset_size(loader: Any) -> int | None:
    """Samples in ``loader``'s dataset (``None`` for an iterable dataset, or no loader)."""
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:  # an iterable dataset has no length
        return None


class MonitorBridge:
    """The monitor an adapter drives and the bookkeeping around its events.

    Attributes:
        monitor: the :class:`StallMonitor`.
        loop: the :class:`LoopState` the adapter keeps in step with its trainer (``None`` before
            training starts).
        not_applied: the requests the trainer could not make, each with the reason.
    """

    def __init__(self, monitor: StallMonitor) -> None:
        self.monitor = monitor
        self.loop: LoopState | None = None
        self.not_applied: list[tuple[Request, str]] = []
        self._logged: list[Stall] = []

    def new_stalls(self) -> list[Stall]:
        """The stalls not yet logged: new ones, and a plateau that waited for the budget and has
        been diagnosed since (the monitor replaces it in place)."""
        stalls = self.monitor.stalls
        fresh = [s for i, s in enumerate(stalls) if i >= len(self._logged) or s is not self._logged[i]]
        self._logged = list(stalls)
        return fresh

    def applicable_request(self, cannot: str | None = None) -> Request | None:
        """The monitor's pending request if the trainer can make it, else ``None``: a request for
        another batch size, or any request where ``cannot`` says why the adapter cannot make
        it, is taken off the control, logged and kept in :attr:`not_applied`."""
        request = self.monitor.control.pending
        if request is None:
            return None
        reason = cannot
        if request.change.batch_size is not None:
            reason = (f"it needs batches of {request.change.batch_size} samples, which needs a new DataLoader the "
                      "trainer builds from your code: build it with that batch size and restart from a checkpoint")
        if reason is None:
            return request
        self.monitor.control.pending = None
        self.not_applied.append((request, reason))
        LOGGER.warning("step %d: the remedy %r was not applied: %s", request.step, request.name, reason)
        return None


class BridgedCallback:
    """What a trainer's callback shows of its :class:`MonitorBridge` (``_bridge``): the same two
    attributes in every adapter."""

    _bridge: MonitorBridge

    @property
    def loop(self) -> LoopState | None:
        """The loop state the monitor sees (``None`` before training starts)."""
        return self._bridge.loop

    @property
    def not_applied(self) -> list[tuple[Request, str]]:
        """The requests the trainer could not make, each with the reason."""
        return self._bridge.not_applied
