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
from descentlab.curvature.batches import first_tensor, take

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
    first = first_tensor(X)
    if first is None:
        return None
    m = min(len(first), samples)
    sums = (0.0, 0.0, float(m))
    if m >= 4:
        devices = [first.device] if first.device.type == "cuda" else []
        try:  # torch's generator left where it was, whatever the forward pass draws
            with torch.random.fork_rng(devices=devices):
                whole = forward(take(X, slice(0, m))) if whole is None else whole
                half = forward(take(X, slice(m // 2, m)))
                again = forward(take(X, slice(m // 2, m)))
        except (RuntimeError, ValueError, IndexError):  # a model built for one batch size (a view to a fixed shape)
            whole = half = again = None
        if not (torch.is_tensor(half) and torch.is_tensor(again) and half.shape == again.shape
                and float((half.double() - again.double()).norm()) <= 1e-6 * float(half.double().norm())):
            whole = None  # a forward pass that draws noise even in eval mode (a VAE's sampling): no reading
        if torch.is_tensor(whole) and torch.is_tensor(half) and whole.dim() and len(whole) == m \
                and whole[m // 2:].shape == half.shape:
            tail = whole[m // 2:].double()
            sums = (float(((half.double() - tail) ** 2).sum()), float((tail ** 2).sum()), float(m))
    sums = torch.tensor(sums, dtype=torch.float64, device=first.device)  # where a collective can take it
    difference, size, count = EmpiricalLoss.allreduce(sums).tolist()
    if not (math.isfinite(difference) and math.isfinite(size) and size > 0):
        return None
    return Mixing((difference / size) ** 0.5, int(count))


def per_sample_forward(loss: EmpiricalLoss) -> Callable[[Any], Any]:
    """``loss``'s forward pass with batch-norm on its running statistics, whatever ``loss`` reads:
    the function that gives each sample one output whatever its batch, if the model keeps samples
    apart (on the batch's statistics a batch-norm layer mixes them by design); ``None`` for a model
    that draws random numbers in eval mode (:attr:`~descentlab.curvature.EmpiricalLoss.draws`): a
    half batch draws other numbers than its half of the whole, so no change is the samples'."""
    def forward(X: Any) -> Any:
        saved, loss.batch_statistics = loss.batch_statistics, False
        try:
            out = loss.forward(X)
        finally:
            loss.batch_statistics = saved
        return None if loss.draws else out
    return forward
