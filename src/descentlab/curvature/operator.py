"""A curvature matrix of the loss over the data as a linear operator: ``M @ v`` without forming ``M``.

:class:`CurvatureOperator` is the linear-operator half of the data layer: a curvature matrix
of the loss over the data is the same weighted sum over batches as the loss,

    M v = Σ_b w_b · M_b v,       (w_b = n_b / N for a mean loss, 1 for a sum)

so a subclass says only how one batch's matrix multiplies rows of vectors
(``_batch_product``); the batch loop, weighting, eval-mode policy, data check and all-reduce
come from :class:`~descentlab.curvature.empirical.EmpiricalLoss`, and this class adds the
operator surface: ``shape``, ``op @ v`` / ``op @ V`` (one batched product per chunk of
columns, not a Python loop), ``dense()``, ``to_scipy()`` and ``op - other``. Products run on
one OpenMP thread where the work is too small to share (:mod:`descentlab.openmp`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from descentlab.checks import check_int
from descentlab.curvature.empirical import EmpiricalLoss
from descentlab.openmp import threads_for

__all__ = ["CurvatureOperator", "DifferenceOperator", "DENSE_LIMIT"]

#: ``dense()`` refuses above this many parameters: the float64 matrix alone would be 800 MB.
DENSE_LIMIT = 10_000


class CurvatureOperator(EmpiricalLoss):
    """Base of the curvature operators (:class:`~descentlab.curvature.HessianOperator`,
    :class:`~descentlab.curvature.GGNOperator`): a symmetric ``(n_params, n_params)`` matrix
    of the loss over ``data`` at the model's current parameters (a snapshot).

    Args:
        model, loss_fn, data, params, eval_mode, reduction: as
            :class:`~descentlab.curvature.empirical.EmpiricalLoss`.
        chunk_size: most columns multiplied at once by ``op @ V`` and ``dense()`` (memory
            grows with it).
        dense_limit: ``dense()`` refuses above this many parameters (default ``DENSE_LIMIT``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        data: Any,
        params: Iterable[str | torch.Tensor] | None = None,
        *,
        eval_mode: bool | None = None,
        reduction: str | None = None,
        chunk_size: int = 32,
        dense_limit: int = DENSE_LIMIT,
        **options: Any,
    ) -> None:
        super().__init__(model, loss_fn, data, params, eval_mode=eval_mode, reduction=reduction)
        self._options = {"chunk_size": chunk_size, "dense_limit": dense_limit, **options}
        self._configure(chunk_size=chunk_size, dense_limit=dense_limit, **options)

    def _configure(self, *, chunk_size: int = 32, dense_limit: int = DENSE_LIMIT, **options: Any) -> None:
        self.chunk_size = check_int("chunk_size", chunk_size)
        self.dense_limit = check_int("dense_limit", dense_limit)
        super()._configure(**options)

    # ------------------------------------------------------------------ linear operator
    @property
    def shape(self) -> tuple[int, int]:
        """``(n_params, n_params)``."""
        return (self.n_params, self.n_params)

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        """``M @ v`` for a flat vector (shape ``(n,)``) or a matrix of columns (``(n, k)``)."""
        v = torch.as_tensor(v)
        if v.ndim == 1:
            return self.matvec(v)
        if v.ndim != 2 or v.shape[0] != self.n_params:
            raise ValueError(f"v must have shape ({self.n_params},) or ({self.n_params}, k), got {tuple(v.shape)}")
        return self.matmat(v)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``M v`` for a flat vector of length ``n_params`` (moved to the operator's device/dtype)."""
        v = torch.as_tensor(v)
        if v.shape != (self.n_params,):
            raise ValueError(f"v must have shape ({self.n_params},), got {tuple(v.shape)}")
        return self.product(v.to(self.device, self.dtype).reshape(1, -1))[0]

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``M V`` for a matrix of columns ``V`` of shape ``(n_params, k)``, in batched chunks."""
        V = torch.as_tensor(V).to(self.device, self.dtype)
        if V.ndim != 2 or V.shape[0] != self.n_params:
            raise ValueError(f"V must have shape ({self.n_params}, k), got {tuple(V.shape)}")
        cols = [self.product(V[:, i : i + self.chunk_size].T.contiguous()).T
                for i in range(0, V.shape[1], self.chunk_size)]
        return torch.cat(cols, dim=1) if cols else torch.zeros(V.shape, dtype=self.dtype, device=self.device)

    def product(self, V: torch.Tensor) -> torch.Tensor:
        """``(M Vᵀ)ᵀ`` for rows ``V`` of shape ``(b, n)``: the weighted sum over this rank's
        batches, all-reduced. A rank without data contributes zeros of the same shape."""
        total = WeightedSum()
        with threads_for(self.work):
            self._accumulate(total, V)
        if total.value is None:  # no data on this rank: a contiguous zero of the others' shape
            total.value = torch.zeros(V.shape, dtype=self.dtype, device=self.device)
        return self.allreduce(total.value)

    def _accumulate(self, total: "WeightedSum", V: torch.Tensor) -> None:
        for X, y, w in self.batches():
            total.add(w, self._batch_product(X, y, V))

    def _batch_product(self, X: Any, y: Any, V: torch.Tensor) -> torch.Tensor:
        """One batch's matrix times rows ``V`` ``(b, n)``: a fresh ``(b, n)`` tensor."""
        raise NotImplementedError

    def dense(self) -> torch.Tensor:
        """The matrix itself, ``op @ I`` in chunks of columns, made exactly symmetric.

        Raises ``ValueError`` when ``n_params`` exceeds ``dense_limit``.
        """
        self._check_dense()
        M = self.matmat(torch.eye(self.n_params, dtype=self.dtype, device=self.device))
        return (M + M.T) / 2

    def _check_dense(self) -> None:
        if self.n_params > self.dense_limit:
            raise ValueError(
                f"dense() refuses {self.n_params:,} parameters (dense_limit={self.dense_limit:,}); "
                "use lanczos/spectral_density, or pass params= to select a layer"
            )

    def to_scipy(self) -> "Any":
        """A ``scipy.sparse.linalg.LinearOperator`` doing the products in torch (for ``eigsh``,
        ``cg``, ...): numpy arrays in, numpy arrays of the same dtype out."""
        return to_scipy(self)

    def __sub__(self, other: Any) -> "DifferenceOperator":
        """``self - other`` as an operator (e.g. the residual ``H - GGN``)."""
        return DifferenceOperator(self, other)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n_params={self.n_params:,}, n_samples={self.n_samples:,}, "
                f"dtype={self.dtype}, device={self.device})")


