"""Curvature of a loss: Hessian-vector products, the exact Hessian, Lanczos, density, trace.

One operator type, :class:`HessianOperator` (``H @ v`` without forming H); every solver
takes an operator *or a plain dense symmetric tensor*, so each is tested against exact
linear algebra and works for any other curvature operator with ``shape`` and ``@``.

    >>> op = HessianOperator(model, loss_fn, loader)          # doctest: +SKIP
    >>> top = lanczos(op, k=10, which="LA")                   # doctest: +SKIP
    >>> bottom = lanczos(op, k=10, which="SA")                # doctest: +SKIP
    >>> density = spectral_density(op, n_steps=80)            # doctest: +SKIP
"""

from descentlab.curvature.density import Density, spectral_density
from descentlab.curvature.lanczos import WHICH, Eigenpairs, lanczos
from descentlab.curvature.minimum_ratio import EXACT_LIMIT, MinimumRatio, minimum_ratio
from descentlab.curvature.operator import DENSE_LIMIT, HessianOperator
from descentlab.curvature.trace import TRACE_METHODS, TraceEstimate, trace

__all__ = [
    "HessianOperator",
    "DENSE_LIMIT",
    "lanczos",
    "Eigenpairs",
    "WHICH",
    "spectral_density",
    "Density",
    "trace",
    "TraceEstimate",
    "TRACE_METHODS",
    "minimum_ratio",
    "MinimumRatio",
    "EXACT_LIMIT",
]
