"""Whether a loss pairs each output with its own target.

A loss written ``loss_fn(model(x), y)`` is meant to compare output ``i`` with target ``i``. Given
outputs shaped ``(N, 1)`` and targets shaped ``(N,)``, ``F.mse_loss`` (or ``((out - y) ** 2).mean()``)
broadcasts them to ``(N, N)`` and compares every output with every target: its gradient at output
``i``, ``2/N² Σ_j (o_i - y_j)``, is the same whichever target is sample ``i``'s, so no model can do
better than predicting the targets' mean, and the loss stops at their variance. Nothing fails and
the loss does fall at first, to that floor: a plateau that reads as a slow or converged run.

The test needs no knowledge of the loss: give the first half of the samples the second half's
targets (a permutation among them would not do: a broadcast reads the targets as a set) and compare
how the gradient of the loss with respect to the outputs changes at those samples and at the others.
A loss that pairs outputs with targets changes it at the samples whose targets moved and nowhere
else (exactly: output ``i``'s gradient reads target ``i`` alone); one that broadcasts changes it
everywhere alike (``2/N² Σ_{j moved} δ_j`` at every output). The ratio of the two does not depend on
how far the outputs are from the targets. Only the loss function is evaluated, on the outputs
already computed: two backward passes through it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from descentlab.curvature import EmpiricalLoss
from descentlab.curvature.empirical import UPCAST

__all__ = ["Pairing", "target_pairing"]


@dataclass(frozen=True)
class Pairing:
    """What :func:`target_pairing` measured.

    Attributes:
        leak: ``‖ΔG_rest‖ / ‖ΔG_moved‖``: the change of the loss's gradient at the outputs whose
            targets stayed against the change at those whose targets moved (the first half's), over
            every rank's samples: 0 for a loss that pairs each output with its own target (a small
            share for a weighted mean, whose denominator reads every target), ~1 for one that
            compares every output with every target.
        outputs, targets: the shape of one sample's output and target (the shapes past the samples'
            dimension, alike on every rank): ``(1,)`` and ``()`` for outputs (N, 1) against targets (N,).
    """

    leak: float
    outputs: tuple[int, ...]
    targets: tuple[int, ...]


def target_pairing(loss_fn: Callable[[Any, Any], torch.Tensor], outputs: Any, y: Any) -> Pairing | None:
    """How much the gradient of ``loss_fn(outputs, y)`` at the outputs changes at the samples whose
    targets stay against those whose targets move (see the module docstring); ``None`` where it
    cannot be read: outputs or targets that are not tensors with a sample dimension, or on no rank
    four samples of one length whose moved targets differ and whose loss has a finite gradient at
    the outputs. Under ``torch.distributed`` every rank that gets this far takes part in one
    all-reduce, whatever its own samples allow (a rank's share counts as nothing there)."""
    if not (torch.is_tensor(outputs) and torch.is_tensor(y) and outputs.is_floating_point()
            and outputs.dim() >= 1 and y.dim() >= 1):
        return None
    sums = _squared_changes(loss_fn, outputs, y) or (0.0, 0.0)
    sums = torch.tensor(sums, dtype=torch.float64, device=outputs.device)  # where a collective can take it
    rest, moved = EmpiricalLoss.allreduce(sums).tolist()
    if not (math.isfinite(rest) and math.isfinite(moved) and moved > 0):
        return None
    return Pairing((rest / moved) ** 0.5, tuple(outputs.shape[1:]), tuple(y.shape[1:]))


def _squared_changes(loss_fn: Callable[[Any, Any], torch.Tensor], outputs: torch.Tensor,
                     y: torch.Tensor) -> tuple[float, float] | None:
    """``(‖ΔG_rest‖², ‖ΔG_moved‖²)`` on this rank's samples (:class:`Pairing`), ``None`` where they
    cannot be read."""
    n = outputs.shape[0]
    if not n == y.shape[0] >= 4:
        return None
    if outputs.dtype in UPCAST:  # half precision's rounding would blur the two gradients
        outputs, y = outputs.float(), (y.float() if y.is_floating_point() else y)
    half = n // 2
    moved = torch.cat([y[half:2 * half], y[half:]])  # the first half given the second half's targets
    if bool((moved == y).all()):
        return None
    out = outputs.detach().clone().requires_grad_(True)
    try:
        # torch warns of the broadcast the user's own loop already made; the loss is read twice here
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            before, = torch.autograd.grad(loss_fn(out, y), out)
            after, = torch.autograd.grad(loss_fn(out, moved), out)
    except (RuntimeError, TypeError, ValueError):  # a loss that takes no gradient here: nothing to read
        return None
    change = (after.double() - before.double()) ** 2
    return float(change[half:].sum()), float(change[:half].sum())
