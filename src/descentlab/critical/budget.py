"""The stall monitor's time budget: what it spends against what the training takes.

Between two calls the loop trains; inside a call the monitor works. :class:`Budget` adds the
first to ``train_time`` and the second to ``spent``, and allows work that is expected to cost
``expected`` seconds only if ``spent + expected <= max(fraction · train_time, seconds)``: a
fraction of the training time, or a few seconds in all, whichever is more, so a short run
still gets its first diagnosis. ``fraction=None`` allows everything. Because the budget reads
the clock, a capped monitor may decide differently on a slower machine; uncapped, the
decisions depend on the data alone.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from descentlab.checks import check_number

__all__ = ["Budget"]


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
