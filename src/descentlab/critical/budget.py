"""The stall monitor's time budget: what it spends against what the training takes.

Between two calls the loop trains; inside a call the monitor works. :class:`Budget` adds the
first to ``train_time`` and the second to ``spent``, and allows work that is expected to cost
``expected`` seconds only if ``spent + expected <= max(fraction · train_time, seconds)``: a
fraction of the training time, or a few seconds in all, whichever is more, so a short run
still gets its first diagnosis. ``fraction=None`` allows everything. Because the budget reads
the clock, a capped monitor may decide differently on a slower machine; uncapped, the
decisions depend on the data alone.

The monitor's routine measurements (the tracked loss at the checks, the sharpness every few
steps) are not asked for: they happen, so they are capped another way. Each has a
:class:`Cadence`, how many samples it reads and how many steps apart, that keeps its cost
within a share of the budget (:data:`TRACKING_SHARE`, :data:`SHARPNESS_SHARE`: of the training
time between two measurements): sized at the start from the loop's batch size
(:func:`prior_size`, no clock involved), then, measured against the training time, shrunk or
spread out when it costs more. What they spend still counts as spent, so what is left for
diagnoses is the budget less the routine's share.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from descentlab.checks import check_number
from descentlab.ranks import distributed, largest

__all__ = ["Budget", "Cadence", "prior_size", "TRACKING_SHARE", "SHARPNESS_SHARE", "STEP_FORWARDS"]

#: The tracked loss may cost this share of the budget (of the training time between two checks:
#: 5 % at the default budget of 25 %) ...
TRACKING_SHARE = 0.2
#: ... and sharpness tracking this share of it between two estimates (12.5 % at the default).
SHARPNESS_SHARE = 0.5
#: A training step (forward, backward, optimizer step) costs about this many forward passes of its
#: batch: the prior that sizes a measurement before any of it is timed.
STEP_FORWARDS = 3.0


class Budget:
    """Training time against the monitor's own (see the module docstring).

    Args:
        fraction: the share of the training time the monitor may spend (``None``: no cap).
        seconds: ... or this many seconds in all, whichever is more.
        clock: the clock, in seconds (``None``: ``time.perf_counter``).
    """

    def __init__(self, fraction: float | None, seconds: float, clock: Callable[[], float] | None = None) -> None:
        self.fraction = None if fraction is None else check_number("budget", fraction, low=0.0, low_open=True)
        self.seconds = check_number("budget_seconds", seconds)
        self.clock = clock if clock is not None else time.perf_counter
        self.train_time = 0.0
        self.spent = 0.0
        self._left_at: float | None = None  # when the monitor last handed control back to the loop

    @property
    def allowed(self) -> float:
        """The most the monitor may have spent by now."""
        return math.inf if self.fraction is None else max(self.fraction * self.train_time, self.seconds)

    def allows(self, expected: float, started: float | None = None) -> bool:
        """Whether work expected to cost ``expected`` seconds fits (counting the time since
        ``started``, a reading of :attr:`clock` inside the current call, as spent already)."""
        so_far = 0.0 if started is None else self.clock() - started
        return self.spent + so_far + expected <= self.allowed

    @contextlib.contextmanager
    def monitoring(self) -> Iterator[None]:
        """One call of the monitor: the time since the last one was training, this one is spent."""
        now = self.clock()
        if self._left_at is not None:
            self.train_time += now - self._left_at
        try:
            yield
        finally:
            self._left_at = self.clock()
            self.spent += self._left_at - now

    def restart(self) -> None:
        """Forget when the monitor last returned (a resumed run: the pause was not training)."""
        self._left_at = None

    def state_dict(self) -> dict[str, Any]:
        """The two totals."""
        return {"train_time": self.train_time, "spent": self.spent}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.train_time, self.spent = float(state["train_time"]), float(state["spent"])
        self._left_at = None


def prior_size(share: float, forwards: float, batch_size: int | None, every: int, *, low: int, high: int) -> int:
    """The samples a measurement may read every ``every`` steps of ``batch_size`` samples and stay
    within ``share`` of the training time, when it costs ``forwards`` forward passes per sample
    and a step :data:`STEP_FORWARDS` per sample of its batch: ``share · STEP_FORWARDS · batch ·
    every / forwards``, within ``[low, high]`` (``high`` without a batch size)."""
    if batch_size is None:
        return high
    return max(low, min(high, int(share * STEP_FORWARDS * batch_size * every / forwards)))


class Cadence:
    """How many steps apart one routine measurement of a fixed sample runs, so that it costs at
    most ``share`` of the training time between two of them.

    After each measurement, :meth:`observe` takes its seconds and the training seconds since the
    one before. While the ratio of their sums since the last change is above ``share``, the
    cadence moves to the shortest interval of ``intervals`` where the mean measurement costs at
    most 80 % of the share (a margin for the clock's jitter), else to the longest. The sample
    (``size``) is never shrunk to save time: a tracked loss of fewer samples is noisier, and a
    sharpness of fewer samples is a larger quantity (:mod:`descentlab.critical.sharpness`), so
    either would draw a trend that is not there. The cadence only ever gets sparser: a machine
    that is slower for a while does not make it oscillate.

    Args:
        share: the most the measurement may cost, as a share of the training time (``None``: no cap).
        size: the samples it reads (fixed: its owner may set it before the first measurement).
        intervals: the steps apart it may take, the first the one it starts with (ascending).
        allowance: seconds it may spend in all before its share is enforced (the budget's
            floor: a short run of a small model, where a fixed cost dwarfs the training steps,
            keeps measuring as often as it started).

    Attributes:
        size, every: the samples, and the steps apart now.
        changes: ``(measurements so far, size, every)`` at each change.
    """

    def __init__(self, share: float | None, size: int, intervals: tuple[int, ...], *,
                 allowance: float = 0.0) -> None:
        self.share = share
        self.allowance = float(allowance)
        self.spent = 0.0  # seconds, all along
        self.size = int(size)
        self.intervals = tuple(int(i) for i in intervals)
        self.every = self.intervals[0]
        self.changes: list[tuple[int, int, int]] = []
        self._seconds = self._training = 0.0  # since the last change
        self._count = 0
        self._extra = 0.0  # seconds charged outside the measurements (:meth:`charge`)
        self._trained = [0.0, 0]  # training seconds and steps, all along

    def observe(self, seconds: float, training: float, steps: int | None = None) -> bool:
        """One measurement took ``seconds`` after ``training`` seconds of training (``steps``
        steps: :attr:`every` unless said); ``True`` when :attr:`every` changed for the next one."""
        self._count += 1
        self.spent += seconds
        self._seconds += seconds
        self._training += training
        self._trained[0] += training
        self._trained[1] += self.every if steps is None else int(steps)
        if self.share is None:
            return False
        over = self._training > 0 and self._seconds > self.share * self._training and self.spent > self.allowance
        if not over and not distributed():
            return False
        # every rank of a torch.distributed job measures at the same steps (each measurement is a
        # collective): the longest interval any rank asks for
        every = int(largest(self._next_every() if over else self.every))
        if every == self.every:
            return False
        self.every = every
        self.changes.append((self._count, self.size, every))
        self._seconds = self._training = 0.0
        return True

    def charge(self, seconds: float) -> None:
        """Seconds spent outside the paced measurements (a cold first one): counted against the
        allowance, not in the mean cost the interval is chosen by."""
        self.spent += seconds
        self._extra += seconds

    def _next_every(self) -> int:
        """The shortest interval, from the one it has on, where the mean measurement fits."""
        per_step = self._trained[0] / self._trained[1]
        cost = (self.spent - self._extra) / self._count
        return next((every for every in self.intervals if every >= self.every
                     and cost <= 0.8 * self.share * per_step * every), self.intervals[-1])

    def state_dict(self) -> dict[str, Any]:
        """The size, the interval, the sums all along and since the last change."""
        return {"size": self.size, "every": self.every, "changes": [list(c) for c in self.changes],
                "seconds": self._seconds, "training": self._training, "count": self._count, "spent": self.spent,
                "extra": self._extra, "trained": list(self._trained)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.size, self.every = int(state["size"]), int(state["every"])
        self.changes = [tuple(int(x) for x in c) for c in state["changes"]]
        self._seconds, self._training = float(state["seconds"]), float(state["training"])
        self._count = int(state["count"])
        self.spent = float(state.get("spent", 0.0))
        self._extra = float(state.get("extra", 0.0))
        self._trained = [float(state["trained"][0]), int(state["trained"][1])]
