"""Findings with their uncertainty: 95 % intervals of a mean, of a difference of means, of a
rank correlation, and the rule that a study states a finding only when the effect exceeds its
interval.

Every study that states a finding (batch size, compare, normalization, edge of stability, the
minimum ratio) runs several seeds and reports, for each quantity it compares, the mean with its
interval, and for each comparison the interval of the *effect* (a difference of means, a rank
correlation). :func:`finding` says whether the effect is detectable: its interval excludes 0.
Otherwise the study says that no effect was detectable at this size, with the interval.

- :func:`mean_interval`: Student's t interval of a mean, ``mean ± t_{n-1} · s / √n``
  (exact for normal data, close for most sums of a few seeds);
- :func:`difference_interval`: Welch's t interval of ``mean(a) − mean(b)`` (unequal variances;
  Welch–Satterthwaite degrees of freedom), or the t interval of the paired differences when
  the two were measured on the same seeds;
- :func:`bootstrap_interval`: the percentile bootstrap of any statistic (seeded resamples), for
  statistics without a closed form (a median, a rank correlation);
- :func:`spearman_interval`: Spearman's ρ with a bootstrap interval over the pairs.

Plain Python and scipy only, so every layer may use it (like :mod:`descentlab.checks`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Interval", "mean_interval", "difference_interval", "bootstrap_interval", "spearman_interval", "finding",
           "LEVEL"]

#: The confidence level of every interval.
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval.

    Attributes:
        estimate: the point estimate (a mean, a difference of means, a correlation).
        low, high: the interval's ends (``nan`` when it cannot be computed: fewer than 2 values).
        n: the number of values (seeds) it rests on.
        level: its confidence level.
        method: how it was computed (``"t"``, ``"welch"``, ``"paired t"``, ``"bootstrap"``).
    """

    estimate: float
    low: float
    high: float
    n: int
    level: float = LEVEL
    method: str = "t"

    @property
    def half_width(self) -> float:
        """Half the interval's width (``nan`` without one)."""
        return (self.high - self.low) / 2

    def excludes(self, value: float = 0.0) -> bool:
        """The interval lies entirely above or below ``value``."""
        return bool(math.isfinite(self.low) and math.isfinite(self.high) and (self.low > value or self.high < value))

    def text(self, digits: int = 3) -> str:
        """``"0.123 [0.101, 0.145]"`` (the estimate and its interval)."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return f"{self.estimate:.{digits}g} (no interval: n = {self.n})"
        return f"{self.estimate:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}]"

    def to_dict(self) -> dict[str, float | int | str | None]:
        """Plain data (non-finite ends as ``None``)."""
        finite = lambda v: v if math.isfinite(v) else None  # noqa: E731
        return {"estimate": finite(self.estimate), "low": finite(self.low), "high": finite(self.high), "n": self.n,
                "level": self.level, "method": self.method}


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Student's t interval of the mean of ``values`` (non-finite ones left out)."""
    from scipy import stats

    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    mean = sum(xs) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, level)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def difference_interval(a: Sequence[float], b: Sequence[float], *, paired: bool = False,
                        level: float = LEVEL) -> Interval:
    """The interval of ``mean(a) − mean(b)``: the t interval of the differences when ``paired``
    (the same seeds, ``a[i]`` beside ``b[i]``), else Welch's."""
    from scipy import stats

    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired: a and b must be as long as each other, got {len(a)} and {len(b)}")
        pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x)
                 and math.isfinite(y)]
        found = mean_interval([x - y for x, y in pairs], level)
        return Interval(found.estimate, found.low, found.high, found.n, level, "paired t")
    xs, ys = _finite(a), _finite(b)
    if not xs or not ys:
        return Interval(math.nan, math.nan, math.nan, min(len(xs), len(ys)), level, "welch")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    if len(xs) < 2 or len(ys) < 2:
        return Interval(mx - my, math.nan, math.nan, min(len(xs), len(ys)), level, "welch")
    vx = sum((x - mx) ** 2 for x in xs) / (len(xs) - 1) / len(xs)
    vy = sum((y - my) ** 2 for y in ys) / (len(ys) - 1) / len(ys)
    se = math.sqrt(vx + vy)
    if se == 0:
        return Interval(mx - my, mx - my, mx - my, min(len(xs), len(ys)), level, "welch")
    dof = (vx + vy) ** 2 / ((vx ** 2 / (len(xs) - 1) if vx else 0) + (vy ** 2 / (len(ys) - 1) if vy else 0))
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
    return Interval(mx - my, mx - my - half, mx - my + half, min(len(xs), len(ys)), level, "welch")


def bootstrap_interval(values: Sequence, statistic: Callable[[Sequence], float], *, resamples: int = 2000,
                       seed: int = 0, level: float = LEVEL) -> Interval:
    """The percentile bootstrap interval of ``statistic(values)``: ``resamples`` seeded resamples
    of the values with replacement (a resample whose statistic is not finite is left out)."""
    import numpy as np

    items = list(values)
    n = len(items)
    estimate = float(statistic(items)) if n else math.nan
    if n < 2:
        return Interval(estimate, math.nan, math.nan, n, level, "bootstrap")
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        value = float(statistic([items[i] for i in rng.integers(0, n, n)]))
        if math.isfinite(value):
            draws.append(value)
    if len(draws) < resamples / 2:
        return Interval(estimate, math.nan, math.nan, n, level, "bootstrap")
    low, high = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(estimate, float(low), float(high), n, level, "bootstrap")


def spearman_interval(x: Sequence[float], y: Sequence[float], *, resamples: int = 2000, seed: int = 0,
                      level: float = LEVEL) -> Interval:
    """Spearman's ρ of the finite pairs with a bootstrap interval over the pairs (every seed's
    point is a pair, so the interval carries the spread between seeds, not only between means)."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]

    def rho(sample: Sequence[tuple[float, float]]) -> float:
        if len(sample) < 3 or len({a for a, _ in sample}) < 2 or len({b for _, b in sample}) < 2:
            return math.nan
        return float(spearmanr([a for a, _ in sample], [b for _, b in sample]).statistic)

    return bootstrap_interval(pairs, rho, resamples=resamples, seed=seed, level=level)


def finding(effect: Interval, what: str, *, unit: str = "") -> str:
    """One sentence: the effect and its interval when the interval excludes 0, else that no
    effect was detectable at this size (with the interval, which says how large an effect could
    have hidden)."""
    text = effect.text()
    level = f"{100 * effect.level:.3g} %"  # 95 % unless the caller widened it (e.g. for several comparisons)
    if effect.excludes(0.0):
        direction = "higher" if effect.estimate > 0 else "lower"
        return f"{what}: {direction} by {abs(effect.estimate):.3g}{unit} ({level} interval {text}, n = {effect.n})"
    return f"{what}: no effect detectable at this size ({level} interval {text}, n = {effect.n})"
