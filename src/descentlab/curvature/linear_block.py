"""The exact Hessian block of one ``nn.Linear`` layer from per-sample curvature of its output.

For a linear layer ``z_n = W a_n + b`` applied once per sample ``n``, the loss depends on
``W`` and ``b`` only through ``z``, and ``a`` does not depend on them, so

    ∂²L / ∂W[i,a] ∂W[j,b] = Σ_n A_n[i,j] · a_n[a] a_n[b],      A_n = ∂²L / ∂z_n ∂z_n,

and the bias is the same with ``a_n`` extended by a 1. When samples do not interact, the
``d_out`` per-sample matrices ``A_n`` come from ``d_out`` batched backwards through the
gradient with respect to ``z`` (one per output coordinate, all samples at once), and the block
is one matrix product over samples. For the first layer of the digits MLP (2,080 of 2,410
parameters) this replaces 2,080 Hessian-vector products by 32 small backwards and one
product of 528 x 1797 x 2145 (both index pairs taken once, ``i <= j`` and ``a <= b``).

Whether the premises hold (one call, no weight tying, samples independent) is not assumed:
``check`` compares the block against one exact Hessian-vector product with a random vector,
which any violated premise fails almost surely, and the caller then uses the general method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from descentlab.params import Layout

__all__ = ["LinearLayer", "OUTPUT_HESSIANS_LIMIT", "find_linear", "per_sample_output_hessians", "kronecker_block", "check"]

#: Most elements of one chunk of per-sample products ``a_n[a] a_n[b]`` (32 MB in float64).
_CHUNK_ELEMENTS = 1 << 22
#: Most elements of the per-sample output Hessians, ``d_out² · m`` (256 MB in float64); a
#: layer with more outputs or a batch with more samples takes the general method.
OUTPUT_HESSIANS_LIMIT = 1 << 25


@dataclass
class LinearLayer:
    """An ``nn.Linear`` whose weight (and maybe bias) are differentiated, and what one forward
    pass saw of it: its input ``a`` and output ``z`` (set by the forward hook)."""

    module: nn.Linear
    weight: str
    bias: str | None
    calls: int = 0
    a: torch.Tensor | None = field(default=None, repr=False)
    z: torch.Tensor | None = field(default=None, repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.weight,) if self.bias is None else (self.weight, self.bias)

    def record(self):
        """A context manager that captures the layer's input and output during one forward."""
        return _Recording(self)


class _Recording:
    def __init__(self, layer: LinearLayer) -> None:
        self.layer = layer

    def _hook(self, module, inputs, output):
        self.layer.calls += 1
        self.layer.a, self.layer.z = inputs[0], output
        # the rest of the model gets a copy, so an in-place op after the layer
        # (``nn.ReLU(inplace=True)``) cannot overwrite the output differentiated against
        return output.clone()

    def __enter__(self):
        self.layer.calls, self.layer.a, self.layer.z = 0, None, None
        self.handle = self.layer.module.register_forward_hook(self._hook)
        return self.layer

    def __exit__(self, *exc):
        self.handle.remove()


def find_linear(model: nn.Module, names: Sequence[str]) -> LinearLayer | None:
    """The ``nn.Linear`` with the most differentiated parameters among ``names``, or ``None``.

    Only layers whose weight is differentiated count, and only when the block is worth a
    shortcut (at least two inputs with the bias: otherwise it has as many rows as outputs).
    """
    chosen = set(names)
    best, best_size = None, 0
    for prefix, module in model.named_modules():
        if type(module) is not nn.Linear:  # a subclass may compute something else
            continue
        weight = f"{prefix}.weight" if prefix else "weight"
        bias = f"{prefix}.bias" if prefix else "bias"
        if weight not in chosen:
            continue
        has_bias = module.bias is not None and bias in chosen
        size = module.weight.numel() + (module.out_features if has_bias else 0)
        if module.in_features + has_bias >= 2 and size > best_size:
            best, best_size = LinearLayer(module, weight, bias if has_bias else None), size
    return best


