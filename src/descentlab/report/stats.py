"""Numbers the report pages state about their tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["spearman"]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of the pairs where both values are finite; NaN with fewer
    than 3 such pairs or a constant side (a constant has no rank correlation)."""
    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return math.nan
    from scipy.stats import spearmanr

    return float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)
