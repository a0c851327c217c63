"""Points of a network that are the same point up to its symmetries, found and merged.

A network with one hidden layer, ``x -> W2 act(W1 x + b1) + b2``, computes the same function
(and has the same loss, gradient norm and Hessian spectrum) after any permutation of its hidden
units, and, when ``act`` is odd (``tanh``, ``softsign``, ``hardtanh``: ``act(-z) = -act(z)``),
after flipping the sign of a unit's incoming weights, bias and outgoing weights together. So
K trained networks that look like K critical points may be a few points found many times over:
counting them as K would inflate every count and correlation of a study (Dauphin et al.'s
question is how many *distinct* critical points have which spectrum).

- :func:`hidden_units_of` recognises the structure (``Sequential(Linear, activation, Linear)``)
  and says where each unit's numbers lie in the flat vector (:mod:`descentlab.params`);
- :func:`canonical` is one representative of a point's orbit: each unit's sign fixed (its
  largest-magnitude number made positive), then the units sorted;
- :func:`orbit_distance` is the distance between two points minimised over the whole group:
  sign choices are independent per matched pair of units, so the minimum over permutations
  and signs is one linear assignment problem (``scipy.optimize.linear_sum_assignment``) on the
  costs ``min(||u_i - v_j||^2, ||u_i + v_j||^2)``;
- :func:`merge_duplicates` groups points whose orbit distance is within a tolerance.

Only these discrete symmetries are merged. A model without the structure is compared by plain
distance. Continuous families (a unit whose outgoing weight is zero leaves its incoming weights
free; ReLU's positive rescalings) are not merged: such points stay apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from descentlab.params import Layout, layout_of

__all__ = ["HiddenUnits", "hidden_units_of", "unit_vectors", "canonical", "orbit_distance", "merge_duplicates",
           "ODD_ACTIVATIONS"]

#: Elementwise activations with ``act(-z) = -act(z)``: a unit's sign flip is a symmetry.
ODD_ACTIVATIONS = (nn.Tanh, nn.Softsign, nn.Hardtanh, nn.Identity)
_ELEMENTWISE = ODD_ACTIVATIONS + (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Softplus)


@dataclass(frozen=True)
class HiddenUnits:
    """Where the hidden units of ``x -> W2 act(W1 x + b1) + b2`` lie in the flat vector.

    Attributes:
        layout: the model's :class:`~descentlab.params.Layout`.
        incoming, incoming_bias, outgoing, outgoing_bias: the parameter names of ``W1``, ``b1``
            (``None`` without), ``W2`` and ``b2`` (``None`` without).
        odd: the activation is odd, so sign flips are symmetries too.
        n_inputs, n_units, n_outputs: the widths.
    """

    layout: Layout
    incoming: str
    incoming_bias: str | None
    outgoing: str
    outgoing_bias: str | None
    odd: bool
    n_inputs: int
    n_units: int
    n_outputs: int

    @property
    def symmetries(self) -> str:
        """The group in words, for a report."""
        flips = " and sign flips (odd activation)" if self.odd else ""
        return f"permutations of the {self.n_units} hidden units{flips}"


def hidden_units_of(model: nn.Module) -> HiddenUnits | None:
    """The hidden units of ``model`` when it is ``Sequential(Linear, elementwise activation, Linear)``
    with every parameter trainable; ``None`` otherwise (then only plain distances apply)."""
    if not isinstance(model, nn.Sequential) or len(model) != 3:
        return None
    first, act, last = model
    if not (isinstance(first, nn.Linear) and isinstance(last, nn.Linear) and isinstance(act, _ELEMENTWISE)):
        return None
    layout = layout_of(model)
    names = dict(model.named_parameters())
    if len(names) != len(layout.names):  # a frozen parameter would not be in the flat vector
        return None
    return HiddenUnits(layout=layout, incoming="0.weight", incoming_bias="0.bias" if first.bias is not None else None,
                       outgoing="2.weight", outgoing_bias="2.bias" if last.bias is not None else None,
                       odd=isinstance(act, ODD_ACTIVATIONS), n_inputs=first.in_features, n_units=first.out_features,
                       n_outputs=last.out_features)


def unit_vectors(theta: torch.Tensor, units: HiddenUnits) -> tuple[torch.Tensor, torch.Tensor]:
    """Each hidden unit's numbers ``[W1[j], b1[j], W2[:, j]]`` as rows ``(..., units, m)``, and the
    numbers that belong to no unit (``b2``) ``(..., r)``, of flat points ``theta`` ``(..., P)``."""
    parts = units.layout.unflatten(theta)
    pieces = [parts[units.incoming]]
    if units.incoming_bias is not None:
        pieces.append(parts[units.incoming_bias].unsqueeze(-1))
    pieces.append(parts[units.outgoing].transpose(-1, -2))
    rest = parts[units.outgoing_bias] if units.outgoing_bias is not None else theta.new_zeros(theta.shape[:-1] + (0,))
    return torch.cat(pieces, dim=-1), rest


def _flat(vectors: torch.Tensor, rest: torch.Tensor, units: HiddenUnits) -> torch.Tensor:
    """The inverse of :func:`unit_vectors` for one point."""
    n_in = units.n_inputs
    tensors = {units.incoming: vectors[:, :n_in], units.outgoing: vectors[:, -units.n_outputs:].T}
    if units.incoming_bias is not None:
        tensors[units.incoming_bias] = vectors[:, n_in]
    if units.outgoing_bias is not None:
        tensors[units.outgoing_bias] = rest
    return units.layout.flatten(tensors)


def canonical(theta: torch.Tensor, units: HiddenUnits) -> torch.Tensor:
    """One representative of the orbit of the flat point ``theta`` ``(P,)``: with an odd activation
    each unit's sign is flipped so that its largest-magnitude number is positive, then the units
    are sorted by their numbers (lexicographically). A point and any permuted or sign-flipped
    copy of it give the same vector."""
    vectors, rest = unit_vectors(theta.detach(), units)
    if units.odd:
        largest = vectors.abs().argmax(dim=1)
        signs = torch.sign(vectors.gather(1, largest.unsqueeze(1))).squeeze(1)
        vectors = vectors * torch.where(signs == 0, torch.ones_like(signs), signs).unsqueeze(1)
    order = sorted(range(len(vectors)), key=lambda j: vectors[j].tolist())
    return _flat(vectors[order], rest, units)


def orbit_distance(a: torch.Tensor, b: torch.Tensor, units: HiddenUnits | None) -> float:
    """``min over symmetries s of ||a - s(b)||`` for flat points ``a``, ``b`` ``(P,)`` (the plain
    distance when ``units`` is ``None``): one linear assignment of ``b``'s units to ``a``'s."""
    if units is None:
        return float((a - b).norm())
    from scipy.optimize import linear_sum_assignment

    u, rest_a = unit_vectors(a.detach().double(), units)
    v, rest_b = unit_vectors(b.detach().double(), units)
    cost = torch.cdist(u, v) ** 2
    if units.odd:
        cost = torch.minimum(cost, torch.cdist(u, -v) ** 2)
    rows, cols = linear_sum_assignment(cost.numpy())
    total = float(cost[rows, cols].sum()) + float(((rest_a - rest_b) ** 2).sum())
    return max(total, 0.0) ** 0.5


def merge_duplicates(points: torch.Tensor, units: HiddenUnits | None, tol: float,
                     order: Sequence[int] | None = None) -> list[list[int]]:
    """Groups of the rows of ``points`` ``(K, P)`` that are one point up to the symmetries.

    Points are visited in ``order`` (default: as given); each joins the first group whose first
    point (its representative) is within ``tol * max(1, ||representative||)`` in
    :func:`orbit_distance`, or starts a new group. Returns the groups, each a list of row
    indices with the representative first, in the order they were started.
    """
    if not tol >= 0:
        raise ValueError(f"tol: must be a number >= 0, got {tol}")
    groups: list[list[int]] = []
    for i in (range(len(points)) if order is None else order):
        for group in groups:
            representative = points[group[0]]
            if orbit_distance(representative, points[i], units) <= tol * max(1.0, float(representative.norm())):
                group.append(int(i))
                break
        else:
            groups.append([int(i)])
    return groups
