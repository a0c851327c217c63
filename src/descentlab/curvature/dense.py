"""The exact Hessian of one batch's loss, block by block over parameter tensors.

``dense()`` multiplies the Hessian onto basis vectors only, and a basis vector of parameter
tensor ``j`` is zero in every other tensor. So instead of ``n`` full Hessian-vector products
with identity columns, the rows of block ``j`` are one batched backward (``is_grads_batched``)
through the gradient graph, starting from tensor ``j``'s gradient alone with one-hot
cotangents, and, since ``H`` is symmetric, differentiated only with respect to tensors
``j, j+1, …``: the blocks ``H[j, i]`` for ``i >= j``; the blocks below the diagonal are
their transposes.

Why this is faster than ``matmat(eye)``: starting from one tensor's gradient lets autograd
skip every branch of the double-backward graph that tensor's gradient does not depend on,
and asking only for the later tensors prunes the backward below them, so the rows of the
output layers cost a fraction of a full product. The first layer's rows still cost a full
product each (on the digits MLP 64-32-10, 2,048 of them): two batched products with the data
(c x 1797 x 64 x 32 there, one of them 32x wasted on the one-hot direction, which autograd
cannot see), skinny products with the 10 outputs, and elementwise passes over (c, 1797, 32)
tangents. That is why one block can be handed in ``known``: ``curvature.linear_block``
computes an ``nn.Linear``'s block from its per-sample output curvature, far fewer backwards
where that layer holds most of the parameters. The timings on the digits MLP are in
``bench/RESULTS.md`` (``bench/hessian.py``'s ``dense()`` rows time the whole Hessian both ways).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from descentlab.params import Layout

__all__ = ["hessian_by_blocks"]


def hessian_by_blocks(
    grads: Sequence[torch.Tensor | None],
    theta: Sequence[torch.Tensor],
    chunk_size: int,
    known: tuple[Sequence[int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The ``(n, n)`` Hessian, exactly symmetric, from a gradient graph.

    Args:
        grads: the gradient of a scalar loss with respect to each tensor of ``theta``, built
            with ``create_graph=True`` (``None`` for a tensor the loss does not use).
        theta: the parameter tensors (leaves requiring grad), flattened and concatenated in
            this order to index the Hessian.
        chunk_size: the most rows computed by one batched backward.
        known: ``(indices, block)``: the Hessian block of the tensors ``theta[indices]``
            (flattened in that order), found another way (``curvature.linear_block``). Their
            rows are not computed: every other tensor's rows include their columns instead.
    """
    theta = tuple(theta)
    sizes = [p.numel() for p in theta]
    starts = [sum(sizes[:j]) for j in range(len(sizes) + 1)]
    n = starts[-1]
    H = theta[0].new_zeros((n, n))
    tail = list(known[0]) if known is not None else []
    order = [j for j in range(len(theta)) if j not in tail] + tail
    for pos, j in enumerate(order):
        if j in tail:
            break
        lo, hi = starts[j], starts[j + 1]
        g = grads[j]
        if g is not None and g.requires_grad:  # else: the loss is at most linear in theta[j]
            later = order[pos:]
            rows = _rows(g, [theta[i] for i in later], chunk_size)
            for i, part in zip(later, torch.split(rows, [sizes[i] for i in later], dim=1)):
                H[lo:hi, starts[i] : starts[i + 1]] = part
        H[lo:hi, lo:hi] = (H[lo:hi, lo:hi] + H[lo:hi, lo:hi].T) / 2
        for i in order[pos + 1 :]:
            H[starts[i] : starts[i + 1], lo:hi] = H[lo:hi, starts[i] : starts[i + 1]].T
    if tail:
        index = torch.cat([torch.arange(starts[i], starts[i + 1], device=H.device) for i in tail])
        H[index[:, None], index[None, :]] = known[1]
    return H


def _rows(g: torch.Tensor, later: Sequence[torch.Tensor], chunk_size: int) -> torch.Tensor:
    """``(g.numel(), Σ later sizes)``: row ``k`` is the derivative of ``g.flatten()[k]``
    with respect to the tensors ``later``, flattened and concatenated."""
    basis = torch.eye(g.numel(), dtype=g.dtype, device=g.device).reshape(-1, *g.shape)
    layout = Layout.of(later)
    chunks = []
    with torch.enable_grad():
        for i in range(0, len(basis), chunk_size):
            cotangents = basis[i : i + chunk_size]
            hv = torch.autograd.grad(
                g, later, cotangents, retain_graph=True, allow_unused=True, is_grads_batched=True
            )
            chunks.append(layout.flatten(hv, batch_shape=(len(cotangents),), dtype=g.dtype, device=g.device))
    return torch.cat(chunks)
