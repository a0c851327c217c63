"""``nn.EmbeddingBag`` written with operations torch differentiates twice, for the data layer.

Torch implements no derivative of ``_embedding_bag_backward``, so a Hessian-vector product through
an embedding bag (a bag-of-tokens text classifier, PyTorch's own text tutorial model) raises
``NotImplementedError``. The same function is an ``F.embedding`` lookup reduced per bag (a sum, a
mean over the bag's tokens that are not ``padding_idx``, a max), which every order of autograd
goes through. :func:`twice_differentiable_bags` gives each bag that forward for the while, as the
data layer (:class:`~descentlab.curvature.EmpiricalLoss`) gives sparse embeddings dense gradients:
the values are the module's own (``tests/test_embedding_bags.py`` holds them against
``nn.EmbeddingBag``), and the user's module is restored after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["bag_forward", "twice_differentiable_bags"]


def bag_forward(bag: nn.EmbeddingBag, input: torch.Tensor, offsets: torch.Tensor | None = None,
                per_sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """``bag(input, offsets, per_sample_weights)`` by ``F.embedding`` and a reduction per bag: a 2-D
    ``input`` is one bag per row; a 1-D one is cut into bags at ``offsets`` (``include_last_offset``
    as the module says). A bag with no token but padding gives zeros, as ``nn.EmbeddingBag`` does.
    ``mode="max"`` over offsets is left to the module (a second derivative through it then raises
    torch's ``NotImplementedError``, which the products' check reports)."""
    if bag.mode == "max" and input.dim() != 2:  # bags of several lengths: no max per bag written here, the
        return nn.EmbeddingBag.forward(bag, input, offsets, per_sample_weights)  # module's own (one derivative)
    if input.dim() == 2:
        bags = torch.arange(input.shape[0], device=input.device).repeat_interleave(input.shape[1])
        tokens, count = input.reshape(-1), input.shape[0]
        weights = None if per_sample_weights is None else per_sample_weights.reshape(-1)
    else:
        starts = offsets[:-1] if bag.include_last_offset else offsets
        count = len(starts)
        ends = torch.cat([starts[1:], starts.new_tensor([len(input)])]) if not bag.include_last_offset else offsets[1:]
        bags = torch.repeat_interleave(torch.arange(count, device=input.device), ends - starts)
        tokens, weights = input, per_sample_weights
    rows = F.embedding(tokens, bag.weight, max_norm=bag.max_norm, norm_type=bag.norm_type)
    kept = torch.ones(len(tokens), dtype=rows.dtype, device=rows.device)
    if bag.padding_idx is not None:
        kept = (tokens != bag.padding_idx).to(rows.dtype)
    rows = rows * kept[:, None]
    if weights is not None:
        rows = rows * weights[:, None].to(rows.dtype)
    if bag.mode == "max":  # bags of one length (a 2-D input): max's backward is an index, differentiable
        rows = rows.masked_fill(kept[:, None] == 0, float("-inf")).view(count, input.shape[1], -1)
        out = rows.max(dim=1).values
        return torch.where(torch.isinf(out), torch.zeros_like(out), out)
    out = rows.new_zeros((count, rows.shape[1])).index_add(0, bags, rows)
    if bag.mode == "mean":
        sizes = kept.new_zeros(count).index_add(0, bags, kept)
        out = out / sizes.clamp(min=1)[:, None]
    return out


@contextlib.contextmanager
def twice_differentiable_bags(bags: list[nn.EmbeddingBag]) -> Iterator[None]:
    """Each of ``bags`` runs :func:`bag_forward` for the while; its own ``forward`` after."""
    own = [bag.__dict__.get("forward") for bag in bags]  # a forward set on the instance, kept
    for bag in bags:
        bag.forward = lambda *args, _bag=bag, **kwargs: bag_forward(_bag, *args, **kwargs)
    try:
        yield
    finally:
        for bag, forward in zip(bags, own):
            if forward is None:
                del bag.forward
            else:
                bag.forward = forward
