"""The intervals every finding carries, against scipy's own and against coverage by simulation."""

import math

import numpy as np
import pytest
from scipy import stats

from descentlab.intervals import (bootstrap_interval, difference_interval, finding, mean_interval,
                                  spearman_interval)


def test_mean_and_welch_intervals_against_scipy():
    g = np.random.default_rng(0)
    a, b = g.normal(1.0, 2.0, 7), g.normal(0.0, 0.5, 12)
    found = mean_interval(a)
    low, high = stats.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=stats.sem(a))
    assert (found.low, found.high) == pytest.approx((low, high), rel=1e-12)
    welch = difference_interval(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (welch.low, welch.high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    paired = difference_interval(a, a - 0.3, paired=True)
    assert paired.estimate == pytest.approx(0.3) and paired.low == pytest.approx(0.3)  # no spread: a point
    with pytest.raises(ValueError, match="paired"):
        difference_interval([1.0], [1.0, 2.0], paired=True)


def test_the_t_interval_covers_the_mean_95_percent_of_the_time():
    """2,000 simulated studies of 5 seeds: coverage within three binomial standard errors of 95 %."""
    g = np.random.default_rng(1)
    hits = sum(mean_interval(g.normal(3.0, 1.0, 5)).excludes(3.0) is False for _ in range(2000))
    assert abs(hits / 2000 - 0.95) < 3 * math.sqrt(0.95 * 0.05 / 2000)


def test_bootstrap_and_spearman_intervals():
    g = np.random.default_rng(2)
    x = np.arange(30.0)
    y = x + g.normal(0, 3, 30)
    found = spearman_interval(x, y, seed=0)
    assert found.estimate == pytest.approx(stats.spearmanr(x, y).statistic) and found.low > 0.5
    median = bootstrap_interval(list(x), lambda v: float(np.median(v)), seed=0)
    assert median.low < 14.5 < median.high
    assert math.isnan(mean_interval([1.0]).low) and mean_interval([]).n == 0


def test_a_finding_is_stated_only_when_its_interval_excludes_zero():
    assert "no effect detectable" in finding(difference_interval([1.0, 1.2, 0.9], [1.1, 1.0, 1.05]), "sharpness")
    assert "higher by" in finding(difference_interval([5.0, 5.2, 4.9], [1.1, 1.0, 1.05]), "sharpness")
