"""The plateau test: the fitted trend against numpy's least squares, and when it fires."""

import math

import numpy as np
import pytest

from descentlab.critical.plateau import PlateauTest, fit_trend


def test_fit_trend_matches_numpy_least_squares():
    rng = np.random.default_rng(0)
    steps = np.arange(0, 110, 10)
    losses = 2.0 - 0.003 * steps + 0.01 * rng.standard_normal(steps.size)
    trend = fit_trend(steps.tolist(), losses.tolist(), window=50)
    # oracle: numpy's polyfit with its covariance (the textbook OLS standard error of the slope)
    (slope, intercept), cov = np.polyfit(steps, losses, 1, cov="unscaled")
    residuals = losses - (slope * steps + intercept)
    sigma2 = residuals @ residuals / (steps.size - 2)
    level = losses.mean()
    # float64 sums of 11 terms: agreement to ~1e-12 relative
    assert trend.progress == pytest.approx(-slope * 50 / level, rel=1e-10)
    assert trend.std_error == pytest.approx(math.sqrt(sigma2 * cov[0, 0]) * 50 / level, rel=1e-10)
    assert trend.noise == pytest.approx(math.sqrt(sigma2), rel=1e-10)
    assert trend.level == pytest.approx(level) and trend.horizon == 100


def _run(losses, window=50, every=10, rel_tol=1e-3):
    test = PlateauTest(window, every, rel_tol)
    fired = []
    for i, loss in enumerate(losses):
        trend = test.add(i * every, loss)
        if trend is not None:
            fired.append((i * every, trend))
            test.rearm(trend)
    return fired


def test_a_flat_deterministic_loss_fires_after_two_windows():
    fired = _run([1.0] * 30)
    assert fired[0][0] == 100 and fired[0][1].confident  # 11 evaluations = two windows of 50 steps


def test_steady_progress_never_fires_even_with_heavy_noise():
    rng = np.random.default_rng(1)
    steps = np.arange(0, 3000, 10)
    # 1 % relative progress per window under 3 % jitter: noisy, but going down
    clean = np.exp(-0.01 * steps / 50)
    losses = clean * (1 + 0.03 * rng.standard_normal(steps.size))
    assert _run(losses.tolist()) == []


def test_a_noise_floor_fires_within_the_longest_horizon():
    rng = np.random.default_rng(2)
    losses = (0.3 * (1 + 0.1 * rng.standard_normal(200))).tolist()  # stationary 10 % jitter
    fired = _run(losses)
    assert fired and fired[0][0] <= 8 * 50


def test_a_loss_bouncing_above_where_it_began_fires_at_four_windows_not_before():
    """Jitter too large for a confident plateau, and no step below the first loss: from four
    windows (200 steps) on that is no progress, before the longest horizon (400 steps) would
    fire; the same jitter around a falling loss never fires."""
    rng = np.random.default_rng(3)
    bounce = 2.3 + 0.3 * np.abs(rng.standard_normal(60))  # every loss above the first, 2.3
    fired = _run([2.3, *bounce.tolist()])
    assert fired and 200 <= fired[0][0] < 400 and not fired[0][1].confident
    steps = np.arange(0, 600, 10)  # the same jitter on a loss falling 5 % per window
    falling = 2.3 * np.exp(-0.05 * steps / 50) + 0.3 * np.abs(rng.standard_normal(steps.size))
    assert _run([2.3, *falling[1:].tolist()]) == []


def test_rearm_stays_quiet_until_the_loss_leaves_the_plateau():
    flat = [1.0] * 40
    lower = [0.9] * 40
    fired = _run(flat + lower)
    # the first plateau at step 100; then silence on it; the drop re-arms; the new plateau fires
    assert [step for step, _ in fired] == [100, 500]


def test_points_once_a_window_then_every_check_give_the_fit_of_the_points_in_the_horizon():
    """A history read once a window while the loss fell fast, then at every check: each horizon
    is the points within its steps of the latest (numpy's least squares on exactly those)."""
    test = PlateauTest(50, 10, 1e-3)
    steps = [0, 50, 100, 150] + list(range(160, 260, 10))
    losses = [2.0, 1.0, 0.5, 0.3] + [0.3] * 10
    for step, loss in zip(steps, losses):
        trend = test.add(step, loss)
    # horizon 2 windows at step 250: the points from step 150 on, 11 of them, all at 0.3
    assert trend is not None and trend.confident and trend.n_points == 11 and trend.horizon == 100
    (slope, _), = [np.polyfit(steps[3:], losses[3:], 1)]
    assert trend.progress == pytest.approx(-slope * 50 / 0.3, abs=1e-12)


def test_a_sparse_history_does_not_fire_before_it_covers_two_windows():
    test = PlateauTest(50, 10, 1e-3)
    assert [test.add(step, 1.0) for step in (0, 50)] == [None, None]  # 50 steps: one window, not two
    assert test.add(100, 1.0).n_points == 3  # three flat points over two windows


