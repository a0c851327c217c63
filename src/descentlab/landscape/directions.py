"""Directions to slice the loss along: random filter-normalised, Hessian eigenvectors, escape.

Random directions follow Li, Xu, Taylor, Studer & Goldstein, *Visualizing the Loss
Landscape of Neural Nets* (NeurIPS 2018): draw ``d ~ N(0, I)`` with the shape of the
weights, then rescale each *filter* (each slice ``d[j]`` along the first dimension: an
output neuron's row of a linear layer, an output channel of a convolution) so that

    d[j] <- d[j] * ||w[j]|| / ||d[j]||.

Without this, a layer whose weights are tiny looks flat or steep only because of its
scale (ReLU networks are invariant to rescaling a filter). One-dimensional tensors
(biases, normalisation weights) have one number per filter; Li et al. set the direction
to zero there (their ``ignore='biasbn'``), which is our default too.

Hessian directions are eigenvectors from :func:`descentlab.curvature.lanczos`: the top
ones show the sharpest curvature, the bottom one at a saddle is the escape direction
(``L(theta + t u) ~ L(theta) + 1/2 lambda t^2`` with ``lambda < 0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from descentlab.curvature import HessianOperator, lanczos
from descentlab.params import Layout, flatten, layout_of

__all__ = [
    "HessianDirections",
    "filter_normalize",
    "random_direction",
    "hessian_directions",
    "escape_direction",
]


def filter_normalize(direction: torch.Tensor, weights: torch.Tensor, layout: Layout, *,
                     ignore_bias: bool = True, eps: float = 1e-10) -> torch.Tensor:
    """Rescale every filter of ``direction`` (flat) to the norm of the same filter of ``weights``.

    Args:
        direction: flat direction, ``layout.n_params`` long.
        weights: flat parameters of the model at the centre of the slice.
        layout: how the flat vectors split into parameter tensors.
        ignore_bias: zero the direction on tensors of dimension <= 1 (Li et al.); when
            False such a tensor counts as one filter and gets the norm of the whole tensor.
        eps: added to ``||d[j]||`` so an all-zero filter stays zero instead of NaN.
    """
    weights = weights.to(direction)
    out = []
    for d, w in zip(layout.split(direction), layout.split(weights)):
        if d.dim() <= 1:
            out.append(torch.zeros_like(d) if ignore_bias else d * (w.norm() / (d.norm() + eps)))
            continue
        # Norms over every dimension but the first: one per filter (row / output channel).
        d_norm = d.flatten(1).norm(dim=1)
        w_norm = w.flatten(1).norm(dim=1)
        out.append(d * (w_norm / (d_norm + eps)).reshape(-1, *([1] * (d.dim() - 1))))
    return layout.flatten(out)


def random_direction(model: nn.Module, *, seed: int = 0, filter_norm: bool = True,
                     ignore_bias: bool = True) -> torch.Tensor:
    """A Gaussian direction in parameter space, filter-normalised to ``model``'s weights.

    Drawn on the CPU from its own generator (the same ``seed`` gives the same direction on
    any device and leaves the global RNG alone), then moved to the model's device and dtype.
    """
    layout = layout_of(model)
    weights = flatten(model, layout)
    generator = torch.Generator().manual_seed(int(seed))
    direction = torch.randn(layout.n_params, generator=generator, dtype=torch.float64)
    direction = direction.to(device=weights.device, dtype=weights.dtype)
    if filter_norm:
        direction = filter_normalize(direction, weights, layout, ignore_bias=ignore_bias)
    return direction


@dataclass(frozen=True)
class HessianDirections:
    """Unit eigenvectors of the Hessian at the model's current parameters.

    Attributes:
        vectors: ``(k, n)``, one flat unit eigenvector per row.
        eigenvalues: ``(k,)``, ``vectors[i]`` belongs to ``eigenvalues[i]``.
        which: ``"LA"`` (largest first) or ``"SA"`` (smallest first).
    """

    vectors: torch.Tensor
    eigenvalues: torch.Tensor
    which: str

    def __repr__(self) -> str:
        values = ", ".join(f"{v:.4g}" for v in self.eigenvalues.tolist())
        return f"HessianDirections(which={self.which!r}, eigenvalues=[{values}], n_params={self.vectors.shape[1]})"


def hessian_directions(model: nn.Module, loss_fn, data, *, k: int = 2, which: str = "LA",
                       seed: int = 0, tol: float = 1e-6) -> HessianDirections:
    """The ``k`` extreme eigenvectors of the Hessian of the loss at ``model``'s parameters.

    ``which="LA"`` gives the largest eigenvalues (largest first), ``"SA"`` the smallest
    (smallest first). Computed by Lanczos on Hessian-vector products, so it works for
    models far too large for the dense Hessian.
    """
    if which not in ("LA", "SA"):
        raise ValueError(f"which: expected 'LA' or 'SA', got {which!r}")
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    return _extreme_directions(HessianOperator(model, loss_fn, data), k, which, seed, tol)


def escape_direction(model: nn.Module, loss_fn, data, *, seed: int = 0) -> tuple[torch.Tensor, float]:
    """The eigenvector ``u`` of the most negative Hessian eigenvalue, signed so ``g . u <= 0``.

    Returns ``(u, lambda_min)``. Along ``u`` the loss goes down at second order when
    ``lambda_min < 0`` (a saddle), and the sign keeps the first-order term from opposing it.
    The gradient comes from the same operator (one data layer: its weighting, its eval-mode policy).
    """
    op = HessianOperator(model, loss_fn, data)
    bottom = _extreme_directions(op, 1, "SA", seed, 1e-6)
    u = bottom.vectors[0]
    if torch.dot(op.gradient().to(u), u) > 0:
        u = -u
    return u, float(bottom.eigenvalues[0])


def _extreme_directions(op: HessianOperator, k: int, which: str, seed: int, tol: float) -> HessianDirections:
    """Lanczos on ``op``: ``k`` unit eigenvectors as rows, largest (``"LA"``) or smallest (``"SA"``) first."""
    pairs = lanczos(op, k=min(k, op.n_params), which=which, tol=tol, seed=seed)
    values = pairs.values.detach()
    vectors = pairs.vectors.detach().T  # lanczos gives eigenvectors as columns, (n, k)
    order = torch.argsort(values, descending=(which == "LA"))
    vectors = vectors[order]
    vectors = vectors / vectors.norm(dim=1, keepdim=True)
    return HessianDirections(vectors.contiguous(), values[order], which)
