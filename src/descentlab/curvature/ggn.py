"""The generalised Gauss-Newton matrix, and the split H = GGN + residual.

For a model output z_n = f(x_n; θ) and a loss ℓ(z, y), the chain rule splits the Hessian of
the loss over the data into two parts (Schraudolph 2002, "Fast curvature matrix-vector
products for second-order gradient descent", Neural Computation 14(7); Martens 2020, "New
insights and perspectives on the natural gradient method", JMLR 21):

    H = Σ_b w_b Σ_n J_nᵀ (∂²ℓ_b/∂z_n²) J_n  +  Σ_b w_b Σ_n Σ_k (∂ℓ_b/∂z_nk) ∇²_θ z_nk
      =               G  (Gauss-Newton)       +               R  (residual)

with J_n = ∂z_n/∂θ. For a loss convex in the output (cross-entropy, squared error) the
output Hessians are positive semi-definite, so G is too: every negative eigenvalue of H
comes from R, the part weighted by the output gradients (it vanishes where the model fits
every sample exactly). At a saddle, uᵀHu = uᵀGu + uᵀRu along the escape direction u says how
much of λ_min the residual carries (:func:`split_curvature`).

One batch's product G V takes three backwards through the graph of its forward pass (kept
for one batch, rebuilt per batch otherwise): J V by the double-vjp trick (the vjp Jᵀu is
linear in a dummy u, so its gradient with respect to u against V is J V), the output
Hessian on that, and Jᵀ back to the parameters; all batched over the columns of V.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from descentlab.curvature.operator import CurvatureOperator, DifferenceOperator, WeightedSum

__all__ = ["GGNOperator", "CurvatureSplit", "split_curvature", "residual_operator"]


class GGNOperator(CurvatureOperator):
    """The generalised Gauss-Newton matrix of the loss over the data, as a linear operator.

    Takes the arguments of :class:`~descentlab.curvature.operator.CurvatureOperator`
    (``model, loss_fn, data, params``, ``eval_mode``, ``reduction``, ``chunk_size``,
    ``dense_limit``) and ``cache_graph`` (keep each batch's forward graph; default: only for
    one batch). The model's output must be a tensor. ``GGNOperator.like(hessian_op)`` builds
    it at the same point on the same data without reading the data again.

    Positive semi-definite when ``loss_fn`` is convex in the model's output.
    """

    def _configure(self, *, cache_graph: bool | None = None, **options: Any) -> None:
        super()._configure(**options)
        single = isinstance(self._batches, list) and len(self._batches) == 1
        self._cache = single if cache_graph is None else bool(cache_graph)
        self._graphs: list | None = None

    def _accumulate(self, total: WeightedSum, V: torch.Tensor) -> None:
        if self._cache:
            if self._graphs is None:
                self._graphs = [(w, self._graph(X, y)) for X, y, w in self.batches()]
            for w, graph in self._graphs:
                total.add(w, self._graph_product(graph, V))
        else:
            for X, y, w in self.batches():
                total.add(w, self._graph_product(self._graph(X, y), V))

    def _graph(self, X: Any, y: Any):
        """One batch's forward graph: leaves θ, output z, ∂ℓ/∂z (with its graph), a dummy u and Jᵀu."""
        theta = self.leaves()
        with torch.enable_grad():
            z = self.output(theta, X)
            if not torch.is_tensor(z):
                raise ValueError(f"GGNOperator needs a model whose output is one tensor, got {type(z).__name__}")
            (g_z,) = torch.autograd.grad(self.loss_fn(z, y), z, create_graph=True)
            u = torch.zeros_like(z, requires_grad=True)
            jt_u = torch.autograd.grad(z, theta, u, create_graph=True, allow_unused=True)
        used = [i for i, t in enumerate(jt_u) if t is not None]
        return theta, z, g_z, u, [jt_u[i] for i in used], used

    def _graph_product(self, graph, V: torch.Tensor) -> torch.Tensor:
        theta, z, g_z, u, jt_u, used = graph
        b = V.shape[0]
        parts = self.split(V)  # (b, *shape) per parameter
        batched = b > 1
        with torch.enable_grad():
            if not used:
                return V.new_zeros(V.shape)
            tangents = [parts[i] if batched else parts[i][0] for i in used]
            (jv,) = torch.autograd.grad(jt_u, u, tangents, retain_graph=True, is_grads_batched=batched)
            if g_z.requires_grad:
                (hjv,) = torch.autograd.grad(g_z, z, jv, retain_graph=True, is_grads_batched=batched)
            else:  # a loss linear in the output: no output curvature
                hjv = torch.zeros_like(jv)
            gv = torch.autograd.grad(z, theta, hjv, retain_graph=True, allow_unused=True, is_grads_batched=batched)
        if not batched:
            return self.flatten(gv)[None]
        return self.flatten(gv, batch_shape=(b,))


def residual_operator(hessian: CurvatureOperator, ggn: GGNOperator | None = None) -> DifferenceOperator:
    """R = H − G as an operator (``GGNOperator.like(hessian)`` when ``ggn`` is not given)."""
    return hessian - (GGNOperator.like(hessian) if ggn is None else ggn)


@dataclass(frozen=True, eq=False, repr=False)
class CurvatureSplit:
    """The curvature along unit directions u_i split as uᵀHu = uᵀGu + uᵀRu.

    Attributes:
        total: ``(k,)`` uᵀHu (the eigenvalue when u is an eigenvector of H).
        ggn: ``(k,)`` uᵀGu, ≥ 0 for a loss convex in the output.
        residual: ``(k,)`` uᵀRu = total − ggn: the part that can be negative.
    """

    total: torch.Tensor
    ggn: torch.Tensor
    residual: torch.Tensor

    @property
    def residual_share(self) -> torch.Tensor:
        """``residual / total``: 1 when the residual carries all of the curvature, above 1
        when it also cancels the Gauss-Newton part (at negative curvature with G ⪰ 0)."""
        return self.residual / self.total

    def __repr__(self) -> str:
        def fmt(t: torch.Tensor) -> str:
            return "[" + ", ".join(f"{v:.6g}" for v in t.tolist()) + "]"

        return (f"CurvatureSplit(total={fmt(self.total)}, ggn={fmt(self.ggn)}, residual={fmt(self.residual)}, "
                f"residual_share={fmt(self.residual_share)})")


def split_curvature(hessian: CurvatureOperator, vectors: torch.Tensor, ggn: GGNOperator | None = None) -> CurvatureSplit:
    """uᵀHu, uᵀGu and uᵀRu for each column u of ``vectors`` ``(n,)`` or ``(n, k)`` (normalised
    here), G the Gauss-Newton matrix at the same point on the same data (2k products).

    Example: at a saddle, ``u = lanczos(H, k=1, which="SA").vectors`` gives
    ``split_curvature(H, u).residual_share``, how much of λ_min the residual carries.
    """
    U = torch.as_tensor(vectors).to(hessian.device, hessian.dtype)
    U = U.reshape(hessian.n_params, -1)
    U = U / U.norm(dim=0).clamp_min(torch.finfo(U.dtype).tiny)
    G = GGNOperator.like(hessian) if ggn is None else ggn
    total = (U * (hessian @ U)).sum(dim=0)
    gauss_newton = (U * (G @ U)).sum(dim=0)
    return CurvatureSplit(total, gauss_newton, total - gauss_newton)