def test_progress_is_the_sure_relative_fall_per_window():
    """The fall of the loss's logarithm per window, less three standard errors: over a window of
    three points or more from their fitted line (numpy's least squares the oracle); over a window
    read at its ends only, the change between the two less three times √2 the jitter last
    measured. A loss falling exponentially is a line there: its progress is its rate, surely."""
    test = PlateauTest(50, 10, 1e-3)
    assert test.progress() is None
    steps, losses = [0, 10, 20, 30, 40, 50], [2.0, 1.8, 1.65, 1.5, 1.3, 1.2]
    for step, loss in zip(steps, losses):
        test.add(step, loss)
    logs = np.log(losses)
    (slope, intercept), cov = np.polyfit(steps, logs, 1, cov="unscaled")
    residuals = logs - (slope * np.array(steps) + intercept)
    sigma = math.sqrt(residuals @ residuals / (len(steps) - 2))
    expected = -slope * 50 - 3 * sigma * math.sqrt(cov[0, 0]) * 50
    assert test.progress() == pytest.approx(expected, rel=1e-9) and test.noise == pytest.approx(sigma, rel=1e-9)
    test.add(100, 0.9)  # read once a window: the two ends, 50 and 100
    assert test.progress() == pytest.approx(math.log(1.2 / 0.9) - 3 * math.sqrt(2) * sigma, rel=1e-9)
    falling = PlateauTest(50, 10, 1e-3)
    for step in range(0, 60, 10):
        falling.add(step, 3.0 * math.exp(-0.02 * step))  # 2 % a step: e^-1 a window
    assert falling.progress() == pytest.approx(1.0, rel=1e-9)


def test_early_progress_reads_the_points_before_a_window_with_the_same_line():
    """Before a window is covered :meth:`progress` has nothing to say; ``early_progress`` fits the
    line through every point so far (three at least: numpy's least squares the oracle) and keeps
    the jitter measured over a window (:attr:`noise`) as it was. An exponential fall reads its
    rate exactly; once a window is covered it is ``progress``'s turn (``None``)."""
    test = PlateauTest(50, 10, 1e-3)
    test.add(0, 2.0)
    test.add(10, 1.9)
    assert test.early_progress() is None  # two points
    test.add(20, 1.85)
    steps, logs = np.array([0, 10, 20]), np.log([2.0, 1.9, 1.85])
    (slope, intercept), cov = np.polyfit(steps, logs, 1, cov="unscaled")
    residuals = logs - (slope * steps + intercept)
    sigma = math.sqrt(residuals @ residuals / (len(steps) - 2))
    assert test.early_progress() == pytest.approx(-slope * 50 - 3 * sigma * math.sqrt(cov[0, 0]) * 50, rel=1e-9)
    assert test.noise == 0.0 and test.progress() is None
    falling = PlateauTest(50, 10, 1e-3)
    for step in (0, 10, 20, 30):
        falling.add(step, 3.0 * math.exp(-0.02 * step))
    assert falling.early_progress() == pytest.approx(1.0, rel=1e-9)
    falling.add(50, 3.0 * math.exp(-1.0))
    assert falling.early_progress() is None and falling.progress() == pytest.approx(1.0, rel=1e-9)


def test_early_plateau_is_the_confident_test_on_the_points_before_a_window():
    """A loss that has not moved since the start is a plateau at its third point: |P| + 3 sigma_P of
    numpy's least-squares line below rel_tol. A loss falling 1e-4 a step (0.25 % a window at 2.0)
    is not, however steady, nor one rising as fast; nor a flat loss read at two points, or once a
    window is covered (then :meth:`check` decides)."""
    flat = PlateauTest(50, 10, 1e-3)
    values = [2.0, 2.0 + 1e-6, 2.0 - 1e-6]
    for step, value in zip((0, 10, 20), values):
        flat.add(step, value)
        if step < 20:
            assert flat.early_plateau() is None
    (slope, intercept), cov = np.polyfit([0, 10, 20], values, 1, cov="unscaled")
    residuals = np.array(values) - np.polyval([slope, intercept], [0, 10, 20])
    sigma = math.sqrt(residuals @ residuals / (3 - 2) * cov[0, 0])
    level = sum(values) / 3
    assert abs(slope) * 50 / level + 3 * sigma * 50 / level < 1e-3  # the oracle's own verdict
    trend = flat.early_plateau()
    assert trend is not None and trend.confident
    assert trend.progress == pytest.approx(-slope * 50 / level, rel=1e-9, abs=1e-15)
    slow = PlateauTest(50, 10, 1e-3)
    for step in (0, 10, 20):
        slow.add(step, 2.0 - 1e-4 * step)
    assert slow.early_plateau() is None  # P = 2.5e-3 a window, no jitter
    rising = PlateauTest(50, 10, 1e-3)
    for step in (0, 10, 20):
        rising.add(step, 2.0 + 1e-3 * step)
    assert rising.early_plateau() is None  # P = -0.024 a window: moving, if the wrong way
    for step in (30, 40, 50):
        flat.add(step, 2.0)
    assert flat.early_plateau() is None  # a window covered: check()'s turn


def test_a_horizon_is_fitted_from_the_last_point_at_or_before_its_start():
    """Read at steps 0, 50, 100, then every 10: at step 170 the two-window horizon starts at 70,
    and its fit starts at 50 (the last point at or before 70), so it spans 120 steps, never
    fewer than the horizon."""
    test = PlateauTest(50, 10, 1e-3)
    for step in [0, 50, 100, *range(110, 171, 10)]:
        trend = test.add(step, 1.0)
    assert trend is not None and trend.horizon == 120 and trend.n_points == 9


@pytest.mark.parametrize("early", [0.0, -1e-9])
def test_a_loss_of_zero_before_the_points_read_is_not_read(early):
    """Full-batch Rprop on the digits MLP reached a loss of exactly 0, then 1e-8 again: the log of
    that earlier 0 stopped the user's loop inside ``update`` (math domain error), though the fit
    never reads it. Oracle: the same history with that point at any positive loss."""
    histories = []
    for first in (early, 0.5):
        test = PlateauTest(50, 10, 1e-3)
        losses = [2.3, 1.0, first] + [1e-8 * (1 + 0.01 * (k % 3)) for k in range(40)]
        for k, loss in enumerate(losses):
            test.add(10 * k, loss)
        histories.append(test.progress())
    assert histories[0] is not None and histories[0] == histories[1]
