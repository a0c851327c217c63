"""Parameter tensors laid end to end as one flat vector, and back: the package's one flattener.

Every flat vector in descentlab -- a point θ, a gradient, a direction, a Hessian-vector
product, an eigenvector, one row of a stacked ensemble, an optimizer's scratch buffer -- lays
its parameter tensors end to end, each flattened row-major, in one fixed order: the order of
``model.named_parameters()`` (the order of ``torch.nn.utils.parameters_to_vector``, so vectors
from either agree). A :class:`Layout` records that order (names and shapes);
:meth:`Layout.flatten` and :func:`split` are the two directions. Both keep leading batch
dimensions: ``(B, *shape)`` tensors are ``(B, n)`` rows, the layout ``torch.func.vmap`` and
stacked ensembles use.

It lives beside ``checks.py`` rather than in a layer because every layer needs it, the
optimizers (``optim/``, the lowest user) included; it imports nothing from descentlab.

    >>> model = torch.nn.Linear(3, 2)                                  # doctest: +SKIP
    >>> layout = layout_of(model)                 # ('weight', 'bias'), shapes (2, 3) and (2,)
    >>> theta = flatten(model)                    # (8,): weight row by row, then bias
    >>> layout.unflatten(theta)["bias"]           # the bias again, shape (2,)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["Layout", "layout_of", "flatten", "unflatten", "split", "sparse_embeddings"]


@dataclass(frozen=True)
class Layout:
    """Names and shapes of parameter tensors, in the order their values lie in a flat vector.

    Attributes:
        names: one name per tensor (for a model: its ``named_parameters()`` names).
        shapes: the tensors' shapes, ``shapes[i]`` of ``names[i]``.
        numels: elements of each tensor (derived).
        n_params: length of the flat vector (derived).
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...] = field(init=False, repr=False, compare=False)
    n_params: int = field(init=False, repr=False, compare=False)
    # the shapes as plain tuples: reshaping to a tuple is faster than to a torch.Size, and
    # ``tuple + torch.Size`` builds a torch.Size (this runs in every Hessian-vector product)
    _dims: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names, shapes = tuple(self.names), tuple(torch.Size(s) for s in self.shapes)
        if len(names) != len(shapes):
            raise ValueError(f"shapes: {len(shapes)} shapes for {len(names)} names")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "numels", tuple(s.numel() for s in shapes))
        object.__setattr__(self, "n_params", sum(self.numels))
        object.__setattr__(self, "_dims", tuple(tuple(s) for s in shapes))

    @classmethod
    def of(cls, tensors: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> Layout:
        """The layout of ``tensors``: a mapping in its own order, or a sequence (named ``"0"``, ``"1"``, ...)."""
        if isinstance(tensors, Mapping):
            return cls(tuple(tensors), tuple(t.shape for t in tensors.values()))
        tensors = list(tensors)
        return cls(tuple(str(i) for i in range(len(tensors))), tuple(t.shape for t in tensors))

    def __repr__(self) -> str:
        return f"Layout({len(self.names)} tensors, {self.n_params} parameters)"

    def flatten(self, tensors: Sequence[torch.Tensor | None] | Mapping[str, torch.Tensor], *,
                batch_shape: Sequence[int] = (), dtype: torch.dtype | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
        """The tensors laid end to end: ``(*batch_shape, n_params)``.

        Args:
            tensors: one per name, in order (a sequence), or by name (a mapping such as a
                ``state_dict``: missing names raise ``ValueError`` naming them, other
                entries are ignored). ``None`` stands for zeros: a parameter that got no
                gradient (``torch.autograd.grad(..., allow_unused=True)``).
            batch_shape: leading dimensions every tensor has before its own shape.
            dtype, device: of the zeros standing for ``None`` entries (default: those of the
                first tensor given).

        The result is a new tensor, attached to the autograd graph of its inputs (a gradient
        built with ``create_graph=True`` stays differentiable); it is never a view of them.
        """
        if isinstance(tensors, Mapping):
            missing = [name for name in self.names if name not in tensors]
            if missing:
                raise ValueError(f"params: missing tensors {', '.join(missing)}")
            tensors = [tensors[name] for name in self.names]
        else:
            tensors = list(tensors)
            if len(tensors) != len(self.names):
                raise ValueError(f"tensors: {len(tensors)} given, the layout has {len(self.names)}")
        lead = tuple(batch_shape)
        parts = []
        for name, shape, tensor in zip(self.names, self._dims, tensors):
            if tensor is None:
                first = next((t for t in tensors if t is not None), None)
                tensor = torch.zeros(lead + shape, dtype=dtype or (first.dtype if first is not None else None),
                                     device=device or (first.device if first is not None else None))
            elif tensor.shape != lead + shape:
                raise ValueError(f"params: {name} has shape {tuple(tensor.shape)}, expected {lead + shape}")
            parts.append(tensor.reshape(lead + (-1,)) if lead else tensor.reshape(-1))
        return torch.cat(parts, dim=-1)

    def split(self, vector: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The per-tensor views of a flat vector ``(*batch, n_params)``, each ``(*batch, *shape)``."""
        if vector.dim() == 0 or vector.shape[-1] != self.n_params:
            length = vector.shape[-1] if vector.dim() else "(a scalar)"
            raise ValueError(f"vector: last dimension {length} != {self.n_params} parameters")
        lead = tuple(vector.shape[:-1])
        pieces = torch.split(vector, self.numels, dim=-1)
        return tuple(piece.reshape(lead + shape) for piece, shape in zip(pieces, self._dims))

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: view}`` of a flat vector (or rows ``(B, n)``: views ``(B, *shape)``)."""
        return dict(zip(self.names, self.split(vector)))


def split(vector: torch.Tensor, shapes: Iterable[Sequence[int]]) -> tuple[torch.Tensor, ...]:
    """Views of consecutive pieces of ``vector``'s last dimension, shaped ``(*batch, *shape)``.

    The pieces of a contiguous vector are views of it: writing into them writes into the
    vector (an optimizer's scratch buffer is carved up this way).
    """
    shapes = [torch.Size(s) for s in shapes]
    lead = tuple(vector.shape[:-1])
    pieces = torch.split(vector, [s.numel() for s in shapes], dim=-1)
    return tuple(piece.reshape(lead + tuple(s)) for piece, s in zip(pieces, shapes))


def layout_of(model: nn.Module) -> Layout:
    """The layout of ``model``'s parameters that require a gradient, in ``named_parameters()`` order."""
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not named:
        raise ValueError("model: it has no trainable parameters")
    return Layout.of(named)


def flatten(params: nn.Module | Mapping[str, torch.Tensor], layout: Layout | None = None) -> torch.Tensor:
    """The *values* of a model's trainable parameters (or of a ``state_dict``-like map) as one
    flat, detached vector.

    With a map, ``layout`` says which entries to take and in what order (missing names or
    other shapes raise ``ValueError`` naming them, so a checkpoint of another architecture is
    refused); with a model it defaults to :func:`layout_of`.
    """
    if isinstance(params, nn.Module):
        layout = layout or layout_of(params)
        params = dict(params.named_parameters())
    elif layout is None:
        raise ValueError("layout: required when flattening a mapping of tensors")
    if not isinstance(params, Mapping):
        raise ValueError(f"params: expected a model or a mapping of tensors, got {type(params).__name__}")
    return layout.flatten({name: params[name].detach() for name in layout.names if name in params})


def unflatten(vector: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """Split a flat vector (or rows ``(B, n)``) into named views: :meth:`Layout.unflatten`."""
    return layout.unflatten(vector)


def sparse_embeddings(model: nn.Module) -> list[nn.Module]:
    """The ``nn.Embedding`` and ``nn.EmbeddingBag`` modules of ``model`` built with ``sparse=True``:
    backward gives their weights a sparse gradient, which no flat vector, stacked weight or
    dense-only optimizer (Adam) takes."""
    return [m for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse]
