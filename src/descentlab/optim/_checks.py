"""Argument checks shared by the optimizers written here (torch.optim's style of message);
the number checks are the package's own (:mod:`descentlab.checks`).

Every check raises ``ValueError`` whose message starts with the argument's name, so a
caller (or the CLI) can tell at once which hyperparameter is wrong and what was expected.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from descentlab.checks import check_int, check_number

__all__ = ["check_number", "check_betas", "check_int", "dense_grads"]


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

