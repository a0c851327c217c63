"""Whether a loss pairs each output with its own target.

A loss written ``loss_fn(model(x), y)`` is meant to compare output ``i`` with target ``i``. Given
outputs shaped ``(N, 1)`` and targets shaped ``(N,)``, ``F.mse_loss`` (or ``((out - y) ** 2).mean()``)
broadcasts them to ``(N, N)`` and compares every output with every target: its gradient at output
``i``, ``2/N² Σ_j (o_i - y_j)``, is the same whichever target is sample ``i``'s, so no model can do
better than predicting the targets' mean, and the loss stops at their variance. Nothing fails and
the loss does fall at first, to that floor: a plateau that reads as a slow or converged run.

The test needs no knowledge of the loss: move every sample's target to its neighbour (a roll by
one along the samples) and compare the gradient of the loss with respect to the outputs before and
after. A loss that pairs outputs with targets changes it at every sample whose target changed; one
that does not leaves it unchanged up to rounding. Only the loss function is evaluated, on the
outputs already computed: two backward passes through it, no forward pass of the model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from descentlab.curvature import EmpiricalLoss

__all__ = ["Pairing", "target_pairing"]


@dataclass(frozen=True)
class Pairing:
    """What :func:`target_pairing` measured.

    Attributes:
        change: ``‖G' - G‖ / ‖G‖``, the gradient of the loss at the outputs with every target
            moved to the next sample (G') against the gradient with the targets in place (G), over
            every rank's samples: of order 1 for a loss that pairs, ~1e-7 for one that does not.
        outputs, targets: the shape of one sample's output and target (the shapes past the samples'
            dimension, alike on every rank): ``(1,)`` and ``()`` for outputs (N, 1) against targets (N,).
    """

    change: float
    outputs: tuple[int, ...]
    targets: tuple[int, ...]


def target_pairing(loss_fn: Callable[[Any, Any], torch.Tensor], outputs: Any, y: Any) -> Pairing | None:
    """How much the gradient of ``loss_fn(outputs, y)`` at the outputs changes when every target is
    moved to the next sample (see the module docstring); ``None`` where it cannot be read: outputs
    or targets that are not tensors with a sample dimension, or on no rank two samples of one length
    whose targets differ and whose loss has a finite, non-zero gradient at the outputs. Under
    ``torch.distributed`` every rank that gets this far takes part in one all-reduce, whatever its
    own samples allow (a rank's share counts as nothing there)."""
    if not (torch.is_tensor(outputs) and torch.is_tensor(y) and outputs.is_floating_point()
            and outputs.dim() >= 1 and y.dim() >= 1):
        return None
    sums = _squared_changes(loss_fn, outputs, y) or (0.0, 0.0)
    sums = torch.tensor(sums, dtype=torch.float64, device=outputs.device)  # where a collective can take it
    difference, size = EmpiricalLoss.allreduce(sums).tolist()
    if not (math.isfinite(difference) and math.isfinite(size) and size > 0):
        return None
    return Pairing((difference / size) ** 0.5, tuple(outputs.shape[1:]), tuple(y.shape[1:]))


def _squared_changes(loss_fn: Callable[[Any, Any], torch.Tensor], outputs: torch.Tensor,
                     y: torch.Tensor) -> tuple[float, float] | None:
    """``(‖G' - G‖², ‖G‖²)`` on this rank's samples (:class:`Pairing`), ``None`` where they cannot
    be read."""
    if not outputs.shape[0] == y.shape[0] >= 2:
        return None
    if torch.finfo(outputs.dtype).bits < 32:  # half precision's rounding would blur the two gradients
        outputs, y = outputs.float(), (y.float() if y.is_floating_point() else y)
    moved = y.roll(1, dims=0)
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
    before, after = before.double(), after.double()
    return float(((after - before) ** 2).sum()), float((before ** 2).sum())