class DifferenceOperator:
    """``A - B`` for two operators of one shape: products ``A @ V - B @ V``; ``dense()`` likewise."""

    def __init__(self, A: Any, B: Any) -> None:
        if tuple(A.shape) != tuple(B.shape):
            raise ValueError(f"operators of shapes {tuple(A.shape)} and {tuple(B.shape)} cannot be subtracted")
        self.A, self.B = A, B
        self.shape = tuple(A.shape)
        self.dtype = getattr(A, "dtype", torch.get_default_dtype())
        self.device = getattr(A, "device", torch.device("cpu"))

    def __matmul__(self, V: torch.Tensor) -> torch.Tensor:
        return self.A @ V - self.B @ V

    def dense(self) -> torch.Tensor:
        """``A.dense() - B.dense()``."""
        return self.A.dense() - self.B.dense()

    def to_scipy(self) -> Any:
        """As :meth:`CurvatureOperator.to_scipy`."""
        return to_scipy(self)

    def __repr__(self) -> str:
        return f"DifferenceOperator({self.A!r} - {self.B!r})"


def to_scipy(op: Any):
    """Wrap a torch operator (``shape``, ``@``, ``dtype``, ``device``) as a scipy ``LinearOperator``."""
    from scipy.sparse.linalg import LinearOperator

    def apply(x: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.ascontiguousarray(x)).to(op.device, op.dtype)
        out = op @ (v if v.ndim == 1 else v.reshape(op.shape[1], -1))
        return out.detach().cpu().numpy().astype(x.dtype, copy=False).reshape(x.shape[0], *x.shape[1:])

    dtype = torch.empty((), dtype=op.dtype).numpy().dtype
    # symmetric: the adjoint is the operator itself
    return LinearOperator(op.shape, matvec=apply, rmatvec=apply, matmat=apply, rmatmat=apply, dtype=dtype)


class WeightedSum:
    """``Σ_b w_b · p_b`` over fresh product tensors, in place: a product is one weight-sized
    output, and on a large model every extra pass over it (zeros, ``w *``, ``+=``, fresh pages
    included) is a measurable share of the HVP (the measurement on the 1M-parameter MLP is in
    ``bench/RESULTS.md``)."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def add(self, weight: float, product: torch.Tensor) -> None:
        if self.value is None:
            # ``product`` is a fresh tensor the operator owns; weight 1 (one batch) costs nothing
            self.value = product if weight == 1 else product.mul_(weight)
        else:
            self.value.add_(product, alpha=weight)
