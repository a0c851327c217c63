"""What the solvers accept as an operator: anything with ``shape`` and ``@``, or a dense matrix.

The eigen-solvers, trace and density estimators take an operator, never a model, so they run
unchanged on a plain symmetric matrix (their tests), a :class:`HessianOperator`, or any other
curvature operator with the same two members.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

__all__ = ["SymmetricOperator", "as_operator"]


class SymmetricOperator(Protocol):
    """A symmetric linear map on flat vectors: ``shape == (n, n)`` and ``op @ V`` for ``V`` of
    shape ``(n,)`` or ``(n, k)``; optionally ``dtype`` and ``device``."""

    shape: tuple[int, int]

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor: ...


class _Wrapped:
    """Counts products and fixes dtype/device, whatever the operator is."""

    def __init__(self, op: Any) -> None:
        if torch.is_tensor(op):
            if op.ndim != 2 or op.shape[0] != op.shape[1]:
                raise ValueError(f"op must be a square matrix, got shape {tuple(op.shape)}")
            if not op.is_floating_point():
                raise ValueError(f"op must be a floating-point matrix, got {op.dtype}")
        elif not (hasattr(op, "shape") and hasattr(op, "__matmul__")):
            raise ValueError(f"op must be a square tensor or an operator with shape and @, got {type(op).__name__}")
        n, m = (int(s) for s in op.shape)
        if n != m:
            raise ValueError(f"op must be square, got shape {(n, m)}")
        self.op = op
        self.n = n
        self.dtype = getattr(op, "dtype", torch.get_default_dtype())
        self.device = getattr(op, "device", torch.device("cpu"))
        self.n_matvecs = 0

    def __matmul__(self, V: torch.Tensor) -> torch.Tensor:
        self.n_matvecs += 1 if V.ndim == 1 else V.shape[1]
        return self.op @ V

    def dense(self) -> torch.Tensor:
        if torch.is_tensor(self.op):
            return self.op
        if hasattr(self.op, "dense"):
            return self.op.dense()
        return self @ torch.eye(self.n, dtype=self.dtype, device=self.device)


def as_operator(op: Any) -> _Wrapped:
    """Wrap ``op`` (a dense square tensor or an operator) so products are counted."""
    return op if isinstance(op, _Wrapped) else _Wrapped(op)
