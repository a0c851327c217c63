"""Argument checks shared by the optimizers written here (torch.optim's style of message).

Every check raises ``ValueError`` whose message starts with the argument's name, so a
caller (or the CLI) can tell at once which hyperparameter is wrong and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["check_number", "check_betas", "check_int", "dense_grads"]


def check_number(name: str, value: Any, *, low: float = 0.0, high: float = math.inf,
                 low_open: bool = False, high_open: bool = True) -> float:
    """``value`` as a float, or ``ValueError`` naming ``name`` unless it lies in the given interval."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if math.isnan(value) or below or above:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {left}{low:g}, {high:g}{right}, got {value!r}")
    return value


def check_int(name: str, value: Any, *, low: int = 1) -> int:
    """``value`` as an int ``>= low``, or ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_betas(value: Any) -> tuple[float, float]:
    """``betas`` as two floats in [0, 1), or ``ValueError`` naming ``betas``."""
    try:
        beta1, beta2 = value
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {value!r}") from None
    return (check_number("betas[0]", beta1, high=1.0), check_number("betas[1]", beta2, high=1.0))


def dense_grads(name: str, grads: Iterable[torch.Tensor]) -> None:
    """Raise a clear ``RuntimeError`` (torch.optim's convention) when any gradient is sparse."""
    if any(g.is_sparse for g in grads):
        raise RuntimeError(f"{name} does not support sparse gradients; use dense gradients "
                           "(e.g. nn.Embedding(sparse=False)) or torch.optim.SparseAdam")

