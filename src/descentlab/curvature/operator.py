"""The Hessian of a dataset-mean loss as a linear operator: ``H @ v`` without forming ``H``.

For a model with parameters θ, a loss ℓ and data split into batches B_1..B_m of sizes n_b
(N = Σ n_b), the operator is the Hessian of the mean over all samples,

    L(θ) = (1/N) Σ_b n_b · ℓ_b(θ),        H v = (1/N) Σ_b n_b · ∇²ℓ_b(θ) v,

where ℓ_b is ``loss_fn`` (a mean over its batch) on batch b. Two ways to multiply:

* one batch (the data fits in memory): the gradient is built once with ``create_graph=True``
  and every product is one more backward through that retained graph (≈ 1.3 gradients);
* streamed batches: per batch, rebuild the gradient graph and backward through it once
  (≈ 3 gradients), or, if asked, forward-over-reverse (``torch.func.jvp`` of
  ``torch.func.grad``); memory never holds more than one batch's graph.

A matrix of columns ``op @ V`` is one batched product (``is_grads_batched`` / ``vmap``), not a
Python loop. Under ``torch.distributed`` every rank holds its own share of the data and the
sums (products, loss, gradient, sample count) are all-reduced, so every rank sees the
operator of all the data.

The operator *snapshots* the parameters when it is built: it is the Hessian at that point,
whatever happens to the model afterwards. After an optimizer step, build a new operator.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from descentlab.curvature.batches import as_batches, batch_size
from descentlab.curvature.dense import hessian_by_blocks
from descentlab.curvature.linear_block import (
    OUTPUT_HESSIANS_LIMIT,
    LinearLayer,
    check,
    find_linear,
    kronecker_block,
    per_sample_output_hessians,
)

__all__ = ["HessianOperator", "DENSE_LIMIT"]

#: ``dense()`` refuses above this many parameters: the float64 matrix alone would be 800 MB.
DENSE_LIMIT = 10_000

_RANDOM_LAYERS = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


class HessianOperator:
    """Hessian of the dataset-mean loss of ``model`` at its current parameters.

    Args:
        model: any ``nn.Module``; its device and dtype are the operator's.
        loss_fn: ``loss_fn(output, target)``, the mean loss over a batch.
        data: one ``(X, y)`` pair, or an iterable of ``(X, y)`` batches (a ``DataLoader``).
            Batches of unequal size are weighted by their size. ``X`` may be a tuple of
            tensors (passed as ``model(*X)``).
        params: which parameters to differentiate: ``None`` (every parameter that requires
            grad) or names, each a full parameter name (``"0.weight"``) or a module prefix
            (``"0"`` = every parameter of sub-module ``0``), or the parameter tensors
            themselves. Named parameters are used even when frozen. Parameters that get no
            gradient contribute zero rows and columns.
        eval_mode: ``None`` (default): a model in training mode that has dropout or
            batch-norm makes the operator random, so warn and evaluate in eval mode.
            ``True``: always evaluate in eval mode, silently. ``False``: keep the model's mode.
        cache_graph: keep each batch's double-backward graph (fast products, memory grows
            with the data). ``None`` (default): only when the data is a single batch.
        chunk_size: most columns multiplied at once by ``op @ V`` and ``dense()`` (memory
            grows with it).
        dense_limit: ``dense()`` refuses above this many parameters (default ``DENSE_LIMIT``).
        streamed: how uncached batches multiply: ``"double-backward"`` (default; rebuild the
            batch's gradient graph, one more backward: ≈ 3 gradients here) or
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
        cache_graph: bool | None = None,
        chunk_size: int = 32,
        dense_limit: int = DENSE_LIMIT,
        streamed: str = "double-backward",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError("loss_fn must be callable as loss_fn(output, target)")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if streamed not in ("double-backward", "forward-over-reverse"):
            raise ValueError(f"streamed must be 'double-backward' or 'forward-over-reverse', got {streamed!r}")
        self._forward_over_reverse = streamed == "forward-over-reverse"
        if dense_limit < 1:
            raise ValueError(f"dense_limit must be >= 1, got {dense_limit}")
        self.model = model
        self.loss_fn = loss_fn
        self.chunk_size = int(chunk_size)
        self.dense_limit = int(dense_limit)
        #: the ``nn.Linear`` whose block the last ``dense()`` took from its output curvature, or ``None``
        self.dense_layer: str | None = None

        self.names: tuple[str, ...] = _select(model, params)
        named = dict(model.named_parameters())
        # The snapshot: the operator is the Hessian at these values, whatever the model does next.
        self._point = tuple(named[n].detach().clone() for n in self.names)
        self._fixed = {
            n: t.detach().clone()
            for n, t in [*model.named_parameters(), *model.named_buffers()]
            if n not in set(self.names)
        }
        self.param_shapes: tuple[torch.Size, ...] = tuple(p.shape for p in self._point)
        self._sizes = tuple(p.numel() for p in self._point)
        self.n_params = sum(self._sizes)
        self.dtype = self._point[0].dtype
        self.device = self._point[0].device

        self._eval = _decide_eval_mode(model, eval_mode)
        self._batches = as_batches(data, stream=True)

        self._n_local = 0
        for X, y in self._iter_batches():
            self._n_local += batch_size(X, y)
        if self._n_local == 0 and not _distributed():
            raise ValueError("data has no samples")
        # counted on the model's device, so NCCL (GPU) reductions work as well as gloo
        count = torch.tensor(float(self._n_local), dtype=torch.float64, device=self.device)
        self.n_samples = int(self._allreduce(count).item())
        if self.n_samples == 0:
            raise ValueError("data has no samples")

        single = isinstance(self._batches, list) and len(self._batches) == 1
        self._cache = single if cache_graph is None else bool(cache_graph)
        self._graphs: list[tuple[float, torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]] | None = None
        self._loss: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None

    # ------------------------------------------------------------------ linear operator
    @property
    def shape(self) -> tuple[int, int]:
        """``(n_params, n_params)``."""
        return (self.n_params, self.n_params)

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        """``H @ v`` for a flat vector (shape ``(n,)``) or a matrix of columns (``(n, k)``)."""
        v = torch.as_tensor(v)
        if v.ndim == 1:
            return self.matvec(v)
        if v.ndim != 2 or v.shape[0] != self.n_params:
            raise ValueError(f"v must have shape ({self.n_params},) or ({self.n_params}, k), got {tuple(v.shape)}")
        return self.matmat(v)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat vector of length ``n_params`` (moved to the operator's device/dtype)."""
        v = torch.as_tensor(v)
        if v.shape != (self.n_params,):
            raise ValueError(f"v must have shape ({self.n_params},), got {tuple(v.shape)}")
        return self._product(v.to(self.device, self.dtype)[None])[0]

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` for a matrix of columns ``V`` of shape ``(n_params, k)``, in batched chunks."""
        V = torch.as_tensor(V).to(self.device, self.dtype)
        if V.ndim != 2 or V.shape[0] != self.n_params:
            raise ValueError(f"V must have shape ({self.n_params}, k), got {tuple(V.shape)}")
        cols = [self._product(V[:, i : i + self.chunk_size].T).T for i in range(0, V.shape[1], self.chunk_size)]
        return torch.cat(cols, dim=1) if cols else V.new_zeros(V.shape)

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
        if self.n_params > self.dense_limit:
            raise ValueError(
                f"dense() refuses {self.n_params:,} parameters (dense_limit={self.dense_limit:,}); "
                "use lanczos/spectral_density, or pass params= to select a layer"
            )
        layer = find_linear(self.model, self.names) if linear_shortcut else None
        return self._dense_by_blocks(layer)

    # ------------------------------------------------------------------ loss and gradient
    def loss(self) -> torch.Tensor:
        """The mean loss over all data at the snapshot (a 0-d tensor)."""
        self._loss_and_gradient()
        return self._loss.clone()

    def gradient(self) -> torch.Tensor:
        """The flat gradient of the mean loss over all data at the snapshot."""
        self._loss_and_gradient()
        return self._grad.clone()

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector into ``{parameter name: tensor of that parameter's shape}``."""
        if v.shape != (self.n_params,):
            raise ValueError(f"v must have shape ({self.n_params},), got {tuple(v.shape)}")
        parts = torch.split(v, self._sizes)
        return {n: p.reshape(s) for n, p, s in zip(self.names, parts, self.param_shapes)}

    def flatten(self, tensors: Sequence[torch.Tensor] | dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate per-parameter tensors (in ``names`` order, or a dict by name) into one vector."""
        if isinstance(tensors, dict):
            tensors = [tensors[n] for n in self.names]
        return torch.cat([t.reshape(-1) for t in tensors])

    @property
    def point(self) -> torch.Tensor:
        """The flat parameter values (the snapshot) at which this is the Hessian."""
        return self.flatten(self._point)

    def __repr__(self) -> str:
        path = "cached graph" if self._cache else ("forward-over-reverse" if self._forward_over_reverse else "double-backward")
        return (
            f"HessianOperator(n_params={self.n_params:,}, n_samples={self.n_samples:,}, "
            f"dtype={self.dtype}, device={self.device}, {path})"
        )

    # ------------------------------------------------------------------ internals
    def _iter_batches(self):
        for X, y in self._batches:
            yield self._to_model(X), self._to_model(y)

    def _to_model(self, t: Any) -> Any:
        if isinstance(t, (tuple, list)):
            return type(t)(self._to_model(x) for x in t)
        if not torch.is_tensor(t):
            return t
        dtype = self.dtype if t.is_floating_point() else t.dtype
        return t.to(self.device, dtype)

    def _batch_loss(self, theta: Sequence[torch.Tensor], X: Any, y: Any) -> torch.Tensor:
        state = {**self._fixed, **dict(zip(self.names, theta))}
        with _mode(self.model, self._eval):
            out = functional_call(self.model, state, tuple(X) if isinstance(X, (tuple, list)) else (X,))
        return self.loss_fn(out, y)

    def _leaves(self) -> tuple[torch.Tensor, ...]:
        return tuple(p.detach().requires_grad_(True) for p in self._point)

    def _gradient_graph(self, X, y):
        """One batch's loss, fresh parameter leaves, and its flat gradient with the graph kept
        (``create_graph``), so each Hessian-vector product is one more backward through it."""
        theta = self._leaves()
        with torch.enable_grad():
            loss = self._batch_loss(theta, X, y)
            grads = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True)
        return loss, theta, _flat(grads, self._point)

    def _build_graphs(self):
        if self._graphs is None:
            graphs = []
            for X, y in self._iter_batches():
                loss, theta, flat = self._gradient_graph(X, y)
                graphs.append((float(batch_size(X, y)), loss.detach(), theta, flat))
            self._graphs = graphs
        return self._graphs

    def _product(self, V: torch.Tensor) -> torch.Tensor:
        """``(H V.T).T`` for rows ``V`` of shape ``(b, n)``: local weighted sum, all-reduced."""
        out = _WeightedSum(self.n_samples)
        if self._cache:
            for n_b, _, theta, flat in self._build_graphs():
                if flat.requires_grad:
                    out.add(n_b, self._graph_product(flat, theta, V))
        elif self._forward_over_reverse:
            for X, y in self._iter_batches():
                out.add(batch_size(X, y), self._func_product(X, y, V))
        else:  # rebuild one batch's double-backward graph at a time, then drop it
            for X, y in self._iter_batches():
                _, theta, flat = self._gradient_graph(X, y)
                if flat.requires_grad:
                    out.add(batch_size(X, y), self._graph_product(flat, theta, V))
        return self._allreduce(out.total if out.total is not None else torch.zeros_like(V))  # no data here

    def _graph_product(self, flat, theta, V) -> torch.Tensor:
        with torch.enable_grad():
            if V.shape[0] == 1:
                hv = torch.autograd.grad(flat, theta, V[0], retain_graph=True, allow_unused=True)
                return _flat(hv, self._point)[None]
            hv = torch.autograd.grad(
                flat, theta, V, retain_graph=True, allow_unused=True, is_grads_batched=True
            )
        return torch.cat(
            [(h if h is not None else p.new_zeros((V.shape[0], *p.shape))).reshape(V.shape[0], -1)
             for h, p in zip(hv, self._point)],
            dim=1,
        )

    def _dense_by_blocks(self, layer: LinearLayer | None) -> torch.Tensor:
        """Size-weighted sum over batches of each batch's Hessian, built block by block
        from its gradient graph (``curvature.dense``), all-reduced once. ``layer``: an
        ``nn.Linear`` whose block to try from its per-sample output curvature."""
        H = _WeightedSum(self.n_samples)
        self.dense_layer = None
        for X, y in self._iter_batches():
            theta = self._leaves()
            known = None
            with torch.enable_grad():
                if layer is None:
                    loss = self._batch_loss(theta, X, y)
                    grads = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True)
                else:
                    with layer.record():
                        loss = self._batch_loss(theta, X, y)
                    grads, known = self._linear_block(loss, theta, layer)
                    if known is None:
                        layer = None  # its premises fail on this model: do not try again
            H.add(batch_size(X, y), hessian_by_blocks(grads, theta, self.chunk_size, known))
        if layer is not None:
            self.dense_layer = layer.weight.rpartition(".")[0] or "(the model)"
        if H.total is None:  # a rank without data
            H.total = torch.zeros(self.n_params, self.n_params, dtype=self.dtype, device=self.device)
        return self._allreduce(H.total)

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

    def _func_product(self, X, y, V) -> torch.Tensor:
        point = self._point

        def grad_of(theta):
            return torch.func.grad(lambda t: self._batch_loss(t, X, y))(theta)

        def hvp(v):
            tangent = tuple(p.reshape(s) for p, s in zip(torch.split(v, self._sizes), self.param_shapes))
            _, hv = torch.func.jvp(grad_of, (point,), (tangent,))
            return torch.cat([h.reshape(-1) for h in hv])

        if V.shape[0] == 1:
            return hvp(V[0])[None]
        return torch.func.vmap(hvp)(V)

    def _loss_and_gradient(self) -> None:
        if self._grad is not None:
            return
        loss_sum = torch.zeros((), dtype=self.dtype, device=self.device)
        grad_sum = torch.zeros(self.n_params, dtype=self.dtype, device=self.device)
        if self._cache:
            for n_b, loss, _, flat in self._build_graphs():
                loss_sum += n_b * loss
                grad_sum += n_b * flat.detach()
        else:
            for X, y in self._iter_batches():
                theta = self._leaves()
                with torch.enable_grad():
                    loss = self._batch_loss(theta, X, y)
                    grads = torch.autograd.grad(loss, theta, allow_unused=True)
                n_b = batch_size(X, y)
                loss_sum += n_b * loss.detach()
                grad_sum += n_b * _flat(grads, self._point)
        both = self._allreduce(torch.cat([loss_sum[None], grad_sum])) / self.n_samples
        self._loss, self._grad = both[0], both[1:]

    @staticmethod
    def _allreduce(t: torch.Tensor) -> torch.Tensor:
        if _distributed():
            torch.distributed.all_reduce(t)
        return t


# ---------------------------------------------------------------------- helpers
class _WeightedSum:
    """``Σ_b (n_b / N) · p_b`` over fresh product tensors, in place: a product is one weight-sized
    output, and on the 1M-parameter MLP every extra pass over it (zeros, ``n_b *``, ``+=``,
    ``/ N``: ≈ 4 ms of a 34 ms HVP, fresh pages included) is a measurable share of the HVP."""

    def __init__(self, n_samples: int) -> None:
        self.n_samples = n_samples
        self.total: torch.Tensor | None = None

    def add(self, n_b: float, product: torch.Tensor) -> None:
        weight = n_b / self.n_samples
        if self.total is None:
            # ``product`` is a fresh tensor this operator owns; weight 1 (one batch) costs nothing
            self.total = product if weight == 1 else product.mul_(weight)
        else:
            self.total.add_(product, alpha=weight)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _select(model: nn.Module, params) -> tuple[str, ...]:
    named = dict(model.named_parameters())
    if not named:
        raise ValueError("model has no parameters")
    if params is None:
        names = tuple(n for n, p in named.items() if p.requires_grad)
        if not names:
            raise ValueError("no parameter of the model requires grad; pass params= to choose some")
        return names
    if isinstance(params, (str, torch.Tensor)):
        params = [params]
    by_id = {id(p): n for n, p in named.items()}
    chosen: list[str] = []
    for item in params:
        if torch.is_tensor(item):
            if id(item) not in by_id:
                raise ValueError("params contains a tensor that is not a parameter of the model")
            found = [by_id[id(item)]]
        elif isinstance(item, str):
            found = [n for n in named if n == item or n.startswith(item + ".")]
            if not found:
                raise ValueError(f"params: no parameter or module named {item!r} (parameters: {', '.join(named)})")
        else:
            raise ValueError(f"params must hold names or parameter tensors, got {type(item).__name__}")
        chosen += [n for n in found if n not in chosen]
    if not chosen:
        raise ValueError("params selects no parameter")
    order = list(named)
    return tuple(sorted(chosen, key=order.index))


def _decide_eval_mode(model: nn.Module, eval_mode: bool | None) -> bool:
    if eval_mode is not None:
        return bool(eval_mode)
    random_layers = [type(m).__name__ for m in model.modules() if isinstance(m, _RANDOM_LAYERS)]
    if model.training and random_layers:
        warnings.warn(
            f"the model is in training mode and has {', '.join(sorted(set(random_layers)))}, which makes "
            "the Hessian random; evaluating it in eval mode. Call model.eval() first to silence this, "
            "or pass eval_mode=False to keep training mode.",
            UserWarning,
            stacklevel=3,
        )
        return True
    return False


class _mode:
    """Evaluate in eval mode when asked, restoring every sub-module's own mode afterwards."""

    def __init__(self, model: nn.Module, to_eval: bool) -> None:
        self.model, self.to_eval = model, to_eval

    def __enter__(self):
        if self.to_eval:
            self.saved = [(m, m.training) for m in self.model.modules()]
            self.model.eval()

    def __exit__(self, *exc):
        if self.to_eval:
            for m, training in self.saved:
                m.training = training


def _flat(grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, like)])
