"""What ``data`` means everywhere above this layer: one ``(X, y)`` pair or an iterable of them.

``X`` may be a tensor or a tuple of tensors (a model with several inputs); ``y`` is a tensor
whose first dimension counts the samples, so unequal batches can be weighted by their size.

With a loss that runs the model itself (:class:`~descentlab.curvature.losses.ModelLoss`) a batch
is whatever the data gives: a tensor (token ids), a tuple of tensors, or a dict of them (a
Hugging Face batch); it is held as ``(batch, None)``, and its size is the first dimension of its
first tensor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["as_batches", "batch_size", "first_tensor", "is_pair", "is_single_batch", "per_sample_values", "take",
           "concat", "move", "call", "non_finite_rows", "Fingerprint"]


def is_pair(data: Any) -> bool:
    """True when ``data`` is one ``(X, y)`` batch rather than an iterable of batches: ``y`` a
    tensor, or a dict of tensors with one first dimension (the targets of several heads)."""
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and (torch.is_tensor(data[1]) or _targets_dict(data[1]))
        and (torch.is_tensor(data[0]) or (isinstance(data[0], (tuple, list)) and all(map(torch.is_tensor, data[0]))))
    )


def _targets_dict(y: Any) -> bool:
    return (isinstance(y, dict) and bool(y) and all(torch.is_tensor(t) and t.ndim > 0 for t in y.values())
            and len({t.shape[0] for t in y.values()}) == 1)


def batch_size(X: Any, y: Any = None) -> int:
    """The number of samples in one batch (from ``y``, else from the first tensor of the inputs)."""
    if torch.is_tensor(y) and y.ndim > 0:
        return int(y.shape[0])
    first = first_tensor(X)
    if first is None:
        raise ValueError(f"a batch must hold a tensor whose first dimension counts its samples, got {type(X).__name__}")
    return int(first.shape[0])


def first_tensor(X: Any) -> torch.Tensor | None:
    """The first tensor of at least one dimension in ``X`` (a tensor, or a tuple, list or dict of
    them, nested), ``None`` where there is none."""
    if torch.is_tensor(X):
        return X if X.ndim > 0 else None
    values = X.values() if isinstance(X, dict) else X if isinstance(X, (tuple, list)) else ()
    return next((t for t in (first_tensor(v) for v in values) if t is not None), None)


def per_sample_values(X: Any) -> bool:
    """``X`` is a list of one value per sample that is no tensor (a collated batch's strings or
    ids: ``default_collate`` gives a dict field of strings as a list): taken and joined as a list."""
    return isinstance(X, list) and bool(X) and not any(isinstance(x, (torch.Tensor, tuple, list, dict)) for x in X)


def take(X: Any, index: torch.Tensor | slice | None) -> Any:
    """The samples ``index`` of ``X`` (a tensor, or a tuple, list or dict of tensors taken alike, or
    a list of :func:`per_sample_values`; ``None`` stays ``None``): a tensor of indices
    (``index_select``, much faster than fancy indexing on the CPU), a slice (a view), or ``None``
    for all of them."""
    if index is None or X is None:
        return X
    if per_sample_values(X):
        return X[index] if isinstance(index, slice) else [X[i] for i in index.tolist()]
    if isinstance(X, dict):
        return {k: take(v, index) for k, v in X.items()}
    if isinstance(X, (tuple, list)):
        return type(X)(take(x, index) for x in X)
    if not torch.is_tensor(X):
        raise ValueError(f"cannot take samples of a {type(X).__name__} in a batch (tensors only)")
    return X[index] if isinstance(index, slice) else X.index_select(0, index.to(X.device))


def concat(parts: list[Any]) -> Any:
    """Batches (tensors, or tuples, lists or dicts of tensors, or lists of
    :func:`per_sample_values`) joined along the sample dimension."""
    if parts[0] is None:
        return None
    if per_sample_values(parts[0]):
        return [x for part in parts for x in part]
    if isinstance(parts[0], dict):
        return {k: concat([p[k] for p in parts]) for k in parts[0]}
    if isinstance(parts[0], (tuple, list)):
        return type(parts[0])(concat(list(column)) for column in zip(*parts))
    return torch.cat(parts)


def is_single_batch(data: Any) -> bool:
    """For a loss that runs the model: ``data`` is one batch (a tensor, a dict of tensors, or a
    tuple of tensors with one first dimension), not an iterable of batches."""
    if torch.is_tensor(data) or isinstance(data, dict):
        return True
    if isinstance(data, tuple) and data and all(torch.is_tensor(t) and t.ndim > 0 for t in data):
        return len({t.shape[0] for t in data}) == 1
    return False


def move(X: Any, device: torch.device | str) -> Any:
    """``X`` (a tensor, or a tuple, list or dict of them; anything else as it is) on ``device``."""
    if torch.is_tensor(X):
        return X.to(device)
    if isinstance(X, dict):
        return {k: move(v, device) for k, v in X.items()}
    if isinstance(X, (tuple, list)):
        return type(X)(move(x, device) for x in X)
    return X


def non_finite_rows(X: Any) -> torch.Tensor | None:
    """Which samples of ``X`` (a tensor, or a tuple, list or dict of them) hold a NaN or an
    infinity in a floating-point tensor: a boolean per sample, ``None`` where ``X`` has no
    floating-point tensor (token ids, class indices)."""
    if torch.is_tensor(X):
        if not X.is_floating_point() or X.ndim == 0:
            return None
        return ~torch.isfinite(X.detach()).flatten(1).all(dim=1) if X.ndim > 1 else ~torch.isfinite(X.detach())
    values = X.values() if isinstance(X, dict) else X if isinstance(X, (tuple, list)) else ()
    out = None
    for rows in (non_finite_rows(v) for v in values):
        if rows is not None:
            out = rows if out is None or out.shape != rows.shape else out | rows
    return out


def call(model: Any, X: Any) -> Any:
    """``model`` on inputs ``X``: ``model(*X)`` for a tuple of inputs, else ``model(X)``."""
    return model(*X) if isinstance(X, (tuple, list)) else model(X)


def as_batches(data: Any, *, stream: bool = False, allow_empty: bool = False,
               model_loss: bool = False) -> Iterable[tuple[Any, Any]]:
    """``data`` as batches of ``(X, y)`` (``model_loss``: of ``(batch, None)``, see the module
    docstring).

    By default the batches are read once into a list, so every pass over them (a Hessian, a
    probe, a line search) sees the same data in the same order. With ``stream=True`` a
    re-iterable source such as a ``DataLoader`` is kept as it is and read again on every pass
    (memory stays at one batch); a one-shot generator is still read into a list.
    ``allow_empty`` accepts no batches at all (a rank without data under ``torch.distributed``).

    Raises:
        ValueError: ``data`` is neither a pair nor an iterable, it has no batches, or a batch's
            inputs and targets differ in length.
    """
    if model_loss:
        return _model_batches(data, stream=stream, allow_empty=allow_empty)
    if is_pair(data):
        return [(data[0], data[1])]
    if not isinstance(data, Iterable):
        raise ValueError(f"data must be an (X, y) pair or an iterable of (X, y) batches, got {type(data).__name__}")
    if stream and iter(data) is not data:
        return data
    batches = [(batch[0], batch[1]) for batch in data]
    if not batches and not allow_empty:
        raise ValueError("data has no batches")
    for X, y in batches:
        if torch.is_tensor(X) and torch.is_tensor(y) and y.ndim > 0 and len(X) != len(y):
            raise ValueError(f"data: a batch has {len(X)} inputs but {len(y)} targets")
    return batches


class _Whole:
    """A re-iterable source of batches for a loss that runs the model: each batch as ``(batch, None)``."""

    def __init__(self, source: Iterable) -> None:
        self.source = source

    def __iter__(self):
        return ((batch, None) for batch in self.source)


def _model_batches(data: Any, *, stream: bool, allow_empty: bool) -> Iterable[tuple[Any, Any]]:
    if is_single_batch(data):
        return [(data, None)]
    if not isinstance(data, Iterable):
        raise ValueError(f"data must be a batch (a tensor, a tuple or dict of tensors) or an iterable of batches, "
                         f"got {type(data).__name__}")
    if stream and not isinstance(data, (list, tuple)) and iter(data) is not data:
        return _Whole(data)  # a loader: read again on every pass
    batches = [(batch, None) for batch in data]
    if not batches and not allow_empty:
        raise ValueError("data has no batches")
    return batches


class Fingerprint:
    """An order-free summary of the samples seen in one pass over the data, to tell whether a
    source gives the same samples on every pass.

    Each sample gets a hash h = Σ_t ⟨t_flat, r_t⟩ over its tensors (inputs and target), with
    fixed random vectors r_t; a pass is summarised by (count, Σ h, Σ h²) in float64. Shuffling
    leaves the summary unchanged (the sums are over the same samples), while a dropped,
    added or augmented sample changes Σ h² by h², far above the rounding of the sums
    (relative 1e-8 allows a million samples summed in another order). Cost per batch: one
    product of its data with a vector, much less than a forward pass.
    """

    _RELATIVE = 1e-8

    def __init__(self) -> None:
        self._vectors: dict[tuple[int, int, str], torch.Tensor] = {}
        self.count = 0
        self._sums: torch.Tensor | None = None

    def add(self, X: Any, y: Any) -> None:
        """Add one batch (on any device; nothing is synchronised until :meth:`summary`)."""
        inputs = X.values() if isinstance(X, dict) else X if isinstance(X, (tuple, list)) else (X,)
        tensors = [*inputs, y]
        n = batch_size(X, y)
        h = None
        for position, t in enumerate(tensors):
            if not torch.is_tensor(t) or t.ndim == 0 or t.shape[0] != n:
                continue
            flat = t.detach().reshape(n, -1).to(torch.float64)
            part = flat @ self._vector(position, flat.shape[1], flat.device)
            h = part if h is None else h + part
        if h is None:
            return
        self.count += n
        sums = torch.stack([h.sum(), (h * h).sum(), h.abs().sum()])
        self._sums = sums if self._sums is None else self._sums + sums

    def summary(self) -> tuple[int, list[float]]:
        """``(count, [Σ h, Σ h², Σ |h|])``."""
        return self.count, ([] if self._sums is None else self._sums.tolist())

    def matches(self, other: "Fingerprint") -> bool:
        """The same samples (up to order) as ``other``."""
        (n, a), (m, b) = self.summary(), other.summary()
        if n != m or len(a) != len(b):
            return False
        if not a:
            return True
        return (abs(a[0] - b[0]) <= self._RELATIVE * max(a[2], b[2])
                and abs(a[1] - b[1]) <= self._RELATIVE * max(a[1], b[1]))

    def _vector(self, position: int, length: int, device: torch.device) -> torch.Tensor:
        key = (position, length, str(device))
        if key not in self._vectors:
            gen = torch.Generator().manual_seed(1_000_003 * position + length)
            self._vectors[key] = torch.randn(length, generator=gen, dtype=torch.float64).to(device)
        return self._vectors[key]
