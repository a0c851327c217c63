"""Is the loss still going down? A plateau test that mini-batch noise cannot fool.

The test reads a *smoothed, noise-free* loss: the loss of the model on a fixed sample of the
training data, measured every ``every`` steps (never the mini-batch losses, whose noise made
healthy runs look stalled). Over a horizon of the last h steps it fits a straight line
L(t) ≈ c + s·t by least squares (the smoothing) and reads

    progress per window   P = −s · window / |mean L|,
    its standard error    σ_P = σ_s · window / |mean L|,      σ_s² = (Σ r²/(n − 2)) / Σ (t − t̄)²

(r the residuals: the loss's own jitter, e.g. SGD bouncing in a valley). A plateau is

* **confident** at some horizon h = 2w, 4w, …: P + z·σ_P < ``rel_tol`` (z = 3: even the
  optimistic end of the estimate is below the tolerance). A deterministic plateau (full-batch
  GD at a saddle) passes at the first horizon, 2 windows;
* or, once the longest horizon (``max_windows`` windows) is available, P < ``rel_tol`` there:
  the loss jitters so much that no shorter horizon is sure, and over the longest one it still
  does not go down — a noise floor. Steady progress, however noisy, keeps P above the
  tolerance over that horizon and never fires;
* or, at a horizon of 4 windows or more, P < ``rel_tol`` while the loss over the whole horizon
  is no lower than the first loss the test was given: a run that bounces above where it began
  (a rate too high for saturated units, say) has made no progress, however noisy, and waiting
  for the longest horizon would let a short run end undiagnosed.

A plateau test with a tolerance lets a loss creep: 0.14 % a window is progress, and leaves a
300-step run where it began. :meth:`PlateauTest.ends_above` says when even the optimistic end of
the pace over the last two windows (P + z·σ_P a window, on the logarithm of the loss) would leave
the loss above a level at the run's last step: the monitor then diagnoses the creep as a plateau.

After a stall the history restarts, and :meth:`PlateauTest.rearm` keeps the test quiet until
the loss has left the plateau, so one plateau is reported once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Trend", "PlateauTest", "BounceScan", "fit_trend"]


@dataclass(frozen=True)
class Trend:
    """The fitted trend of the tracked loss over one horizon.

    Attributes:
        horizon: steps covered (first to last evaluation).
        n_points: evaluations used.
        level: the mean loss over the horizon.
        last: the fitted loss at the last evaluation.
        progress: P, the relative decrease per window the line predicts (negative: rising).
        std_error: σ_P.
        noise: the residuals' standard deviation (the loss's jitter around the line).
        confident: the plateau passed with P + z·σ_P < rel_tol (else it passed, if at all,
            on the longest horizon's estimate alone).
    """

    horizon: int
    n_points: int
    level: float
    last: float
    progress: float
    std_error: float
    noise: float
    confident: bool = False

    def to_dict(self) -> dict[str, float | int | bool]:
        return {"horizon": self.horizon, "n_points": self.n_points, "level": self.level, "last": self.last,
                "progress_per_window": self.progress, "std_error": self.std_error, "noise": self.noise,
                "confident": self.confident}


def fit_trend(steps: list[int], losses: list[float], window: int) -> Trend:
    """Least-squares line through ``(steps, losses)``; progress and its error per ``window`` steps."""
    n = len(steps)
    if n < 3:
        raise ValueError(f"a trend needs at least 3 points, got {n}")
    t_mean = sum(steps) / n
    l_mean = sum(losses) / n
    stt = sum((t - t_mean) ** 2 for t in steps)
    slope = sum((t - t_mean) * (v - l_mean) for t, v in zip(steps, losses)) / stt
    residuals = [v - (l_mean + slope * (t - t_mean)) for t, v in zip(steps, losses)]
    var = sum(r * r for r in residuals) / (n - 2)
    scale = window / max(abs(l_mean), 1e-12)
    return Trend(horizon=steps[-1] - steps[0], n_points=n, level=l_mean,
                 last=l_mean + slope * (steps[-1] - t_mean), progress=-slope * scale,
                 std_error=math.sqrt(var / stt) * scale, noise=math.sqrt(var))


class PlateauTest:
    """The plateau test of the module docstring, fed one tracked loss at a time.

    Args:
        window: w, the steps per window the progress is measured in.
        every: steps between two tracked losses (``window`` must be a multiple of it).
        rel_tol: relative progress per window below which the loss is on a plateau.
        max_windows: the longest horizon, in windows (>= 2).
        z: confidence multiplier of the standard error.
    """

    def __init__(self, window: int, every: int, rel_tol: float, *, max_windows: int = 8, z: float = 3.0) -> None:
        if window % every:
            raise ValueError(f"window ({window}) must be a multiple of every ({every})")
        if max_windows < 2:
            raise ValueError(f"max_windows must be >= 2, got {max_windows}")
        self.window, self.every, self.rel_tol = int(window), int(every), float(rel_tol)
        self.max_windows, self.z = int(max_windows), float(z)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.quiet_above: float | None = None  # after a stall: silent until the loss falls below this
        self.initial: float | None = None  # the first loss given (kept over resets)
        self.noise = 0.0  # the loss's relative jitter over the last window fitted (:meth:`progress`)

    def reset(self) -> None:
        """Forget the history (after a stall, or an escape step that moved the model)."""
        self.steps.clear()
        self.losses.clear()

    def rearm(self, trend: Trend) -> None:
        """After a stall left in place: stay quiet until a window's mean loss is below the
        plateau's level by more than 1 % and by three standard errors of that mean."""
        points = max(1, self.window // self.every)
        margin = max(0.01 * abs(trend.level), 3.0 * trend.noise / math.sqrt(points))
        self.quiet_above = trend.level - margin
        self.reset()

    def add(self, step: int, loss: float) -> Trend | None:
        """Record the tracked loss at ``step``; the plateau's :class:`Trend` when there is one."""
        self.steps.append(int(step))
        self.losses.append(float(loss))
        if self.initial is None and math.isfinite(loss):
            self.initial = float(loss)
        first = self._since(self.max_windows * self.window)
        del self.steps[:first], self.losses[:first]
        if self.quiet_above is not None:
            last = self._since(self.window - 1)
            if self.steps[-1] - self.steps[0] >= self.window - self.every and \
                    sum(self.losses[last:]) / (len(self.losses) - last) < self.quiet_above:
                self.quiet_above = None
            return None
        return self.check()

    def progress(self) -> float | None:
        """How fast the loss is surely falling now, ``None`` until a window is covered: the lower
        end (z standard errors) of the fall of its logarithm per window (a relative fall, and a
        loss that falls exponentially is a line there). Over a window of three points or more,
        their fitted line (its residuals kept as :attr:`noise`, the relative jitter); over a
        window read at its ends only, the change between the two less z times the jitter of their
        difference (√2 :attr:`noise`, as last measured). A loss that is not positive: on its own
        scale, relative to its latest value."""
        if not self.steps or self.steps[-1] - self.steps[0] < self.window:
            return None
        return self._progress_since(self._since(self.window))

    def early_progress(self) -> float | None:
        """:meth:`progress` over every point so far, before a window is covered (three points at
        least; ``None`` before): the fitted line's fall per window, less z standard errors."""
        return self._progress_since(0, keep_noise=False) if self._early() else None

    def early_plateau(self) -> Trend | None:
        """A loss that has not moved since the run began, on every point so far before a window
        is covered (three at least): |P| + z·σ_P below ``rel_tol`` per window, neither falling nor
        rising (a flat start: a saddle or a maximum at the initial point, a rate far too small)
        needs no two windows to be told from a slow start, which falls. A loss that rises this
        early is left to the other alarms (growth, a bounce) and to :meth:`check`."""
        if not self._early():
            return None
        trend = fit_trend(self.steps, self.losses, self.window)
        return replace(trend, confident=True) if abs(trend.progress) + self.z * trend.std_error < self.rel_tol \
            else None

    def ends_above(self, steps_left: int, level: float, pace_below: float) -> Trend | None:
        """The trend of the tracked loss over the last two windows when the loss creeps: even the
        optimistic end of its pace, the fall of its logarithm a window P + z·σ_P, is below
        ``pace_below`` and, kept up for ``steps_left`` more steps, leaves it above ``level``.
        ``None`` otherwise, before two windows are covered, or for a loss that is not positive."""
        horizon = 2 * self.window
        if not self.steps or self.steps[-1] - self.steps[0] < horizon or not level > 0:
            return None
        first = max(i for i, step in enumerate(self.steps) if step <= self.steps[-1] - horizon)
        steps, losses = self.steps[first:], self.losses[first:]
        if len(steps) < 3 or not min(losses) > 0:
            return None
        logs = fit_trend(steps, [math.log(v) for v in losses], self.window)
        pace = (logs.progress + self.z * logs.std_error) * abs(logs.level)  # fit_trend divided by the level
        if pace >= pace_below or logs.last - max(pace, 0.0) * steps_left / self.window <= math.log(level):
            return None
        return fit_trend(steps, losses, self.window)

    def fell_before_last(self) -> bool | None:
        """Whether the loss surely fell up to the point before the latest: the fit of its logarithm
        over the history before that point falls by ``rel_tol`` a window or more at the pessimistic
        end (P − z·σ_P). ``None`` where that cannot be read: fewer than three earlier points, or a
        loss that is not positive. An alarm's rise on such a descent is a blip on it."""
        steps, losses = self.steps[:-1], self.losses[:-1]
        if len(steps) < 3 or not min(losses) > 0:
            return None
        trend = fit_trend(steps, [math.log(v) for v in losses], self.window)
        return (trend.progress - self.z * trend.std_error) * abs(trend.level) >= self.rel_tol

    def _early(self) -> bool:
        """Three points or more, none a window before the latest: the early tests' points."""
        return len(self.steps) >= 3 and self.steps[-1] - self.steps[0] < self.window

    def _progress_since(self, first: int, keep_noise: bool = True) -> float:
        """:meth:`progress` over the points from index ``first`` on (``keep_noise``: the fit's
        jitter becomes :attr:`noise`)."""
        start = max(0, first - 1)  # the points read; a loss of 0 before them (full-batch Rprop) takes no log
        tail = self.losses[start:]
        positive = all(v > 0 for v in tail)
        values = [math.log(v) if positive else v / max(abs(self.losses[-1]), 1e-12) for v in tail]
        if len(self.steps) - first >= 3:
            trend = fit_trend(self.steps[first:], values[first - start:], self.window)
            level = abs(trend.level)  # fit_trend divides by it: undone, the fall per window itself
            if keep_noise:
                self.noise = trend.noise
            return (trend.progress - self.z * trend.std_error) * max(level, 1e-12)
        i = start if self.steps[first] > self.steps[-1] - self.window else first
        return ((values[i - start] - values[-1] - self.z * math.sqrt(2.0) * self.noise)
                * self.window / (self.steps[-1] - self.steps[i]))

    def _since(self, steps: int) -> int:
        """The index of the first point within ``steps`` of the latest."""
        return next(i for i, s in enumerate(self.steps) if s >= self.steps[-1] - steps)

    def state_dict(self) -> dict[str, Any]:
        """The history and the quiet level (plain data)."""
        return {"steps": list(self.steps), "losses": list(self.losses), "quiet_above": self.quiet_above,
                "initial": self.initial, "noise": self.noise}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.steps = [int(s) for s in state["steps"]]
        self.losses = [float(x) for x in state["losses"]]
        self.quiet_above = state["quiet_above"]
        self.initial = state.get("initial")
        self.noise = float(state.get("noise", 0.0))

    def check(self) -> Trend | None:
        """The test on the history as it is (see the module docstring)."""
        windows = 2
        found = None
        while windows <= self.max_windows:
            horizon = windows * self.window
            if not self.steps or self.steps[-1] - self.steps[0] < horizon:
                break  # the history does not cover this horizon yet
            # from the last point at or before the horizon's start: a history read once a window
            # in places still spans the whole horizon (the fit is never shorter than it)
            first = max(i for i, step in enumerate(self.steps) if step <= self.steps[-1] - horizon)
            if len(self.steps) - first < 3:
                break
            steps, losses = self.steps[first:], self.losses[first:]
            trend = fit_trend(steps, losses, self.window)
            if trend.progress + self.z * trend.std_error < self.rel_tol:
                return replace(trend, confident=True)
            if (windows >= 4 and trend.progress < self.rel_tol and self.initial is not None
                    and min(losses) >= self.initial):
                return trend  # no lower than where it began, over 4 windows or more
            found = trend if windows * 2 > self.max_windows and trend.progress < self.rel_tol else None
            windows *= 2
        return found


@dataclass
class BounceScan:
    """Which of the last ``recent`` tracked losses after step ``since`` bounced: stood at
    ``factor`` times the best before them or more, giving back ``given_back`` of the fall from the
    first of them to that best (a ratio means something for a positive best only). Reads the
    tracked losses once each, as they come (:meth:`read`), so a check costs the same at step 100
    and at step 100,000.

    Attributes:
        read_upto: tracked losses read so far (of the whole run's list).
        first, best: the first loss after ``since`` and the lowest so far.
        ratios: for each of the last ``recent`` losses, its ratio to the best before it where it
            bounced, else 0.
    """

    since: int
    factor: float
    given_back: float
    recent: int
    read_upto: int = 0
    first: float | None = None
    best: float = math.inf
    ratios: deque = field(default_factory=deque)

    def read(self, tracked: Sequence[tuple[int, float]]) -> None:
        """Take the ``(step, loss)`` pairs of ``tracked`` not read yet."""
        for at, value in tracked[self.read_upto:]:
            if at <= self.since:
                continue
            if self.first is None:
                self.first = value
            bounced = 0 < self.best < math.inf and value >= self.factor * self.best \
                and value - self.best >= self.given_back * (self.first - self.best)
            self.ratios.append(value / self.best if bounced else 0.0)
            if len(self.ratios) > self.recent:
                self.ratios.popleft()
            self.best = min(self.best, value)
        self.read_upto = len(tracked)
