"""Optimizer paths on surfaces: the real registry classes, checked against the course's formulas."""

import math

import pytest
import torch

from descentlab.errors import UserInputError
from descentlab.experiments.trajectories import default_lr, run_trajectories, tune_learning_rates
from descentlab.problems.surfaces import get_surface

NEAR = 0.5  # "near the saddle": within this distance of (0, 0)


def _gd_on_saddle(start, lr, steps):
    # L = x^2 - y^2: x <- (1 - 2 lr) x, y <- (1 + 2 lr) y, in closed form
    t = torch.arange(steps + 1, dtype=torch.float64)
    return torch.stack([start[0] * (1 - 2 * lr) ** t, start[1] * (1 + 2 * lr) ** t], dim=-1)


def _momentum_on_saddle(start, lr, steps, beta=0.9):
    # the lecture's momentum: m <- beta m - lr g; theta <- theta + m (torch's SGD writes it
    # as v <- beta v + g; theta <- theta - lr v, the same sequence)
    theta, m, path = list(start), [0.0, 0.0], [tuple(start)]
    for _ in range(steps):
        g = (2 * theta[0], -2 * theta[1])
        m = [beta * m[i] - lr * g[i] for i in range(2)]
        theta = [theta[i] + m[i] for i in range(2)]
        path.append(tuple(theta))
    return torch.tensor(path, dtype=torch.float64)


def _adam_on_saddle(start, lr, steps, b1=0.9, b2=0.999, eps=1e-8):
    # Kingma & Ba, Algorithm 1, written out
    theta, m, v, path = list(start), [0.0, 0.0], [0.0, 0.0], [tuple(start)]
    for t in range(1, steps + 1):
        g = (2 * theta[0], -2 * theta[1])
        for i in range(2):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            theta[i] -= lr * (m[i] / (1 - b1**t)) / (math.sqrt(v[i] / (1 - b2**t)) + eps)
        path.append(tuple(theta))
    return torch.tensor(path, dtype=torch.float64)


def _steps_near(path):
    return int((path.norm(dim=-1) < NEAR).sum())


def test_paths_follow_the_formulas_and_gd_lingers_at_the_saddle():
    surface = get_surface("saddle")
    start, steps = surface.starts[0], surface.steps  # (1, 1e-3), 300 steps, lr 0.01 for all three
    assert start == (1.0, 1e-3) and steps == 300
    runs = run_trajectories(surface, ["sgd", "momentum", "adam"])
    assert all(t.lr == 0.01 for t in runs.paths)
    gd, momentum, adam = (_gd_on_saddle(start, 0.01, steps), _momentum_on_saddle(start, 0.01, steps),
                          _adam_on_saddle(start, 0.01, steps))
    assert torch.allclose(runs["sgd"].path, gd, rtol=1e-12, atol=1e-14)
    # momentum escapes to |y| ~ 1e10 within 300 steps: compare relative to the size
    assert torch.allclose(runs["momentum"].path, momentum, rtol=1e-9, atol=1e-12)
    assert torch.allclose(runs["adam"].path, adam, rtol=1e-9, atol=1e-12)
    counts = {name: _steps_near(runs[name].path) for name in ("sgd", "momentum", "adam")}
    # GD: 266 of its 301 points within 0.5 of the saddle; momentum 57; Adam none (its first
    # step already moves y by lr, and x shrinks by lr per step, so it never comes close)
    assert counts == {"sgd": _steps_near(gd), "momentum": _steps_near(momentum), "adam": _steps_near(adam)}
    assert counts == {"sgd": 266, "momentum": 57, "adam": 0}
    assert counts["sgd"] >= 4 * max(counts["momentum"], counts["adam"])


def test_double_well_gd_stays_shallow_and_momentum_rolls_deep():
    surface = get_surface("double-well")
    # dL/dx = 4x^3 - 4x + 0.3 (y = 0): numpy's polynomial roots as the oracle
    import numpy as np

    deep, bump, shallow = sorted(np.roots([4.0, 0.0, -4.0, 0.3]).real)
    runs = run_trajectories(surface, ["sgd", "momentum", "nesterov"])  # shipped start, lr, steps
    assert math.dist(runs["sgd"].final_point, (shallow, 0.0)) < 1e-2
    assert math.dist(runs["momentum"].final_point, (deep, 0.0)) < 1e-2
    assert math.dist(runs["nesterov"].final_point, (deep, 0.0)) < 1e-2
    assert runs["momentum"].final_loss < runs["sgd"].final_loss
    # momentum really went over the bump: its path crossed x = bump
    assert bool((runs["momentum"].path[:, 0] < bump).any()) and not bool((runs["sgd"].path[:, 0] < bump).any())