def per_sample_output_hessians(g_z: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``(d_out, m, d_out)``: entry ``[i, n, j]`` is ``∂²L / ∂z_n[i] ∂z_n[j]``, assuming rows
    of ``z`` do not interact (``check`` verifies the result). ``g_z`` is ``∂L/∂z`` built with
    ``create_graph=True``; ``z`` has shape ``(..., d_out)``, its leading dims the samples."""
    d_out = z.shape[-1]
    cotangents = torch.zeros((d_out, *z.shape), dtype=z.dtype, device=z.device)
    cotangents.view(d_out, -1, d_out).diagonal(dim1=0, dim2=2).fill_(1)
    with torch.enable_grad():
        (rows,) = torch.autograd.grad(g_z, z, cotangents, retain_graph=True, is_grads_batched=True)
    rows = rows.reshape(d_out, -1, d_out)
    return (rows + rows.permute(2, 1, 0)) / 2


def kronecker_block(A: torch.Tensor, a: torch.Tensor, with_bias: bool) -> torch.Tensor:
    """``Σ_n A_n ⊗ a_n a_nᵀ`` laid out as the layer's flat parameters: the weight row-major
    (index ``i · d_in + k``), then the bias when ``with_bias`` (``a_n`` extended by a 1).

    Args:
        A: ``(d_out, m, d_out)`` symmetric per-sample output Hessians.
        a: ``(..., d_in)`` the layer's input, its leading dims the ``m`` samples.
    """
    d_out = A.shape[0]
    a = a.detach().reshape(-1, a.shape[-1])
    if with_bias:
        a = torch.cat([a, a.new_ones(len(a), 1)], dim=1)
    d_in = a.shape[1]
    i, j = torch.triu_indices(d_out, d_out, device=A.device)
    Z = A[i, :, j]  # (pairs i <= j, m)
    n_pairs = d_in * (d_in + 1) // 2
    M = A.new_zeros(len(i), n_pairs)
    step = max(1, _CHUNK_ELEMENTS // n_pairs)
    for lo in range(0, len(a), step):
        part = a[lo : lo + step]
        # columns a_n[k] a_n[l] for k <= l, in torch.triu_indices order (row-major)
        products = torch.cat([part[:, k:] * part[:, k, None] for k in range(d_in)], dim=1)
        M.addmm_(Z[:, lo : lo + step], products)
    # the block is M[pair(i, j), pair(k, l)]: one gather, in the layer's parameter order
    rows = _pair_index(d_out, A.device)[:, None, :, None] * n_pairs
    block = M.reshape(-1)[(rows + _pair_index(d_in, A.device)[None, :, None, :]).reshape(-1)]
    block = block.reshape(d_out * d_in, d_out * d_in)
    if not with_bias:
        return block
    # the augmented order is (i, k) with k = d_in - 1 the bias; the layer's is weight, then bias
    order = torch.arange(d_out * d_in, device=A.device).reshape(d_out, d_in)
    order = torch.cat([order[:, :-1].reshape(-1), order[:, -1]])
    return block[order[:, None], order[None, :]]


def check(block: torch.Tensor, grads: Sequence[torch.Tensor], leaves: Sequence[torch.Tensor], seed: int = 0) -> bool:
    """Whether ``block`` equals the Hessian block of ``leaves``, tested on one random vector
    against an exact product through the gradient graph ``grads`` (``create_graph=True``).

    The tolerance allows rounding (``1e3 · eps`` of the absolute products); a wrong block, from
    tied weights, a second call or samples that interact, misses by far more, almost surely.
    """
    gen = torch.Generator(device=block.device).manual_seed(seed)
    v = torch.randn(block.shape[0], dtype=block.dtype, device=block.device, generator=gen)
    layout = Layout.of(leaves)
    with torch.enable_grad():
        hv = torch.autograd.grad(grads, leaves, layout.split(v), retain_graph=True, allow_unused=True)
    exact = layout.flatten(hv, dtype=block.dtype, device=block.device)
    scale = block.abs() @ v.abs()
    tol = 1e3 * torch.finfo(block.dtype).eps * float(scale.max()) + torch.finfo(block.dtype).tiny
    return bool(((block @ v - exact).abs().max() <= tol).item())


def _pair_index(d: int, device) -> torch.Tensor:
    """``(d, d)``: the position of ``(min(p, q), max(p, q))`` in ``torch.triu_indices(d, d)``."""
    p, q = torch.triu_indices(d, d, device=device)
    index = torch.empty((d, d), dtype=torch.long, device=device)
    index[p, q] = torch.arange(len(p), device=device)
    index[q, p] = index[p, q]
    return index
