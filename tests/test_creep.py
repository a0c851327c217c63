"""A loss that creeps: the projection against a closed-form exponential creep, and the monitor on a
loop that creeps (Adam with eps 1) against the same loop with Adam's default eps and under a
warm-up as long as the run (it excuses the creep for the first half of the run alone)."""

import math

import pytest
import torch

from descentlab.critical.plateau import PlateauTest
from helpers import digits_mlp_loop


def _creeping(rate, *, points=11, every=10, window=50, start=2.31):
    """A plateau test fed L_t = start * exp(-rate * t / window): its log falls ``rate`` a window, exactly."""
    test = PlateauTest(window, every, 1e-3)
    for i in range(points):
        assert test.add(i * every, start * math.exp(-rate * i * every / window)) is None  # progress, to the test
    return test


def test_a_creep_is_told_exactly_where_its_pace_leaves_the_loss_above_the_level():
    rate, left = 0.0014, 200
    test = _creeping(rate)
    now = 2.31 * math.exp(-rate * 100 / 50)
    at_end = now * math.exp(-rate * left / 50)  # closed form: a noiseless line in log, so z * sigma = 0
    assert test.ends_above(left, at_end * 0.999, pace_below=0.03) is not None
    assert test.ends_above(left, at_end * 1.001, pace_below=0.03) is None
    trend = test.ends_above(left, 1.155, pace_below=0.03)
    assert trend.horizon == 100 and trend.progress == pytest.approx(1 - math.exp(-rate), rel=1e-3)
    assert test.ends_above(left, 1.155, pace_below=rate * 0.999) is None  # faster than the pace asked
    assert test.ends_above(10 ** 6, 1.155, pace_below=0.03) is None  # a run long enough to get there


def test_no_creep_before_two_windows_or_for_a_loss_that_is_not_positive():
    assert _creeping(0.0014, points=10).ends_above(200, 1.0, pace_below=0.03) is None  # 90 steps < 100
    test = PlateauTest(50, 10, 1e-3)
    for i in range(11):
        test.add(i * 10, -1.0 - 1e-4 * i)
    assert test.ends_above(200, 0.5, pace_below=0.03) is None


def _digits_loop(eps, *, warmup=False, total_steps=300):
    warm = (lambda opt: torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.9, total_iters=300)) if warmup else None
    return digits_mlp_loop(lambda params: torch.optim.Adam(params, lr=1e-3, eps=eps), make_scheduler=warm,
                           total_steps=total_steps)[1]


def test_adam_with_eps_1_creeps_and_is_named_slow_where_the_plateau_test_never_fires():
    stalls = _digits_loop(1.0)
    assert [(s.step, s.reason, s.verdict) for s in stalls][:1] == [(100, "creep", "slow")]
    ratio = stalls[0].evidence["rate"]["ratio"]
    assert ratio < 1e-2  # eps 1 swamps sqrt(v): the rate is far below what its limit allows
    assert stalls[0].summary().startswith("step 100: the loss creeps at")
    assert _digits_loop(1e-8) == []  # Adam's own eps trains: no alarm
    ramped = _digits_loop(1.0, warmup=True)  # a rate still rising over the whole run (0.9x to 1x)
    assert ramped and all(s.step >= 150 for s in ramped)  # a warm-up excuses the creep in the first half only
    assert ramped[0].verdict == "slow" and ramped[0].remedy.startswith("lower Adam's eps")  # then its cause
    assert _digits_loop(1.0, total_steps=None) == []  # no run length, no projection
