"""What ``data`` means everywhere above this layer: one ``(X, y)`` pair or an iterable of them.

``X`` may be a tensor or a tuple of tensors (a model with several inputs); ``y`` is a tensor
whose first dimension counts the samples, so unequal batches can be weighted by their size.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["as_batches", "batch_size", "is_pair"]


def is_pair(data: Any) -> bool:
    """True when ``data`` is one ``(X, y)`` batch rather than an iterable of batches."""
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and torch.is_tensor(data[1])
        and (torch.is_tensor(data[0]) or (isinstance(data[0], (tuple, list)) and all(map(torch.is_tensor, data[0]))))
    )


def batch_size(X: Any, y: Any) -> int:
    """The number of samples in one batch (from ``y``, else from the first input)."""
    if torch.is_tensor(y) and y.ndim > 0:
        return int(y.shape[0])
    first = X[0] if isinstance(X, (tuple, list)) else X
    return int(first.shape[0])


def as_batches(data: Any, *, stream: bool = False) -> Iterable[tuple[Any, Any]]:
    """``data`` as batches of ``(X, y)``.

    By default the batches are read once into a list, so every pass over them (a Hessian, a
    probe, a line search) sees the same data in the same order. With ``stream=True`` a
    re-iterable source such as a ``DataLoader`` is kept as it is and read again on every pass
    (memory stays at one batch); a one-shot generator is still read into a list.

    Raises:
        ValueError: ``data`` is neither a pair nor an iterable, it has no batches, or a batch's
            inputs and targets differ in length.
    """
    if is_pair(data):
        return [(data[0], data[1])]
    if not isinstance(data, Iterable):
        raise ValueError(f"data must be an (X, y) pair or an iterable of (X, y) batches, got {type(data).__name__}")
    if stream and iter(data) is not data:
        return data
    batches = [(batch[0], batch[1]) for batch in data]
    if not batches:
        raise ValueError("data has no batches")
    for X, y in batches:
        if torch.is_tensor(X) and torch.is_tensor(y) and y.ndim > 0 and len(X) != len(y):
            raise ValueError(f"data: a batch has {len(X)} inputs but {len(y)} targets")
    return batches