def test_trajectories_are_deterministic_and_losses_match_the_points():
    surface = get_surface("himmelblau")
    a = run_trajectories(surface, ["sgd", "nesterov", "rmsprop", "adagrad"], steps=60)
    b = run_trajectories(surface, ["sgd", "nesterov", "rmsprop", "adagrad"], steps=60)
    for x, y in zip(a.paths, b.paths):
        assert torch.equal(x.path, y.path) and torch.equal(x.losses, y.losses)
        assert x.path.shape == (61, 2)
        assert torch.allclose(x.losses, surface(x.path))
    assert a.paths[0].path[0].tolist() == list(surface.starts[0])
    assert "final_loss" in repr(a.paths[0])


def test_divergence_stops_the_path():
    run = run_trajectories(get_surface("rosenbrock"), ["sgd"], steps=50, lr=0.5)
    losses = run["sgd"].losses
    assert math.isinf(run["sgd"].final_loss) and torch.isfinite(run["sgd"].path).all()
    first_bad = int(torch.nonzero(~torch.isfinite(losses))[0])
    assert first_bad > 0 and torch.isinf(losses[first_bad:]).all()


def test_learning_rate_defaults_follow_the_optimizer_family():
    surface = get_surface("rosenbrock")
    assert default_lr(surface, "sgd") == default_lr(surface, "nesterov") == surface.lr
    assert default_lr(surface, "adam") == default_lr(surface, "rmsprop") == surface.step_size
    assert default_lr(surface, "adadelta") == 1.0
    run = run_trajectories(surface, ["sgd", "adam"], steps=3, lr={"adam": 0.2})
    assert (run["sgd"].lr, run["adam"].lr) == (surface.lr, 0.2)


def test_tuning_keeps_the_best_final_loss_and_rejects_divergence():
    surface = get_surface("rosenbrock")
    grid = (1e-4, 1e-3, 1e-2)  # 1e-2 diverges for GD from (-1.5, 2)
    tuning = tune_learning_rates(surface, ["sgd", "adam"], steps=40, grid=grid, max_widenings=0)
    assert math.isinf(tuning.final_losses["sgd"][2])
    from descentlab.optim.registry import WRAPPERS

    for name in ("sgd", "adam", *(["lookahead:adam"] if "lookahead" in WRAPPERS else [])):
        # the grid runs side by side in one optimizer (parameter groups): each must equal a lone run
        finals = [run_trajectories(surface, [name], steps=40, lr=rate)[name].final_loss for rate in grid]
        if name == "lookahead:adam":
            tuned = tune_learning_rates(surface, [name], steps=40, grid=grid, max_widenings=0)
        else:
            tuned = tuning
        assert list(tuned.final_losses[name]) == pytest.approx(finals, rel=1e-12)
        assert tuned.chosen[name] == grid[min(range(3), key=lambda i: finals[i])]


def test_tuning_widens_the_grid_until_the_best_rate_is_inside():
    # adam's best of (1e-4, 1e-3, 1e-2) on Rosenbrock at 40 steps is the top rate: the grid goes on up a
    # decade at a time; oracle: lone runs at every rate tried, and the chosen one has a rate on both sides
    surface = get_surface("rosenbrock")
    tuning = tune_learning_rates(surface, ["adam"], steps=40, grid=(1e-4, 1e-3, 1e-2))
    rates = tuning.rates["adam"]
    assert rates[:3] == pytest.approx((1e-4, 1e-3, 1e-2)) and len(rates) > 3
    assert all(b / a == pytest.approx(10.0) for a, b in zip(rates, rates[1:]))
    finals = [run_trajectories(surface, ["adam"], steps=40, lr=rate)["adam"].final_loss for rate in rates]
    assert list(tuning.final_losses["adam"]) == pytest.approx(finals, rel=1e-12)
    chosen = tuning.chosen["adam"]
    assert chosen == rates[min(range(len(rates)), key=lambda i: finals[i])]
    assert rates[0] < chosen < rates[-1] and tuning.edges["adam"] is None


def test_bad_arguments():
    surface = get_surface("lecture")
    with pytest.raises(UserInputError, match="valid: .*adam"):
        run_trajectories(surface, ["adamm"])
    with pytest.raises(ValueError, match="steps"):
        run_trajectories(surface, ["sgd"], steps=0)
    with pytest.raises(ValueError, match="start"):
        run_trajectories(surface, ["sgd"], start=(1.0,))
    with pytest.raises(ValueError, match="lr"):
        run_trajectories(surface, ["sgd"], lr=-1.0)
    with pytest.raises(ValueError, match="grid"):
        tune_learning_rates(surface, ["sgd"], grid=(0.0,))


def test_registry_wrappers_run_when_registered():
    from descentlab.optim.registry import WRAPPERS

    if "lookahead" not in WRAPPERS:
        pytest.skip("the optim helper has not registered lookahead yet")
    run = run_trajectories(get_surface("himmelblau"), ["lookahead:adam", "adam"], steps=30)
    assert not torch.equal(run["lookahead:adam"].path, run["adam"].path)
    assert run["lookahead:adam"].final_loss < run["lookahead:adam"].losses[0]
