"""Curvature of a loss over data: Hessian and Gauss-Newton products, the exact Hessian,
Lanczos, density, trace, per-layer spectra.

One data layer, :class:`EmpiricalLoss` (the loss over the data at a snapshot θ: batch loop,
weighting, eval-mode policy, data check, all-reduce, flattening; a loss ``loss_fn(output,
target)`` or one that runs the model itself, :class:`ModelLoss`), under one operator type,
:class:`CurvatureOperator` (``op @ v``, ``dense()``, ``to_scipy()``), of which
:class:`HessianOperator` and :class:`GGNOperator` are the two kinds. Every solver takes an
operator *or a plain dense symmetric tensor*, so each is tested against exact linear algebra
and works for any other curvature operator with ``shape`` and ``@``. Nothing here draws:
figures are in :mod:`descentlab.report.spectrum_plot`.

    >>> op = HessianOperator(model, loss_fn, loader)          # doctest: +SKIP
    >>> top = lanczos(op, k=10, which="LA")                   # doctest: +SKIP
    >>> bottom = lanczos(op, k=10, which="SA")                # doctest: +SKIP
    >>> split_curvature(op, bottom.vectors[:, 0])             # doctest: +SKIP
    >>> density = spectral_density(op, n_steps=80)            # doctest: +SKIP
"""

from descentlab.curvature.density import Density, spectral_density
from descentlab.curvature.empirical import REDUCTIONS, EmpiricalLoss
from descentlab.curvature.ggn import CurvatureSplit, GGNOperator, residual_operator, split_curvature
from descentlab.curvature.hessian import HessianOperator
from descentlab.curvature.lanczos import WHICH, Eigenpairs, default_tol, lanczos
from descentlab.curvature.layers import LayerSpectrum, layer_spectra, parameter_groups
from descentlab.curvature.losses import ModelLoss, token_cross_entropy
from descentlab.curvature.minimum_ratio import EXACT_LIMIT, MinimumRatio, minimum_ratio
from descentlab.curvature.operator import DENSE_LIMIT, CurvatureOperator, DifferenceOperator
from descentlab.curvature.trace import TRACE_METHODS, TraceEstimate, trace

__all__ = [
    "EmpiricalLoss",
    "REDUCTIONS",
    "ModelLoss",
    "token_cross_entropy",
    "CurvatureOperator",
    "DifferenceOperator",
    "HessianOperator",
    "GGNOperator",
    "residual_operator",
    "split_curvature",
    "CurvatureSplit",
    "DENSE_LIMIT",
    "lanczos",
    "default_tol",
    "Eigenpairs",
    "WHICH",
    "layer_spectra",
    "LayerSpectrum",
    "parameter_groups",
    "spectral_density",
    "Density",
    "trace",
    "TraceEstimate",
    "TRACE_METHODS",
    "minimum_ratio",
    "MinimumRatio",
    "EXACT_LIMIT",
]
