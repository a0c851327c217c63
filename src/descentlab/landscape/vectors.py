"""A model's trainable parameters as one flat vector, and back.

A landscape point is ``theta = center + sum_i c_i d_i`` in the space of all trainable
parameters; this module fixes the order (``model.named_parameters()``) in which parameter
tensors are laid end to end, so directions, checkpoints and trajectories all agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Layout", "layout_of", "flatten", "unflatten"]


@dataclass(frozen=True)
class Layout:
    """Names and shapes of a model's trainable parameters, in ``named_parameters()`` order."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @property
    def numels(self) -> tuple[int, ...]:
        return tuple(int(torch.Size(shape).numel()) for shape in self.shapes)

    @property
    def n_params(self) -> int:
        """Length of the flat vector."""
        return sum(self.numels)

    def __repr__(self) -> str:
        return f"Layout({len(self.names)} tensors, {self.n_params} parameters)"


def layout_of(model: nn.Module) -> Layout:
    """The layout of ``model``'s parameters that require a gradient."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model: it has no trainable parameters")
    return Layout(tuple(n for n, _ in named), tuple(p.shape for _, p in named))


def flatten(params: nn.Module | Mapping[str, torch.Tensor], layout: Layout | None = None) -> torch.Tensor:
    """One flat, detached vector of the trainable parameters (a model or a ``state_dict``-like map).

    With a map, ``layout`` says which entries to take and in what order (missing names
    raise ``ValueError`` naming them, so a checkpoint of another architecture is refused).
    """
    if isinstance(params, nn.Module):
        layout = layout or layout_of(params)
        params = dict(params.named_parameters())
    elif layout is None:
        raise ValueError("layout: required when flattening a mapping of tensors")
    missing = [name for name in layout.names if name not in params]
    if missing:
        raise ValueError(f"params: missing tensors {', '.join(missing)}")
    parts = []
    for name, shape in zip(layout.names, layout.shapes):
        tensor = params[name].detach()
        if tensor.shape != shape:
            raise ValueError(f"params: {name} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")
        parts.append(tensor.reshape(-1))
    return torch.cat(parts)


def unflatten(vector: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """Split a flat vector (or a batch of them, shape ``(B, n)``) into named parameter tensors.

    A batch gives tensors of shape ``(B, *shape)``: the layout ``torch.func.vmap`` wants.
    """
    if vector.shape[-1] != layout.n_params:
        raise ValueError(f"vector: last dimension {vector.shape[-1]} != {layout.n_params} parameters")
    lead = vector.shape[:-1]
    pieces = torch.split(vector, layout.numels, dim=-1)
    return {name: piece.reshape(tuple(lead) + tuple(shape)) for name, piece, shape in zip(layout.names, pieces, layout.shapes)}
