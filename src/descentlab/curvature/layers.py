"""Per-layer spectra: the extreme eigenvalues and minimum ratio of each parameter group's
diagonal Hessian block.

A group (by default: the parameters a module owns directly, e.g. ``"0"`` = ``0.weight`` and
``0.bias``) has the Hessian block H_gg = ∂²L/∂θ_g², the curvature of the loss when only that
group moves. It is a principal submatrix of H, so by Cauchy's interlacing theorem its
eigenvalues lie in [λ_min(H), λ_max(H)]: a negative eigenvalue in any block proves that H has
one, and the blocks say which layer holds the sharp directions and which the negative ones
(layer-wise spectra as in Sankar et al. 2021, "A deeper look at the Hessian eigenspectrum of
deep neural networks and its applications to regularization", AAAI). A block of at most
``exact_limit`` parameters is formed and solved exactly (``torch.linalg.eigvalsh``); a larger
one gets Lanczos at both ends and the minimum ratio from stochastic Lanczos quadrature.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from descentlab.checks import check_int, check_number
from descentlab.curvature.hessian import HessianOperator
from descentlab.curvature.lanczos import lanczos
from descentlab.curvature.minimum_ratio import minimum_ratio

__all__ = ["LayerSpectrum", "layer_spectra", "parameter_groups", "LAYER_EXACT_LIMIT"]

#: Groups of at most this many parameters get their block formed and every eigenvalue.
LAYER_EXACT_LIMIT = 2_000


@dataclass(frozen=True, repr=False)
class LayerSpectrum:
    """The spectrum of one parameter group's Hessian block.

    Attributes:
        name: the group's name (a module prefix, or the key given).
        names: the parameter names in the group.
        n_params: its size.
        min_eigenvalue, max_eigenvalue: the block's extreme eigenvalues.
        minimum_ratio: fraction of its eigenvalues above the threshold ``tol``.
        minimum_ratio_std_error: 0 when exact, else the SLQ standard error.
        tol: the threshold used.
        exact: every eigenvalue was computed (else Lanczos + SLQ).
        n_matvecs: Hessian-vector products spent on it (``n_params`` for a formed block).
    """

    name: str
    names: tuple[str, ...]
    n_params: int
    min_eigenvalue: float
    max_eigenvalue: float
    minimum_ratio: float
    minimum_ratio_std_error: float
    tol: float
    exact: bool
    n_matvecs: int

    def __repr__(self) -> str:
        ratio = (f"{self.minimum_ratio:.4g} (exact)" if self.exact
                 else f"{self.minimum_ratio:.4g} ± {self.minimum_ratio_std_error:.2g} (estimated)")
        return (f"LayerSpectrum({self.name!r}, n_params={self.n_params:,}, min_eigenvalue={self.min_eigenvalue:.6g}, "
                f"max_eigenvalue={self.max_eigenvalue:.6g}, minimum_ratio={ratio}, n_matvecs={self.n_matvecs})")


def parameter_groups(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, tuple[str, ...]]:
    """``{module prefix: its own parameter names}`` for the parameters in ``names`` (default:
    those that require grad), in the model's order; top-level parameters are grouped as ``"(model)"``."""
    if names is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.rpartition(".")[0] or "(model)", []).append(name)
    return {k: tuple(v) for k, v in groups.items()}


def layer_spectra(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    data: Any,
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    eig_tol: float | None = None,
    exact_limit: int = LAYER_EXACT_LIMIT,
    n_steps: int = 80,
    n_probes: int = 8,
    seed: int = 0,
    **operator_options: Any,
) -> list[LayerSpectrum]:
    """The spectrum of each parameter group's Hessian block at the model's current parameters.

    Args:
        model, loss_fn, data: as :class:`~descentlab.curvature.HessianOperator` (the data is
            read once; every group's operator shares it).
        groups: ``{name: parameter names or module prefixes}``; default
            :func:`parameter_groups` (one group per module that owns parameters).
        eig_tol: an eigenvalue counts as positive when it exceeds
            ``eig_tol · max(1, max|λ_g|)`` (the convention of ``descentlab.critical``);
            ``None``: :func:`~descentlab.curvature.minimum_ratio`'s own threshold.
        exact_limit: groups up to this size are formed and solved exactly.
        n_steps, n_probes, seed: SLQ and Lanczos settings for larger groups.
        operator_options: passed to :class:`~descentlab.curvature.HessianOperator`
            (``eval_mode``, ``reduction``, ``chunk_size``, ...).

    Returns:
        one :class:`LayerSpectrum` per group, in order.
    """
    check_int("exact_limit", exact_limit, low=1)
    if eig_tol is not None:
        check_number("eig_tol", eig_tol)
    full = HessianOperator(model, loss_fn, data, **operator_options)
    if groups is None:
        groups = parameter_groups(model, full.names)
    if not groups:
        raise ValueError("groups must name at least one parameter group")
    found = []
    for name, members in groups.items():
        op = HessianOperator.like(full, params=list(members), chunk_size=full.chunk_size,
                                  dense_limit=max(full.dense_limit, exact_limit))
        found.append(_spectrum(name, op, eig_tol, exact_limit, n_steps, n_probes, seed))
    return found


def _spectrum(name: str, op: HessianOperator, eig_tol, exact_limit, n_steps, n_probes, seed) -> LayerSpectrum:
    if op.n_params <= exact_limit:
        eig = torch.linalg.eigvalsh(op.dense().double())
        low, high = float(eig[0]), float(eig[-1])
        tol = (eig_tol * max(1.0, abs(low), abs(high)) if eig_tol is not None
               else op.n_params * torch.finfo(op.dtype).eps * max(abs(low), abs(high)))
        ratio = float((eig > tol).double().mean())
        return LayerSpectrum(name, op.names, op.n_params, low, high, ratio, 0.0, float(tol), True, op.n_params)
    ends = lanczos(op, k=2, which="BE", seed=seed)
    low, high = float(ends.values.min()), float(ends.values.max())
    tol = None if eig_tol is None else eig_tol * max(1.0, abs(low), abs(high))
    ratio = minimum_ratio(op, tol=tol, method="estimated", n_steps=n_steps, n_probes=n_probes, seed=seed)
    return LayerSpectrum(name, op.names, op.n_params, low, high, ratio.value, ratio.std_error, ratio.tol, False,
                         ends.n_matvecs + ratio.n_matvecs)
