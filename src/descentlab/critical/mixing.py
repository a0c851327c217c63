"""Whether a model keeps the samples of a batch apart.

A model is meant to give each sample an output of its own. Some code makes a sample's output
depend on the other samples of its batch: an ``nn.LSTM``/``nn.GRU``/``nn.RNN`` built without
``batch_first=True`` and fed ``(batch, time, features)`` runs its recurrence along the batch, an
``nn.TransformerEncoderLayer`` without ``batch_first=True`` attends across it, a softmax or a
normalization taken over ``dim=0`` divides by the batch. Nothing fails; the model learns what it
can of a signal mixed with its neighbours', and its loss stops high.

The test: run the model (in eval mode, where batch-norm reads its running statistics and dropout
is off, so a model that keeps samples apart gives each sample one output whatever its batch) on
the first ``m`` samples and on their second half alone, and compare the second half's outputs (the
half run twice: a forward pass that draws noise even in eval mode, a VAE's sampling, reads nothing).
A model that keeps samples apart gives the same, to rounding; one that mixes them does not (a
recurrence along the batch sees different samples before the second half; attention, a softmax
or a normalization over the batch sees a different set). Two forward passes of ``m / 2`` samples
beside one of ``m``, under a fork of torch's generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from descentlab.curvature import EmpiricalLoss

__all__ = ["Mixing", "sample_mixing", "per_sample_forward", "MIXING_SAMPLES"]

#: At most this many samples are run for the test (and half of them again).
MIXING_SAMPLES = 64


@dataclass(frozen=True)
class Mixing:
    """What :func:`sample_mixing` measured.

    Attributes:
        change: ``‖f(X[h:m]) - f(X[:m])[h:]‖ / ‖f(X[:m])[h:]‖`` with ``h = m // 2``, over every
            rank's samples: the second half's outputs alone against in the whole batch (~1e-7 for a
            model that keeps samples apart, of order 0.1-1 for one that mixes them).
        samples: ``m``, summed over the ranks.
        batch_first_off: the modules built with ``batch_first=False`` (recurrent and attention layers
            whose default it is), by name: what usually mixes them, filled in by the caller.
    """

    change: float
    samples: int
    batch_first_off: tuple[str, ...] = ()


def sample_mixing(forward: Callable[[Any], Any], X: Any, *, samples: int = MIXING_SAMPLES,
                  whole: Any = None) -> Mixing | None:
    """The change of the outputs of the second half of the first ``samples`` samples of ``X`` run
    alone against run with the first half (see the module docstring; ``forward`` runs the model in
    eval mode, without a graph; ``whole``: its outputs on those samples, taken already); ``None``
    where it cannot be read: inputs without a tensor of samples, outputs that are not one tensor of
    them, or fewer than four samples on every rank. Under ``torch.distributed`` every rank takes
    part in one all-reduce."""
    n = _count(X)
    if n is None:
        return None
    m = min(n, samples)
    sums = (0.0, 0.0, float(m))
    if m >= 4:
        device = _device(X)
        try:  # torch's generator left where it was, whatever the forward pass draws
            with torch.random.fork_rng(devices=[device] if device is not None and device.type == "cuda" else []):
                whole = forward(_take(X, 0, m, n)) if whole is None else whole
                half = forward(_take(X, m // 2, m, n))
                again = forward(_take(X, m // 2, m, n))
        except (RuntimeError, ValueError):  # a model built for one batch size (a view to a fixed shape)
            whole = half = again = None
        if not (torch.is_tensor(half) and torch.is_tensor(again) and half.shape == again.shape
                and float((half.double() - again.double()).norm()) <= 1e-6 * float(half.double().norm())):
            whole = None  # a forward pass that draws noise even in eval mode (a VAE's sampling): no reading
        if torch.is_tensor(whole) and torch.is_tensor(half) and whole.dim() and len(whole) == m \
                and whole[m // 2:].shape == half.shape:
            tail = whole[m // 2:].double()
            sums = (float(((half.double() - tail) ** 2).sum()), float((tail ** 2).sum()), float(m))
    sums = torch.tensor(sums, dtype=torch.float64, device=_device(X))  # where a collective can take it
    difference, size, count = EmpiricalLoss.allreduce(sums).tolist()
    if not (math.isfinite(difference) and math.isfinite(size) and size > 0):
        return None
    return Mixing((difference / size) ** 0.5, int(count))


def per_sample_forward(loss: EmpiricalLoss) -> Callable[[Any], Any]:
    """``loss``'s forward pass with batch-norm on its running statistics, whatever ``loss`` reads:
    the function that gives each sample one output whatever its batch, if the model keeps samples
    apart (on the batch's statistics a batch-norm layer mixes them by design)."""
    def forward(X: Any) -> Any:
        saved, loss.batch_statistics = loss.batch_statistics, False
        try:
            return loss.forward(X)
        finally:
            loss.batch_statistics = saved
    return forward


def _tensors(X: Any) -> list[torch.Tensor]:
    if torch.is_tensor(X):
        return [X]
    values = X.values() if isinstance(X, dict) else X if isinstance(X, (tuple, list)) else ()
    return [t for v in values for t in _tensors(v)]


def _count(X: Any) -> int | None:
    """The samples in ``X``: the first dimension of its first tensor (``None``: no tensor)."""
    tensors = [t for t in _tensors(X) if t.dim()]
    return len(tensors[0]) if tensors else None


def _device(X: Any) -> torch.device | None:
    tensors = _tensors(X)
    return tensors[0].device if tensors else None


def _take(X: Any, start: int, stop: int, n: int) -> Any:
    """Samples ``start:stop`` of every tensor in ``X`` that holds ``n`` of them (a tuple, list or dict
    keeps its kind; anything else is passed as it is)."""
    if torch.is_tensor(X):
        return X[start:stop] if X.dim() and len(X) == n else X
    if isinstance(X, dict):
        return {k: _take(v, start, stop, n) for k, v in X.items()}
    if isinstance(X, (tuple, list)):
        return type(X)(_take(v, start, stop, n) for v in X)
    return X
