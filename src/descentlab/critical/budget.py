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
from descentlab.ranks import distributed, largest, smallest

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
    """How many samples one routine measurement reads, and how many steps apart, so that it costs
    at most ``share`` of the training time between two of them.

    After each measurement, :meth:`observe` takes its seconds and the training seconds since the
    one before. While the ratio of their sums since the last change is above ``share``, the
    cadence aims below it (at 80 % of it, a margin for the clock's jitter): at the interval it
    has, the most samples whose cost fits, else at the next longer interval of ``intervals``
    (so the samples shrink before the measurements are spread out, and never below
    ``min_size``). What a measurement of ``m`` samples costs is learnt as ``a + b·m`` from the
    sizes it has been timed at: a small model's cost is mostly fixed (Python, kernel launches),
    and shrinking its sample would cost accuracy for nothing. Timed at one size only, the cost
    is taken to be proportional, and the sample at most halves before it is timed again. The cadence
    only ever gets cheaper: a machine that is slower for a while does not make it oscillate.

    Args:
        share: the most the measurement may cost, as a share of the training time (``None``: no cap).
        size: the samples it reads at first.
        intervals: the steps apart it may take, the first the one it starts with (ascending).
        min_size: the fewest samples it reads (``size``: it never shrinks).
        allowance: seconds it may spend in all before its share is enforced (the budget's
            floor: a short run of a small model, where a fixed cost dwarfs the training steps,
            keeps measuring as often as it started).

    Attributes:
        size, every: the samples now, and the steps apart now.
        changes: ``(measurements so far, size, every)`` at each change.
    """

    def __init__(self, share: float | None, size: int, intervals: tuple[int, ...], *, min_size: int,
                 allowance: float = 0.0) -> None:
        self.share = share
        self.allowance = float(allowance)
        self.spent = 0.0  # seconds, all along
        self.size = int(size)
        self.intervals = tuple(int(i) for i in intervals)
        self.every = self.intervals[0]
        self.min_size = min(int(min_size), self.size)
        self.changes: list[tuple[int, int, int]] = []
        self._seconds = self._training = 0.0  # since the last change
        self._count = 0
        self._costs: dict[int, list[float]] = {}  # size -> [seconds, measurements]
        self._trained = [0.0, 0]  # training seconds and steps, all along

    def observe(self, seconds: float, training: float, steps: int | None = None) -> bool:
        """One measurement took ``seconds`` after ``training`` seconds of training (``steps``
        steps: :attr:`every` unless said); ``True`` when :attr:`size` or :attr:`every` changed for
        the next one."""
        self._count += 1
        self.spent += seconds
        self._seconds += seconds
        self._training += training
        cost = self._costs.setdefault(self.size, [0.0, 0])
        cost[0] += seconds
        cost[1] += 1
        self._trained[0] += training
        self._trained[1] += self.every if steps is None else int(steps)
        if self.share is None:
            return False
        over = self._training > 0 and self._seconds > self.share * self._training and self.spent > self.allowance
        if not over and not distributed():
            return False
        size, every = self._plan() if over else (self.size, self.every)
        # every rank of a torch.distributed job measures at the same steps (each measurement is a
        # collective): the smallest sample and the longest interval any rank asks for
        size, every = int(smallest(size)), int(largest(every))
        if (size, every) == (self.size, self.every):
            return False
        self.size, self.every = size, every
        self.changes.append((self._count, size, every))
        self._seconds = self._training = 0.0
        return True

    def cost(self, size: int) -> float:
        """The seconds a measurement of ``size`` samples is expected to take (see the class docstring)."""
        a, b = self._model()
        return a + b * size

    def _model(self) -> tuple[float, float]:
        """``(a, b)`` of ``a + b·m``: a least-squares line through the mean cost at each size timed
        (a, b >= 0); through the origin when one size has been timed."""
        points = [(m, s / n) for m, (s, n) in self._costs.items() if n]
        if len(points) == 1:
            m, c = points[0]
            return 0.0, c / m
        mean_m = sum(m for m, _ in points) / len(points)
        mean_c = sum(c for _, c in points) / len(points)
        b = max(0.0, sum((m - mean_m) * (c - mean_c) for m, c in points) / sum((m - mean_m) ** 2 for m, _ in points))
        a = max(0.0, mean_c - b * mean_m)
        return a, b

    def _plan(self) -> tuple[int, int]:
        """The next (size, every): the most samples that fit at the shortest interval where any fit."""
        a, b = self._model()
        per_step = self._trained[0] / self._trained[1]
        if len(self._costs) == 1 and self.size > self.min_size:  # timed at one size: shrink, then time again
            target = 0.8 * self.share * per_step * self.every
            return max(self.min_size, self.size // 2, min(self.size - 1, int(target / b))), self.every
        lowest = self.min_size
        for every in (i for i in self.intervals if i >= self.every):
            target = 0.8 * self.share * per_step * every
            if a + b * lowest > target:
                continue
            fits = self.size if b == 0 else int((target - a) / b)
            return max(lowest, min(self.size, fits)), every
        return lowest, self.intervals[-1]

    def state_dict(self) -> dict[str, Any]:
        """The size, the interval, the costs timed and the sums since the last change."""
        return {"size": self.size, "every": self.every, "changes": [list(c) for c in self.changes],
                "seconds": self._seconds, "training": self._training, "count": self._count, "spent": self.spent,
                "costs": [[m, s, n] for m, (s, n) in self._costs.items()], "trained": list(self._trained)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.size, self.every = int(state["size"]), int(state["every"])
        self.changes = [tuple(int(x) for x in c) for c in state["changes"]]
        self._seconds, self._training = float(state["seconds"]), float(state["training"])
        self._count = int(state["count"])
        self.spent = float(state.get("spent", 0.0))
        self._costs = {int(m): [float(s), int(n)] for m, s, n in state["costs"]}
        self._trained = [float(state["trained"][0]), int(state["trained"][1])]
