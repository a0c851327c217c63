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

__all__ = ["check_number", "check_betas", "check_int", "dense_grads", "fused_supported"]


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


def fused_supported(tensors: Iterable[torch.Tensor]) -> bool:
    """True when one call of torch's fused kernels takes every tensor (one floating dtype, one supported device)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    tensors = list(tensors)
    if not tensors or not tensors[0].dtype.is_floating_point:
        return False
    first, dtype = tensors[0], tensors[0].dtype
    # One kernel call takes one device and dtype; mixed lists go the foreach way. This runs on
    # every step, so CPU lists are checked with the cheap ``is_cpu`` (``t.device`` builds an object).
    if first.is_cpu:
        same = all(t.is_cpu and t.dtype is dtype for t in tensors)
    else:
        same = all(t.device == first.device and t.dtype is dtype for t in tensors)
    return (same and first.device.type in _get_fused_kernels_supported_devices()
            and all(type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors))
