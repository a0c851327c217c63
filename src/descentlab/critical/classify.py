"""Classify the point a network sits at: not critical, local minimum, local maximum or saddle.

At a critical point (g = ∇L(θ) ≈ 0) the Taylor expansion L(θ + v) ≈ L(θ) + ½ vᵀHv makes the
Hessian's eigenvalues decide (the lecture's second-order test); the decision itself is made in
one place, :func:`descentlab.critical.rules.classify_eigenvalues`, so a network and a 2-D
surface are named the same way. This module gathers what that rule needs from a model:

* **the gradient test** — the point is critical when ``||g|| <= grad_tol · max(1, |L(θ)|)``:
  absolute for losses of order one or smaller, relative to the loss for larger ones, so
  multiplying the loss by 1000 (which multiplies g by 1000 too) does not change the verdict;
* **the spectrum** — models with at most :data:`DENSE_THRESHOLD` parameters get the exact
  Hessian (``op.dense()`` + ``torch.linalg.eigh``: every eigenvalue, the exact minimum ratio,
  every flat direction); larger ones get Lanczos at both ends of the spectrum (the ``k // 2``
  most negative and ``k - k // 2`` largest eigenpairs: the signs present decide the kind) and
  an estimated minimum ratio from stochastic Lanczos quadrature, with its standard error;
* **the zero test** — an eigenvalue counts as zero when ``|λ| <= eig_tol · max(1, max|λ|)``
  (the rule's convention); a degenerate point that the signs do not already call a saddle is
  probed along its near-zero directions (the rule's probe: a fall makes it a saddle, otherwise
  it keeps the kind of its non-zero eigenvalues: the lecture's curve w1·w2 = 1 of minima).
  The probed loss has its linear term removed, L(θ′) − gᵀ(θ′ − θ), so a gradient the test
  already called negligible cannot masquerade as a falling direction;
* **the sign in float64** — in a lower precision an eigenvalue inside the zero band
  (``√ε · max(1, max|λ|)``, 3.5e-4 in float32) may be a real negative curvature that rounding
  hides, and a probe's loss differences below ~100 ε cannot be seen: a deep tanh network
  (64-16-16-16-10 on digits, near its origin, 1,000 full-batch steps) has λ_min = −3.3e-5, which
  float32 calls zero, and its probe sees no descent: a "degenerate minimum" that is a saddle. So a critical point that the low
  precision would call a minimum, a maximum or flat *with* near-zero eigenvalues is decided
  again on a float64 copy of the model (same data, Lanczos warm-started from the
  low-precision eigenvectors, the probe in float64); ``precision`` says which dtype decided.
  A certain verdict (a saddle from eigenvalues of both signs beyond the band, or a strict
  minimum) is never recomputed: rounding cannot flip a sign that far from zero;
* **the gradient-flat check** — ``||Hg|| / ||g||``, the curvature felt along the gradient.
  It never exceeds max|λ|; near zero the gradient lies in the Hessian's (near-)null space, a
  *gradient-flat* region where g ≠ 0 yet Newton-type methods stall (Frye et al. 2021,
  "Critical point-finding methods reveal gradient-flat regions of deep network losses",
  Neural Computation 33(6)).

Why :data:`DENSE_THRESHOLD` = 1,000: the exact path costs n batched Hessian-vector products
plus one O(n³) ``eigh``; the Lanczos path a few dozen to a few hundred products for the
extremes *plus* ``ratio_probes · ratio_steps`` (1,600 by default) for the estimated minimum
ratio, whatever n. So the exact path is the cheaper one on small models and the cubic
``eigh`` makes it the dearer one on larger models; the threshold lies just below the crossing
found by timing both paths on a tanh MLP (the timings are in ``bench/RESULTS.md``), and up to it
the exact path is also *exact* (every eigenvalue, the true minimum ratio, every flat
direction).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from descentlab.critical.rules import EIG_TOL, Verdict, classify_eigenvalues
from descentlab.checks import check_number
from descentlab.curvature import EmpiricalLoss, Eigenpairs, HessianOperator, lanczos, minimum_ratio
from descentlab.curvature.losses import read_batches

__all__ = ["CriticalPoint", "classify", "DENSE_THRESHOLD", "GRAD_TOL", "KINDS", "METHODS", "default_tolerances"]

#: Models with at most this many (selected) parameters get the exact Hessian (see the module docstring).
DENSE_THRESHOLD = 1_000

#: Default gradient tolerance: critical when ``||g|| <= GRAD_TOL · max(1, |L|)``.
GRAD_TOL = 1e-2

#: The kinds :func:`classify` names.
KINDS = ("not_critical", "local_min", "local_max", "saddle")

#: ``method`` values: ``"auto"`` (exact up to ``dense_threshold`` parameters), ``"exact"``, ``"lanczos"``.
METHODS = ("auto", "exact", "lanczos")

#: Flat directions probed one by one at most (seeded random mixtures of all of them come on top).
PROBE_DIRECTIONS = 32

def default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """``(eig_tol, lanczos_tol)`` used when ``classify`` is not given them, for a model of ``dtype``.

    float64: ``eig_tol = 1e-6`` (the rule's :data:`~descentlab.critical.rules.EIG_TOL`) and
    Lanczos residuals of ``1e-6``. Lower precision: Hessian-vector products carry relative
    round-off near 1e-6, which Lanczos turns into spurious eigenvalues of about ``√ε · max|λ|``
    around zero, so zero means ``|λ| <= √ε · max(1, max|λ|)`` (3.5e-4 in float32) and residuals
    stop at ``1e-4``.
    """
    if dtype == torch.float64:
        return EIG_TOL, 1e-6
    return max(EIG_TOL, math.sqrt(torch.finfo(dtype).eps)), 1e-4


@dataclass(frozen=True, eq=False, repr=False)
class CriticalPoint:
    """What :func:`classify` found at a model's current parameters.

    Attributes:
        kind: ``"not_critical"`` (the gradient test fails; the eigenvalues are still reported),
            ``"local_min"``, ``"local_max"`` or ``"saddle"``. A point whose Hessian is zero and
            whose loss is flat along every probe is a (flat, degenerate) ``"local_min"``.
        degenerate: some eigenvalue is zero within ``eig_tol`` at a critical point (second order
            alone cannot decide; ``verdict.decided_by`` says whether a probe did). ``False`` at a
            point that is not critical, where the second-order test does not apply.
        loss: the dataset-mean loss.
        grad_norm: ``||g||`` of the dataset-mean loss.
        min_eigenvalue, max_eigenvalue: the Hessian's extreme eigenvalues.
        minimum_ratio: fraction of eigenvalues > ``eig_tol · max(1, max|λ|)`` (zeros are not positive).
        minimum_ratio_exact: computed from every eigenvalue (exact path) or estimated (SLQ).
        minimum_ratio_std_error: 0 when exact; the standard error over SLQ probes when estimated.
        minimum_ratio_bounds: ``(ratio, ratio)`` when exact; when estimated, the quadrature's
            Chebyshev-Markov-Stieltjes bracket, which also covers the bias the standard error misses.
        eigenpairs: the extreme :class:`~descentlab.curvature.Eigenpairs`, ascending: the
            ``k // 2`` most negative, then the ``k - k // 2`` largest (all of them when n <= k).
            Vectors are flat over ``names``, unit norm.
        hg_over_g: ``||Hg|| / ||g||`` (``None`` when g = 0); see :attr:`gradient_flatness`.
        grad_tol, eig_tol: the tolerances used (semantics in the module docstring).
        method: ``"exact"`` or ``"lanczos"``.
        verdict: the rule's :class:`~descentlab.critical.rules.Verdict` (eigenvalue counts —
            over all eigenvalues on the exact path, over the extremes on the Lanczos path —,
            how the kind was decided, the probe).
        n_params: parameters differentiated.
        n_matvecs: Hessian-vector products spent.
        names: the parameter names, in the order of the flat vectors.
        parameters: the flat parameter values classified (what :func:`~descentlab.critical.escape` checks).
        gradient: the flat gradient there.
        spectrum: every eigenvalue, ascending (float64), on the exact path; ``None`` otherwise.
        precision: the dtype whose eigenvalues decided the kind (``"float64"`` after a re-check).
    """

    kind: str
    degenerate: bool
    loss: float
    grad_norm: float
    min_eigenvalue: float
    max_eigenvalue: float
    minimum_ratio: float
    minimum_ratio_exact: bool
    minimum_ratio_std_error: float
    minimum_ratio_bounds: tuple[float, float]
    eigenpairs: Eigenpairs
    hg_over_g: float | None
    grad_tol: float
    eig_tol: float
    method: str
    verdict: Verdict
    n_params: int
    n_matvecs: int
    names: tuple[str, ...] = field(default=())
    parameters: torch.Tensor | None = None
    gradient: torch.Tensor | None = None
    spectrum: torch.Tensor | None = None
    precision: str = ""

    @property
    def is_critical(self) -> bool:
        """The gradient test passed (``kind != "not_critical"``)."""
        return self.kind != "not_critical"

    @property
    def minimum_ratio_method(self) -> str:
        """``"exact"`` (every eigenvalue) or ``"estimated"`` (SLQ, see ``minimum_ratio_std_error``)."""
        return "exact" if self.minimum_ratio_exact else "estimated"

    @property
    def gradient_flatness(self) -> float | None:
        """``||Hg|| / (||g|| · max|λ|)`` in [0, 1]: 0 when the gradient lies in the Hessian's
        null space (gradient-flat), 1 when it points along the sharpest direction."""
        radius = max(abs(self.min_eigenvalue), abs(self.max_eigenvalue))
        if self.hg_over_g is None or radius == 0:
            return None
        return min(1.0, self.hg_over_g / radius)

    def __repr__(self) -> str:
        ratio = (f"{self.minimum_ratio:.4g} (exact)" if self.minimum_ratio_exact
                 else f"{self.minimum_ratio:.4g} ± {self.minimum_ratio_std_error:.2g} in "
                      f"[{self.minimum_ratio_bounds[0]:.3g}, {self.minimum_ratio_bounds[1]:.3g}] (estimated)")
        hg = "n/a" if self.hg_over_g is None else f"{self.hg_over_g:.3g}"
        return (
            f"CriticalPoint(kind={self.kind!r}, degenerate={self.degenerate}, loss={self.loss:.6g}, "
            f"grad_norm={self.grad_norm:.3g}, min_eigenvalue={self.min_eigenvalue:.6g}, "
            f"max_eigenvalue={self.max_eigenvalue:.6g}, minimum_ratio={ratio}, ||Hg||/||g||={hg}, "
            f"method={self.method!r}, n_params={self.n_params}, n_matvecs={self.n_matvecs}, "
            f"grad_tol={self.grad_tol:g}, eig_tol={self.eig_tol:g}, decided_by={self.verdict.decided_by!r})"
        )


def classify(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    data: Any,
    *,
    grad_tol: float = GRAD_TOL,
    eig_tol: float | None = None,
    k: int = 10,
    method: str = "auto",
    dense_threshold: int = DENSE_THRESHOLD,
    params: Iterable[str | torch.Tensor] | None = None,
    probe: bool = True,
    lanczos_tol: float | None = None,
    ratio_probes: int = 16,
    ratio_steps: int = 100,
    seed: int = 0,
    max_matvecs: int | None = None,
    v0: torch.Tensor | None = None,
    recheck: bool = True,
    assume_critical: bool | None = None,
    certify_sign: bool = False,
) -> CriticalPoint:
    """Classify the model's current parameters as a critical point of the dataset-mean loss.

    Args:
        model: any ``nn.Module``; device and dtype follow it. It is not changed.
        loss_fn: ``loss_fn(output, target)``, the mean loss over a batch.
        data: one ``(X, y)`` pair or an iterable of ``(X, y)`` batches (weighted by size).
        grad_tol: critical when ``||g|| <= grad_tol · max(1, |L|)`` (default :data:`GRAD_TOL`).
        eig_tol: zero when ``|λ| <= eig_tol · max(1, max|λ|)``; ``None``: by dtype,
            :func:`default_tolerances`.
        k: extreme eigenpairs to report, ``k // 2`` from the bottom and the rest from the top
            (>= 2, so both ends are seen).
        method: ``"auto"`` (exact when n <= ``dense_threshold``), ``"exact"`` or ``"lanczos"``.
        dense_threshold: the ``"auto"`` size limit (default :data:`DENSE_THRESHOLD`).
        params: which parameters (as :class:`~descentlab.curvature.HessianOperator`'s ``params``).
        probe: probe the flat directions of a degenerate critical point with the loss.
        lanczos_tol: Lanczos residual tolerance; ``None``: by dtype, :func:`default_tolerances`.
        ratio_probes, ratio_steps: SLQ settings of the estimated minimum ratio (Lanczos path);
            ``ratio_probes=0`` skips the estimate (``minimum_ratio`` is NaN, bounds (0, 1)).
        seed: seeds Lanczos, the SLQ probes and the random probe directions.
        max_matvecs: most Hessian-vector products Lanczos may spend (``None``: its default).
        v0: a warm start for Lanczos (e.g. the eigenvectors found at a nearby point).
        recheck: decide again in float64 when a lower precision could hide an eigenvalue's
            sign (see the module docstring).
        assume_critical: ``None``: the gradient test on ``data`` decides; ``True``/``False``: the
            caller has decided (e.g. from the gradient of more data than the curvature sample:
            a sample's gradient carries its sampling noise, so a critical point of the whole
            data is rarely one of the sample).
        certify_sign: at a critical point on the Lanczos path, stop as soon as the Ritz values
            prove eigenvalues of both signs beyond the zero band (a saddle: λ_min <= θ_min < −band
            and λ_max >= θ_max > band, each Ritz value being a Rayleigh quotient), once the top
            pair, which sets the band, has converged. The kind is then exact; ``min_eigenvalue``
            is an upper bound of λ_min (``eigenpairs.converged`` tells). For verdicts, where a
            cluster of tiny negative eigenvalues near zero can otherwise cost 100+ products.

    Returns:
        :class:`CriticalPoint`.

    Example (the lecture's saddle: L = (1 − w1·w2)², H = [[0, −2], [−2, 0]] at the origin)::

        >>> point = classify(lecture_model_at_origin, mse_loss, (x, y))   # doctest: +SKIP
        >>> point.kind, point.min_eigenvalue, point.max_eigenvalue        # doctest: +SKIP
        ('saddle', -2.0, 2.0)
    """
    _check_tolerance("grad_tol", grad_tol)
    if eig_tol is not None:
        _check_tolerance("eig_tol", eig_tol)
    if lanczos_tol is not None and (isinstance(lanczos_tol, bool) or not isinstance(lanczos_tol, (int, float))
                                    or not (math.isfinite(lanczos_tol) and lanczos_tol > 0)):
        raise ValueError(f"lanczos_tol must be a positive number, got {lanczos_tol!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2 (both ends of the spectrum), got {k!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(dense_threshold, bool) or not isinstance(dense_threshold, int) or dense_threshold < 1:
        raise ValueError(f"dense_threshold must be a positive integer, got {dense_threshold!r}")
    for name, value in (("ratio_probes", ratio_probes), ("ratio_steps", ratio_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2 and not (name == "ratio_probes" and value == 0):
            raise ValueError(f"{name} must be an integer >= 2 (ratio_probes: or 0, no estimate), got {value!r}")
    if max_matvecs is not None and (isinstance(max_matvecs, bool) or not isinstance(max_matvecs, int) or max_matvecs < 1):
        raise ValueError(f"max_matvecs must be a positive integer or None, got {max_matvecs!r}")

    batches = read_batches(loss_fn, data)
    op = HessianOperator(model, loss_fn, batches, params=params)
    default_eig, default_lanczos = default_tolerances(op.dtype)
    eig_tol = default_eig if eig_tol is None else float(eig_tol)
    lanczos_tol = default_lanczos if lanczos_tol is None else float(lanczos_tol)

    loss = float(op.loss())
    gradient = op.gradient()
    grad_norm = float(gradient.norm())
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise ValueError(f"model: the loss or its gradient is not finite at these parameters (loss={loss}, "
                         f"||g||={grad_norm}); there is no critical point to classify")
    critical = grad_norm <= grad_tol * max(1.0, abs(loss)) if assume_critical is None else bool(assume_critical)
    theta = op.point

    exact = method == "exact" or (method == "auto" and op.n_params <= dense_threshold)
    spectrum = all_vectors = None
    if exact:
        hessian = op.dense().double()
        spectrum, all_vectors = torch.linalg.eigh(hessian)
        pairs = _extremes(hessian, spectrum, all_vectors, k, op.dtype, n_matvecs=op.n_params)
        values_for_rule, vectors_for_rule = spectrum, all_vectors
    else:
        start = v0 if v0 is not None and v0.shape[0] == op.n_params else None  # a warm start is only a hint
        stop = _saddle_certified(eig_tol, lanczos_tol) if certify_sign and critical else None
        pairs = lanczos(op, k=min(k, op.n_params), which="BE", tol=lanczos_tol, seed=seed, max_iter=max_matvecs,
                        v0=start, stop=stop)
        values_for_rule, vectors_for_rule = pairs.values, pairs.vectors
    n_matvecs = pairs.n_matvecs

    if grad_norm > 0:
        hg_over_g = float((op @ gradient).norm()) / grad_norm
        n_matvecs += 1
    else:
        hg_over_g = None

    if critical and probe:
        objective = FlatLoss(model, loss_fn, batches, op.names)
        linear_free = _without_linear_term(objective, theta, gradient)
        verdict = classify_eigenvalues(
            values_for_rule, eig_tol, eigenvectors=vectors_for_rule.to(op.dtype), loss=linear_free, point=theta,
            tol=max(1e-12, 100 * torch.finfo(op.dtype).eps), seed=seed, max_directions=PROBE_DIRECTIONS,
        )
    else:
        verdict = classify_eigenvalues(values_for_rule, eig_tol)

    values = pairs.values.double()
    lowest, highest = float(values.min()), float(values.max())
    if exact:
        ratio, ratio_error = verdict.minimum_ratio, 0.0
        bounds = (float(ratio), float(ratio))
    elif ratio_probes == 0:
        ratio, ratio_error, bounds = math.nan, math.nan, (0.0, 1.0)
    else:
        threshold = eig_tol * max(1.0, abs(lowest), abs(highest))
        estimate = minimum_ratio(op, tol=threshold, method="estimated", n_steps=ratio_steps,
                                 n_probes=ratio_probes, seed=seed)
        ratio, ratio_error = estimate.value, estimate.std_error
        bounds = (estimate.lower, estimate.upper)
        n_matvecs += estimate.n_matvecs

    if critical:
        kind = "local_min" if verdict.kind == "flat" else verdict.kind
        degenerate = verdict.degenerate
    else:
        kind, degenerate = "not_critical", False
    point = CriticalPoint(
        kind=kind, degenerate=degenerate, loss=loss, grad_norm=grad_norm, min_eigenvalue=lowest,
        max_eigenvalue=highest, minimum_ratio=float(ratio), minimum_ratio_exact=exact,
        minimum_ratio_std_error=float(ratio_error), minimum_ratio_bounds=bounds, eigenpairs=pairs, hg_over_g=hg_over_g, grad_tol=float(grad_tol),
        eig_tol=eig_tol, method="exact" if exact else "lanczos", verdict=verdict, n_params=op.n_params,
        n_matvecs=n_matvecs, names=op.names, parameters=theta, gradient=gradient, spectrum=spectrum,
        precision=str(op.dtype).replace("torch.", ""),
    )
    if recheck and op.dtype != torch.float64 and critical and degenerate and kind != "saddle":
        point = _decide_in_float64(point, model, loss_fn, batches, dict(
            grad_tol=grad_tol, k=k, method="exact" if exact else "lanczos", dense_threshold=dense_threshold,
            params=op.names, probe=probe, ratio_probes=ratio_probes if exact else 0, ratio_steps=ratio_steps,
            seed=seed, max_matvecs=max_matvecs, assume_critical=True))
    return point


def _decide_in_float64(point: CriticalPoint, model: nn.Module, loss_fn: Callable, batches: list,
                       options: dict[str, Any]) -> CriticalPoint:
    """``point``'s kind decided again on a float64 copy of ``model`` (same data, Lanczos warm-started
    from ``point``'s eigenvectors); the parameters, loss and gradient stay those of ``model``. A loss
    that is a module (``nn.CrossEntropyLoss(weight=...)``) is copied to float64 with it. Where the
    copy cannot be decided (a loss function holding a float32 tensor of its own; products that are
    rounding alone, a loss of exactly 0 whose Lanczos basis cannot be kept orthonormal), ``point``
    stays as it was decided, its ``precision`` saying so."""
    import copy
    from dataclasses import replace

    model64 = copy.deepcopy(model).double()
    loss64 = copy.deepcopy(loss_fn).double() if isinstance(loss_fn, nn.Module) else loss_fn
    try:
        again = classify(model64, loss64, batches, v0=point.eigenpairs.vectors.double() if point.method == "lanczos"
                         else None, recheck=False, **options)
    except RuntimeError:  # no float64 answer to be had: the first one stands, its precision named
        return point
    pairs = again.eigenpairs
    pairs = Eigenpairs(pairs.values.to(point.eigenpairs.values.dtype), pairs.vectors.to(point.eigenpairs.vectors.dtype),
                       pairs.residuals, pairs.n_matvecs, pairs.which, pairs.converged, pairs.n_restarts)
    ratio = (again.minimum_ratio, again.minimum_ratio_std_error, again.minimum_ratio_bounds) if point.method == "exact" \
        else (point.minimum_ratio, point.minimum_ratio_std_error, point.minimum_ratio_bounds)
    return replace(point, kind=again.kind, degenerate=again.degenerate, min_eigenvalue=again.min_eigenvalue,
                   max_eigenvalue=again.max_eigenvalue, minimum_ratio=ratio[0], minimum_ratio_std_error=ratio[1],
                   minimum_ratio_bounds=ratio[2], eigenpairs=pairs, eig_tol=again.eig_tol, verdict=again.verdict,
                   n_matvecs=point.n_matvecs + again.n_matvecs, spectrum=again.spectrum, precision="float64")


class FlatLoss(EmpiricalLoss):
    """The loss over the data as a function of the flat vector of the named parameters.

    ``FlatLoss(model, loss_fn, batches, names)(theta)`` is the curvature layer's
    :class:`~descentlab.curvature.EmpiricalLoss` at ``theta``: the model evaluated with
    ``theta`` in place of those parameters (the model itself is untouched), batches weighted
    as the Hessian operator weights them, dropout and batch-norm in eval mode, sums
    all-reduced under ``torch.distributed`` so every rank takes the same decisions.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, batches: Any, names: tuple[str, ...]) -> None:
        super().__init__(model, loss_fn, batches, params=list(names), eval_mode=True)


def _without_linear_term(objective: FlatLoss, theta: torch.Tensor, gradient: torch.Tensor):
    """θ′ ↦ L(θ′) − gᵀ(θ′ − θ): what the probe sees beyond the (negligible) first-order term."""
    def loss(point: torch.Tensor) -> torch.Tensor:
        return objective(point) - torch.dot(gradient, point - theta)
    return loss


def _saddle_certified(eig_tol: float, lanczos_tol: float) -> Callable[[torch.Tensor, torch.Tensor], bool]:
    """A Lanczos ``stop`` rule: Ritz values of both signs beyond the zero band
    ``eig_tol · max(1, max|λ|)``, with the band taken from the top Ritz pair once it has converged
    (widened by the tolerance, as λ_max may still lie a little above it)."""
    def stop(theta: torch.Tensor, residuals: torch.Tensor) -> bool:
        top = int(theta.argmax())
        if float(residuals[top]) > lanczos_tol:
            return False
        low, high = float(theta[0]), float(theta[top])
        band = eig_tol * max(1.0, abs(low), high * (1 + lanczos_tol))
        return low < -band and high > band
    return stop


def _extremes(hessian: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor, k: int,
              dtype: torch.dtype, n_matvecs: int) -> Eigenpairs:
    """The exact path's extreme pairs in :class:`Eigenpairs` form (ascending, both ends)."""
    n = values.numel()
    device = values.device
    if n <= k:
        index = torch.arange(n, device=device)
    else:
        low = k // 2
        index = torch.cat([torch.arange(low, device=device), torch.arange(n - (k - low), n, device=device)])
    chosen_values, chosen_vectors = values[index], vectors[:, index]
    # the same sign convention as lanczos: each column's largest-magnitude entry is positive
    top = chosen_vectors.abs().argmax(dim=0)
    signs = torch.sign(chosen_vectors[top, torch.arange(index.numel(), device=device)])
    chosen_vectors = chosen_vectors * torch.where(signs == 0, torch.ones_like(signs), signs)
    norm = float(values.abs().max()) if n else 0.0  # the spectral norm, from the eigenvalues we have
    floor = torch.finfo(torch.float64).eps ** (2 / 3) * max(norm, 1e-300)
    residual = (hessian @ chosen_vectors - chosen_vectors * chosen_values).norm(dim=0)
    residual = residual / chosen_values.abs().clamp_min(floor)
    return Eigenpairs(chosen_values.to(dtype), chosen_vectors.to(dtype), residual, n_matvecs, "BE", True, 0)


def _check_tolerance(name: str, value: Any) -> None:
    check_number(name, value)
