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
from descentlab.curvature.batches import concat, is_pair, is_single_batch, take

__all__ = ["fixed_sample", "in_memory_batches", "in_memory_pair"]


def fixed_sample(data: Any, size: int | None, seed: int = 0, *, model_loss: bool = False) -> tuple[Any, int | None]:
    """``(sample, n_data)``: a seeded sample of at most ``size`` samples of ``data`` as one batch,
    and the number of samples ``data`` holds (``None`` when an iterable does not say). The sample
    is an ``(X, y)`` pair, or with ``model_loss`` (a loss that runs the model) one batch in the
    data's own form (a tensor, a tuple or a dict of tensors).

    One batch in memory gives a random subset (in data order); an iterable of batches gives its
    first batches, read until ``size`` samples are there (a ``DataLoader`` is not read further,
    and reading it leaves torch's global generator where it was). ``size=None`` keeps everything.
    """
    whole = is_single_batch(data) if model_loss else is_pair(data)
    if whole:
        X, y = (data, None) if model_loss else data
        n = count_of(X, y)
        if size is None or n <= size:
            return data, n
        index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values
        return _as_data(take(X, index), take(y, index), model_loss), n
    parts, count = [], 0
    with torch.random.fork_rng(devices=[]):
        for batch in data:
            X, y = (batch, None) if model_loss else (batch[0], batch[1])
            parts.append((X, y))
            count += count_of(X, y)
            if size is not None and count >= size:
                break
    if not parts:
        raise ValueError("data has no batches")
    if isinstance(data, (list, tuple)):
        n_data = sum(count_of(*((b, None) if model_loss else b[:2])) for b in data)
    elif hasattr(data, "dataset") and hasattr(data.dataset, "__len__"):
        n_data = len(data.dataset)
    else:
        n_data = None
    X, y = concat([p[0] for p in parts]), concat([p[1] for p in parts])
    if size is not None and count_of(X, y) > size:
        X, y = take(X, slice(0, size)), take(y, slice(0, size))
    return _as_data(X, y, model_loss), n_data


def _as_data(X: Any, y: Any, model_loss: bool) -> Any:
    return X if model_loss else (X, y)


def in_memory_batches(data: Any, limit: int, chunk: int | None, *, model_loss: bool = False) -> list | None:
    """``data`` as a list of batches of at most ``chunk`` samples (each as the loss takes data)
    when it is in memory (one batch, or a list of batches) and holds at most ``limit``
    samples; else ``None``."""
    if is_single_batch(data) if model_loss else is_pair(data):
        X, y = (data, None) if model_loss else data
        n = count_of(X, y)
        if n > limit:
            return None
        step = n if chunk is None else chunk
        return [_as_data(take(X, slice(i, i + step)), take(y, slice(i, i + step)), model_loss)
                for i in range(0, n, step)]
    if isinstance(data, (list, tuple)):
        batches = [b if model_loss else (b[0], b[1]) for b in data]
        total = sum(count_of(*((b, None) if model_loss else b)) for b in batches)
        return batches if total <= limit else None
    return None


def in_memory_pair(data: Any, limit: int, *, model_loss: bool = False) -> tuple[Any, Any] | None:
    """``data`` as one ``(X, y)`` pair (``(batch, None)`` with ``model_loss``) when it is in
    memory with at most ``limit`` samples (what remedy trials draw their batches from); else
    ``None``."""
    batches = in_memory_batches(data, limit, None, model_loss=model_loss)
    if not batches:
        return None
    pairs = [(b, None) if model_loss else b for b in batches]
    return concat([p[0] for p in pairs]), concat([p[1] for p in pairs])
