"""The Hessian of the loss over the data as a linear operator: ``H @ v`` without forming ``H``.

With the loss over the data L(θ) = Σ_b w_b ℓ_b(θ) (:mod:`~descentlab.curvature.empirical`),

    H v = Σ_b w_b · ∇²ℓ_b(θ) v.

Three ways to multiply one batch's Hessian:

* the graph kept (the default for one batch, the data fits in memory): the gradient is built
  once with ``create_graph=True`` and every product is one more backward through that
  retained graph;
* streamed batches: per batch, rebuild the gradient graph and backward through it once (a
  forward and a backward more per product than with the graph kept), or, if asked,
  forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``); memory never holds more
  than one batch's graph.

What a product costs in gradients, both ways, is measured by ``bench/hessian.py`` (its
"HVP / gradient" rows in ``bench/RESULTS.md``).

A matrix of columns ``op @ V`` is one batched product (``is_grads_batched`` / ``vmap``), not a
Python loop. ``dense()`` builds H block by block over parameter tensors (``curvature.dense``),
the block of the largest ``nn.Linear`` from its per-sample output curvature
(``curvature.linear_block``).

The operator *snapshots* the parameters when it is built: it is the Hessian at that point,
whatever happens to the model afterwards. After an optimizer step, build a new operator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from descentlab.checks import check_choice
from descentlab.curvature.dense import hessian_by_blocks
from descentlab.curvature.linear_block import (
    OUTPUT_HESSIANS_LIMIT,
    LinearLayer,
    check,
    find_linear,
    kronecker_block,
    per_sample_output_hessians,
)
from descentlab.curvature.operator import DENSE_LIMIT, CurvatureOperator, WeightedSum
from descentlab.openmp import threads_for

__all__ = ["HessianOperator", "STREAMED"]

#: ``streamed`` values: how an uncached batch multiplies.
STREAMED = ("double-backward", "forward-over-reverse")


class HessianOperator(CurvatureOperator):
    """Hessian of the loss over the data of ``model`` at its current parameters.

    Args:
        model: any ``nn.Module``; its device and dtype are the operator's.
        loss_fn: ``loss_fn(output, target)``, the mean (or sum) of the per-sample losses of a
            batch; which one is measured on the data (see ``reduction``).
        data: one ``(X, y)`` pair, or an iterable of ``(X, y)`` batches (a ``DataLoader``:
            it must give the same samples on every pass; shuffling is fine, ``drop_last=True``
            with shuffling is refused). Batches of unequal size are weighted by their size.
            ``X`` may be a tuple of tensors (passed as ``model(*X)``).
        params: which parameters to differentiate: ``None`` (every parameter that requires
            grad) or names, each a full parameter name (``"0.weight"``) or a module prefix
            (``"0"`` = every parameter of sub-module ``0``), or the parameter tensors
            themselves. Named parameters are used even when frozen. Parameters that get no
            gradient contribute zero rows and columns.
        eval_mode: ``None`` (default): dropout or batch-norm in training mode make the operator
            random, so warn and evaluate those modules in eval mode. ``True``: always, silently.
            ``False``: keep every module's mode.
        reduction: ``None`` (measured), ``"mean"`` or ``"sum"``: how ``loss_fn`` reduces over
            a batch. The operator is the Hessian of the loss of all the data as one batch.
        cache_graph: keep each batch's double-backward graph (fast products, memory grows
            with the data). ``None`` (default): only when the data is a single batch.
        chunk_size: most columns multiplied at once by ``op @ V`` and ``dense()`` (memory
            grows with it).
        dense_limit: ``dense()`` refuses above this many parameters (default ``DENSE_LIMIT``).
        streamed: how uncached batches multiply: ``"double-backward"`` (default; rebuild the
            batch's gradient graph, one more backward) or
            ``"forward-over-reverse"`` (``torch.func.jvp`` of ``torch.func.grad``; measured
            slower on CPU for small models because of per-call functorch overhead).

    Example (the lecture's ``y = w1·w2·x`` with one datum x = 1, y = 1, at the saddle (0, 0))::

        >>> class Lecture(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.w = nn.Parameter(torch.zeros(2, dtype=torch.float64))
        ...     def forward(self, x):
        ...         return self.w[0] * self.w[1] * x
        >>> x = y = torch.ones(1, dtype=torch.float64)
        >>> op = HessianOperator(Lecture(), nn.functional.mse_loss, (x, y))
        >>> op.dense()
        tensor([[ 0., -2.],
                [-2.,  0.]], dtype=torch.float64)
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
        cache_graph: bool | None = None,
        chunk_size: int = 32,
        dense_limit: int = DENSE_LIMIT,
        streamed: str = "double-backward",
    ) -> None:
        super().__init__(model, loss_fn, data, params, eval_mode=eval_mode, reduction=reduction,
                         chunk_size=chunk_size, dense_limit=dense_limit, cache_graph=cache_graph, streamed=streamed)

    def _configure(self, *, cache_graph: bool | None = None, streamed: str = "double-backward", **options: Any) -> None:
        super()._configure(**options)
        self._forward_over_reverse = check_choice("streamed", streamed, STREAMED) == "forward-over-reverse"
        single = isinstance(self._batches, list) and len(self._batches) == 1
        self._cache = single if cache_graph is None else bool(cache_graph)
        self._graphs: list[tuple[float, torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]] | None = None
        self._loss_grad: tuple[torch.Tensor, torch.Tensor] | None = None
        #: the ``nn.Linear`` whose block the last ``dense()`` took from its output curvature, or ``None``
        self.dense_layer: str | None = None

    # ------------------------------------------------------------------ products
    def _accumulate(self, total: WeightedSum, V: torch.Tensor) -> None:
        if self._cache:
            for w, _, theta, flat in self._build_graphs():
                if flat.requires_grad:
                    total.add(w, self._graph_product(flat, theta, V))
        elif self._forward_over_reverse:
            for X, y, w in self.batches():
                total.add(w, self._func_product(X, y, V))
        else:  # rebuild one batch's double-backward graph at a time, then drop it
            for X, y, w in self.batches():
                _, theta, flat = self._gradient_graph(X, y)
                if flat.requires_grad:
                    total.add(w, self._graph_product(flat, theta, V))

    def _gradient_graph(self, X, y):
        """One batch's loss, fresh parameter leaves, and its flat gradient with the graph kept
        (``create_graph``), so each Hessian-vector product is one more backward through it."""
        theta = self.leaves()
        with torch.enable_grad():
            loss = self.batch_loss(theta, X, y)
            grads = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True)
        return loss, theta, self.flatten(grads)

    def _build_graphs(self):
        if self._graphs is None:
            graphs = []
            for X, y, w in self.batches():
                loss, theta, flat = self._gradient_graph(X, y)
                graphs.append((w, loss.detach(), theta, flat))
            self._graphs = graphs
        return self._graphs

    def _graph_product(self, flat, theta, V) -> torch.Tensor:
        with torch.enable_grad():
            if V.shape[0] == 1:
                hv = torch.autograd.grad(flat, theta, V[0], retain_graph=True, allow_unused=True)
                return self.flatten(hv)[None]
            hv = torch.autograd.grad(
                flat, theta, V, retain_graph=True, allow_unused=True, is_grads_batched=True
            )
        return self.flatten(hv, batch_shape=V.shape[:1])

    def _func_product(self, X, y, V) -> torch.Tensor:
        point = self._point

        def grad_of(theta):
            return torch.func.grad(lambda t: self.batch_loss(t, X, y))(theta)

        def hvp(v):
            _, hv = torch.func.jvp(grad_of, (point,), (self.split(v),))
            return self.flatten(hv)

        if V.shape[0] == 1:
            return hvp(V[0])[None]
        return torch.func.vmap(hvp)(V)

    # ------------------------------------------------------------------ loss and gradient
    def loss(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """The loss over all data at the flat point ``theta`` (default: the snapshot), a 0-d tensor."""
        if theta is not None:
            return super().loss(theta)
        return self.loss_and_gradient()[0].clone()

    def gradient(self) -> torch.Tensor:
        """The flat gradient of the loss over all data at the snapshot."""
        return self.loss_and_gradient()[1].clone()

    def loss_and_gradient(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L, ∇L)`` at the snapshot (computed once; from the kept graphs when there are any)."""
        if self._loss_grad is None:
            if self._cache:
                total = torch.zeros(1 + self.n_params, dtype=self.dtype, device=self.device)
                with threads_for(self.work):
                    for w, loss, _, flat in self._build_graphs():
                        total[0] += w * loss
                        total[1:].add_(flat.detach(), alpha=w)
                total = self.allreduce(total)
                self._loss_grad = (total[0], total[1:])
            else:
                self._loss_grad = super().loss_and_gradient()
        return self._loss_grad

    # ------------------------------------------------------------------ the exact Hessian
    def dense(self, *, linear_shortcut: bool = True) -> torch.Tensor:
        """The exact Hessian, exactly symmetric, built block by block over parameter tensors
        by batched backwards from each tensor's gradient with one-hot cotangents
        (``curvature.dense``).

        With ``linear_shortcut`` (default), the block of the largest differentiated
        ``nn.Linear`` comes from its per-sample output curvature instead
        (``curvature.linear_block``: 32 backwards instead of 2,080 on the digits MLP), after
        one exact product with a random vector confirms it; where it does not (a layer called
        twice, tied weights, samples that interact), or where a batch's per-sample output
        Hessians would exceed ``linear_block.OUTPUT_HESSIANS_LIMIT`` elements, the general
        method is used. ``dense_layer`` then names the layer used, or is ``None``.

        Raises ``ValueError`` when ``n_params`` exceeds ``dense_limit`` (default
        ``DENSE_LIMIT`` = 10,000: 800 MB in float64).
        """
        self._check_dense()
        layer = find_linear(self.model, self.names) if linear_shortcut else None
        with threads_for(self.work):
            return self._dense_by_blocks(layer)

    def _dense_by_blocks(self, layer: LinearLayer | None) -> torch.Tensor:
        """Weighted sum over batches of each batch's Hessian, built block by block from its
        gradient graph (``curvature.dense``), all-reduced once. ``layer``: an ``nn.Linear``
        whose block to try from its per-sample output curvature."""
        H = WeightedSum()
        self.dense_layer = None
        for X, y, w in self.batches():
            theta = self.leaves()
            known = None
            with torch.enable_grad():
                if layer is None:
                    loss = self.batch_loss(theta, X, y)
                    grads = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True)
                else:
                    with layer.record():
                        loss = self.batch_loss(theta, X, y)
                    grads, known = self._linear_block(loss, theta, layer)
                    if known is None:
                        layer = None  # its premises fail on this model: do not try again
            H.add(w, hessian_by_blocks(grads, theta, self.chunk_size, known))
        if layer is not None:
            self.dense_layer = layer.weight.rpartition(".")[0] or "(the model)"
        if H.value is None:  # a rank without data
            H.value = torch.zeros(self.n_params, self.n_params, dtype=self.dtype, device=self.device)
        return self.allreduce(H.value)

    def _linear_block(self, loss, theta, layer: LinearLayer):
        """The gradient graph, and ``(indices, block)`` of ``layer`` from its per-sample output
        curvature when one exact product confirms it, else ``None``."""
        usable = (layer.calls == 1 and layer.z is not None and layer.z.requires_grad
                  and layer.z.numel() * layer.z.shape[-1] <= OUTPUT_HESSIANS_LIMIT)
        targets = (*theta, layer.z) if usable else theta
        out = torch.autograd.grad(loss, targets, create_graph=True, allow_unused=True)
        grads = out[: len(theta)]
        idx = [self.names.index(n) for n in layer.names]
        g_z = out[-1] if usable else None
        if g_z is None or not g_z.requires_grad or any(grads[i] is None for i in idx):
            return grads, None
        A = per_sample_output_hessians(g_z, layer.z)
        block = kronecker_block(A, layer.a, with_bias=layer.bias is not None)
        if not check(block, [grads[i] for i in idx], [theta[i] for i in idx]):
            return grads, None
        return grads, (idx, block)

    def __repr__(self) -> str:
        path = "cached graph" if self._cache else ("forward-over-reverse" if self._forward_over_reverse else "double-backward")
        return (
            f"HessianOperator(n_params={self.n_params:,}, n_samples={self.n_samples:,}, "
            f"dtype={self.dtype}, device={self.device}, {path})"
        )
