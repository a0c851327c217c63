"""The stall monitor's fixed sample of the training data: drawn once, seeded, and without
touching the run it is drawn from.

A ``DataLoader`` that shuffles draws its order from torch's global generator; reading it
would shift every later draw of the training run (its batches, its dropout masks), so the
sample is read under :func:`torch.random.fork_rng`, which restores the generator afterwards.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch

from descentlab.curvature.batches import batch_size as count_of
from descentlab.curvature.batches import concat, is_pair, is_single_batch, take

__all__ = ["fixed_sample", "first_batch", "order_evidence", "in_memory_batches", "in_memory_pair", "loader_batch_size"]


def loader_batch_size(data: Any) -> int | None:
    """The samples of one batch of a ``DataLoader`` (its ``batch_size``, or its batch sampler's),
    ``None`` for other data or batches of no fixed size."""
    size = getattr(data, "batch_size", None) or getattr(getattr(data, "batch_sampler", None), "batch_size", None)
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def fixed_sample(data: Any, size: int | None, seed: int = 0, *, model_loss: bool = False) -> tuple[Any, int | None]:
    """``(sample, n_data)``: a seeded sample of at most ``size`` samples of ``data`` as one batch,
    and the number of samples ``data`` holds (``None`` when an iterable does not say). The sample
    is an ``(X, y)`` pair, or with ``model_loss`` (a loss that runs the model) one batch in the
    data's own form (a tensor, a tuple or a dict of tensors).

    One batch in memory gives a random subset (in data order); an iterable of batches gives its
    first batches, read until ``size`` samples are there (a ``DataLoader`` is not read further,
    and reading it leaves torch's global generator where it was; a one-shot iterator loses those
    batches, and a warning says so). A ``DataLoader`` that reads its
    dataset in order (``shuffle=False``) is not read at all: its first batches are the data's
    first samples, all of one class where the data is sorted by class, so the sample is a seeded
    random subset of its dataset, collated by the loader's own ``collate_fn``
    (:func:`_in_order`). ``size=None`` keeps everything.
    """
    if _in_order(data) and size is not None and len(data.dataset) > size:
        n = len(data.dataset)
        index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values
        with torch.random.fork_rng(devices=[]):  # a dataset that augments draws from the global generator
            batch = data.collate_fn([data.dataset[int(i)] for i in index])
        return (batch if model_loss else (batch[0], batch[1])), n
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
    if isinstance(data, Iterator):  # a generator: what was read is gone from it (iter() on a loader draws a seed)
        warnings.warn(f"data is a one-shot iterator: the monitor's sample took its first {len(parts)} batches "
                      f"({count} samples), which a loop training from the same iterator will not see; pass the "
                      "DataLoader or a list of batches to leave yours as they are", stacklevel=4)
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


def first_batch(data: Any, *, model_loss: bool = False) -> Any:
    """The data's first batch, whole, as the loss takes data (``(X, y)``, or for a loss that runs
    the model a list holding the batch); ``None`` for a one-shot iterator (reading it would take
    the batch from the loop). A loader's batch is read under :func:`torch.random.fork_rng`."""
    if is_single_batch(data) if model_loss else is_pair(data):
        return [data] if model_loss else data
    if isinstance(data, Iterator):
        return None
    with torch.random.fork_rng(devices=[]):
        batch = next(iter(data), None)
    if batch is None:
        return None
    return [batch] if model_loss else (batch[0], batch[1])


def order_evidence(data: Any, sample: Any, *, model_loss: bool = False) -> dict[str, Any] | None:
    """For a ``DataLoader`` read in its order (:func:`_in_order`) whose batches carry class labels
    (1-D integers: the pair's second tensor, a batch's last, or a dict's ``label(s)``): how far
    its first batch's classes are from the (random) sample's, as the total variation distance of
    the two histograms (0: the same shares; 1: no class in common). ``None`` otherwise. The first
    batch is read from a fresh iterator, torch's global generator restored after it."""
    if not _in_order(data):
        return None
    with torch.random.fork_rng(devices=[]):
        first = next(iter(data), None)
    ours, theirs = _class_labels(first, model_loss), _class_labels(sample, model_loss)
    if ours is None or theirs is None:
        return None
    size = int(max(ours.max(), theirs.max())) + 1
    p, q = (torch.bincount(t.cpu(), minlength=size).double() / len(t) for t in (ours, theirs))
    return {"sampler": "sequential", "first_batch_classes": int((p > 0).sum()), "sample_classes": int((q > 0).sum()),
            "distance": float(0.5 * (p - q).abs().sum())}


def _class_labels(batch: Any, model_loss: bool) -> torch.Tensor | None:
    if batch is None:
        return None
    if isinstance(batch, dict):
        labels = batch.get("labels", batch.get("label"))
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        labels = batch[-1] if model_loss else batch[1]
    else:
        labels = None
    ok = isinstance(labels, torch.Tensor) and labels.ndim == 1 and not labels.is_floating_point() and len(labels)
    return labels if ok and int(labels.min()) >= 0 else None


def _in_order(data: Any) -> bool:
    """A ``DataLoader`` over a dataset with a length, read in its order: batches of its own
    sequential sampler (not a ``batch_sampler`` of the user's, which orders the data its own way)."""
    if not (isinstance(data, torch.utils.data.DataLoader) and hasattr(data.dataset, "__len__")):
        return False
    batches = data.batch_sampler
    return (isinstance(data.sampler, torch.utils.data.SequentialSampler)
            and type(batches) is torch.utils.data.BatchSampler and batches.sampler is data.sampler)


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
