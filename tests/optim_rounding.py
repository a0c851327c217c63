"""The tolerance of the optimizer parity tests: how far float64 rounding alone moves a run.

torch's kernels differ from a numpy oracle (and from each other, across kernel paths and CPU
capabilities) only in rounding: fused multiply-adds or not, vectorised sqrt and division,
another summation order. That is a few float64 roundings (eps = 2.2e-16) a step, which the
iteration carries along and, where it is ill-conditioned, amplifies: RMSprop near the minimum
divides a small gradient by a small root-mean-square, and there a few roundings grow to 1e-8.
So the tolerance is measured on the oracle itself: rerun it with every gradient perturbed by
up to a few roundings, and take ten times the larger of that spread and one rounding a step.
A mistake in a formula moves the runs much further: RMSprop's eps under the root instead of
beside it moves its run by 5e-6, 35 times its tolerance (1.5e-7); a wrong constant, a missing
bias correction or decay through the momentum buffer by 1e-4 or more.
"""

from __future__ import annotations

import contextlib

import numpy as np

EPS = float(np.finfo(np.float64).eps)


def relative_error(actual, expected) -> float:
    """``max |actual - expected| / (1 + |expected|)``: within ``tol`` iff ``assert_allclose(rtol=atol=tol)`` passes."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(actual - expected) / (1 + np.abs(expected))))


@contextlib.contextmanager
def perturbed_gradients(module, seed: int, roundings: float = 4.0):
    """Within the block, ``module.grad(theta)`` returns the gradient times ``1 + u``, ``|u| <= roundings * eps / 2``."""
    clean, rng = module.grad, np.random.default_rng(seed)
    module.grad = lambda theta: clean(theta) * (1 + rng.uniform(-roundings, roundings, np.shape(theta)) * EPS / 2)
    try:
        yield
    finally:
        module.grad = clean


def tolerance(oracle, module, steps: int, seeds: int = 3) -> float:
    """``10 * max(steps * eps, spread)``, the spread being the largest relative change of
    ``oracle()`` over ``seeds`` runs with perturbed gradients (see the module docstring)."""
    expected = oracle()
    spread = 0.0
    for seed in range(seeds):
        with perturbed_gradients(module, seed):
            spread = max(spread, relative_error(oracle(), expected))
    return 10 * max(steps * EPS, spread)
