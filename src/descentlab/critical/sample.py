"""The stall monitor's fixed sample of the training data: drawn once, seeded, and without
touching the run it is drawn from.

A ``DataLoader`` that shuffles draws its order from torch's global generator; reading it
would shift every later draw of the training run (its batches, its dropout masks), so the
sample is read under :func:`torch.random.fork_rng`, which restores the generator afterwards.
"""

from __future__ import annotations

from typing import Any

import torch

from descentlab.curvature.batches import batch_size as count_of
from descentlab.curvature.batches import concat, is_pair, take

__all__ = ["fixed_sample", "in_memory_batches", "in_memory_pair"]


def fixed_sample(data: Any, size: int | None, seed: int = 0) -> tuple[tuple[Any, torch.Tensor], int | None]:
    """``((X, y), n_data)``: a seeded sample of at most ``size`` samples of ``data`` as one batch,
    and the number of samples ``data`` holds (``None`` when an iterable does not say).

    A pair ``(X, y)`` gives a random subset (in data order); an iterable of batches gives its
    first batches, read until ``size`` samples are there (a ``DataLoader`` is not read further).
    ``size=None`` keeps everything.
    """
    if is_pair(data):
        X, y = data
        n = count_of(X, y)
        if size is None or n <= size:
            return (X, y), n
        index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values
        return (take(X, index.to(y.device)), y[index.to(y.device)]), n
    parts, count = [], 0
    with torch.random.fork_rng(devices=[]):
        for batch in data:
            X, y = batch[0], batch[1]
            parts.append((X, y))
            count += count_of(X, y)
            if size is not None and count >= size:
                break
    if not parts:
        raise ValueError("data has no batches")
    if isinstance(data, (list, tuple)):
        n_data = sum(count_of(X, y) for X, y in (b[:2] for b in data))
    elif hasattr(data, "dataset") and hasattr(data.dataset, "__len__"):
        n_data = len(data.dataset)
    else:
        n_data = None
    X = concat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    if size is not None and len(y) > size:
        X, y = take(X, slice(0, size)), y[:size]
    return (X, y), n_data


def in_memory_batches(data: Any, limit: int, chunk: int | None) -> list | None:
    """``data`` as a list of batches of at most ``chunk`` samples when it is in memory (a pair
    or a list of batches) and holds at most ``limit`` samples; else ``None``."""
    if is_pair(data):
        X, y = data
        n = count_of(X, y)
        if n > limit:
            return None
        step = n if chunk is None else chunk
        return [(take(X, slice(i, i + step)), y[i:i + step]) for i in range(0, n, step)]
    if isinstance(data, (list, tuple)):
        batches = [(b[0], b[1]) for b in data]
        return batches if sum(count_of(X, y) for X, y in batches) <= limit else None
    return None


def in_memory_pair(data: Any, limit: int) -> tuple[Any, torch.Tensor] | None:
    """``data`` as one ``(X, y)`` pair when it is in memory (a pair, or a list of batches) with
    at most ``limit`` samples (what remedy trials draw their batches from); else ``None``."""
    if is_pair(data):
        return (data[0], data[1]) if count_of(data[0], data[1]) <= limit else None
    batches = in_memory_batches(data, limit, None)
    if not batches:
        return None
    return concat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
