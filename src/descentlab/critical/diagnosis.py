"""Measure the evidence at a stall and name the verdict (:mod:`descentlab.critical.verdicts`).

:func:`examine` works at the model's current parameters on a fixed sample of the data:

1. the **rate**: the optimizer's current rate and the largest it has been (``no_learning_rate``
   needs nothing more, so nothing more is measured);
2. the **gradient** of the loss over all the data where affordable (data in memory, at most
   :data:`FULL_DATA_LIMIT` samples: one pass), else of the sample with its sampling noise
   taken out (E||g_sample||² = ||∇L||² + (S²/n)(1 − n/N), ``critical.noise``): the point is
   critical when ||∇L|| <= ``grad_tol`` · max(1, |L|). A sample's own gradient would not do:
   at the stall preset's saddle the full gradient is 0.0028 and a 512-sample one 0.037;
3. the **point**: :func:`~descentlab.critical.classify` on the sample — the extreme Hessian
   eigenpairs (exact below its dense threshold, else Lanczos at both ends, warm-started from
   the previous stall's eigenvectors, to a residual fit for the sign of λ_min rather than for
   six digits), the kind, probed along flat directions and decided again in float64 where a
   lower precision could hide the sign of an eigenvalue. A sample's Hessian carries the
   sample's own gradient: at a degenerate critical point it can show eigenvalues of ± that
   gradient's size that the data does not have (a deep tanh net near its origin: λ_min = −0.037
   on 512 samples, −0.0017 on all 1,437). So at a critical point the negative curvature that
   makes a saddle (or a maximum) is confirmed on all the data (up to
   :data:`FULL_CURVATURE_LIMIT` samples) by the Rayleigh quotients of its eigenvectors — one
   batched product; vᵀHv < 0 proves a negative eigenvalue — and where it does not hold the
   point is classified again on all the data;
4. the **sharpness** against the optimizer's stability limit (:mod:`~descentlab.critical.stability`;
   for plain and momentum SGD it is the rate times the λ_max already found, for adaptive
   methods one more short Lanczos run on the preconditioned Hessian);
5. the **gradient noise** of mini-batch training (:mod:`~descentlab.critical.noise`: 16 gradients
   of small batches of the sample).

:func:`examine_divergence` does steps 1 and 4 at the last good parameters of a run whose loss
became non-finite. Both return a :class:`Finding` whose evidence is plain data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from descentlab.critical.classify import GRAD_TOL, CriticalPoint, classify
from descentlab.critical.noise import gradient_noise
from descentlab.critical.stability import sharpness, stability_rule
from descentlab.critical.verdicts import LR_ZERO, decide, near_best, remedy, stuck_high
from descentlab.curvature import HessianOperator, lanczos
from descentlab.curvature.batches import as_batches

__all__ = ["Finding", "examine", "examine_divergence", "full_loss_and_grad", "CLASSIFY_DEFAULTS", "FULL_DATA_LIMIT",
           "FULL_CURVATURE_LIMIT"]

#: The gradient test reads all the data when it is in memory and holds at most this many samples.
FULL_DATA_LIMIT = 20_000
#: A critical point's curvature is measured on all the data up to this many samples.
FULL_CURVATURE_LIMIT = 4_096

#: ``classify`` settings of a diagnosis: 2 + 2 extreme eigenpairs (the signs and the escape
#: direction are all a verdict needs), a relative residual of 1e-2 (fit for a sign: an eigenvalue
#: lies within its residual of the Ritz value, 1e-2 · max(|θ|, φ‖H‖) against a zero band of
#: 3.5e-4 ‖H‖ in float32, and λ_max to ~1e-4 for the sharpness; 1e-3 cost digits-cnn 179 products
#: at a near-minimum), at most 300 products, no SLQ minimum-ratio estimate (1,600
#: products that decide nothing), the dense Hessian only up to 256 parameters (the stall
#: preset's 610: dense + eigh 1.7 s, Lanczos at both ends 13 products, 0.1 s), and Lanczos
#: stopped as soon as its Ritz values prove a saddle (``certify_sign``: digits-cnn near its
#: minimum, where a cluster of eigenvalues just under zero cost 117 products, 29).
CLASSIFY_DEFAULTS: Mapping[str, Any] = {"k": 4, "lanczos_tol": 1e-2, "max_matvecs": 300, "ratio_probes": 0,
                                        "dense_threshold": 256, "certify_sign": True}


@dataclass(frozen=True)
class Finding:
    """The verdict at one point, its remedy, its evidence (plain data) and the classified point."""

    verdict: str
    remedy: str
    evidence: dict[str, Any]
    point: CriticalPoint | None = field(default=None, repr=False)


def full_loss_and_grad(model: nn.Module, loss_fn: Callable, data: Any, *, grad: bool = True) -> tuple[float, float]:
    """(loss, gradient norm) of the sample-weighted mean loss over every batch of ``data``.

    The model's ``.grad`` fields are left untouched (``torch.autograd.grad``, not ``backward``).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    total, count = 0.0, 0
    grads = [torch.zeros_like(p) for p in params] if grad else []
    for X, y in as_batches(data):
        n = len(y)
        with torch.set_grad_enabled(grad):
            loss = loss_fn(model(*X) if isinstance(X, (tuple, list)) else model(X), y)
        if grad:
            for acc, g in zip(grads, torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    acc.add_(g, alpha=n)
        total += float(loss.detach()) * n
        count += n
    norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))) / count if grad and grads else 0.0
    return total / count, norm


def rate_evidence(optimizer: Any, peak_lr: float | None, zero_since: int | None = None,
                  total_steps: int | None = None) -> dict[str, Any] | None:
    """The current rate, the largest seen, since when it has been ~0 and the run's length
    (``None`` without an optimizer)."""
    if optimizer is None:
        return None
    lr = float(optimizer.param_groups[0]["lr"])
    return {"lr": lr, "peak_lr": max(lr, peak_lr or 0.0), "zero_since": zero_since, "total_steps": total_steps}


def examine(model: nn.Module, loss_fn: Callable, sample: tuple[Any, torch.Tensor], *, full_data: Any = None,
            optimizer: Any = None, batch_size: int | None = None, n_data: int | None = None,
            peak_lr: float | None = None, lr_zero_since: int | None = None, total_steps: int | None = None,
            loss: Mapping[str, float] | None = None, classify_options: Mapping[str, Any] | None = None,
            v0: torch.Tensor | None = None, seed: int = 0) -> Finding:
    """The verdict at ``model``'s current parameters (the module docstring gives the steps).

    Args:
        sample: the ``(X, y)`` the curvature and the noise are measured on.
        full_data: all the training data as batches, for the gradient test (``None``: the sample's
            gradient, corrected for its sampling noise).
        optimizer: the run's optimizer (its rate, momentum and state); ``None``: no rate verdict.
        batch_size, n_data: the training batch size and the training set's size; the noise is
            measured when ``batch_size < n_data``.
        peak_lr: the largest rate the run has used so far.
        lr_zero_since, total_steps: the step since which the rate has been ~0, and the run's
            length (for the ``no_learning_rate`` remedy).
        loss: ``value``, ``best``, ``initial`` of the tracked loss, for the ``minimum`` verdict.
        classify_options: over :data:`CLASSIFY_DEFAULTS` (``grad_tol`` is the gradient test's).
        v0: a Lanczos warm start (the previous stall's eigenvectors).
    """
    evidence: dict[str, Any] = {"loss": _loss_evidence(loss)}
    rate = rate_evidence(optimizer, peak_lr, lr_zero_since, total_steps)
    evidence["rate"] = rate
    if rate is not None and (rate["lr"] == 0 or rate["lr"] <= LR_ZERO * rate["peak_lr"]):
        verdict = decide(evidence)
        return Finding(verdict, remedy(verdict, evidence), evidence)

    options = {**CLASSIFY_DEFAULTS, "seed": seed, **dict(classify_options or {})}
    grad_tol = float(options.pop("grad_tol", GRAD_TOL))
    if v0 is not None and "v0" not in options:
        options["v0"] = v0
    X, y = sample
    mini_batch = batch_size is not None and n_data is not None and batch_size < n_data
    noise = None
    if mini_batch or full_data is None:
        noise = gradient_noise(model, loss_fn, X, y, batch_size=batch_size or 1, n_data=n_data or len(y), seed=seed)
    if full_data is not None:
        value, norm = full_loss_and_grad(model, loss_fn, full_data)
        source = "all the data"
    else:
        value, _ = full_loss_and_grad(model, loss_fn, sample, grad=False)
        norm, source = noise.grad_norm_sq ** 0.5, f"a sample of {len(y)}, its sampling noise taken out"
    tolerance = grad_tol * max(1.0, abs(value))
    evidence["gradient"] = {"norm": norm, "loss": value, "tolerance": tolerance, "critical": norm <= tolerance,
                            "source": source}
    if mini_batch:
        evidence["noise"] = noise.to_dict()
    elif batch_size is not None and n_data is not None:
        evidence["noise"] = {"batch_size": batch_size, "n_data": n_data, "snr": None, "full_batch": True}

    critical = norm <= tolerance
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        point = classify(model, loss_fn, sample, grad_tol=grad_tol, assume_critical=critical, **options)
        measured_on, confirmed = len(y), None
        if critical and point.kind in ("saddle", "local_max") and full_data is not None:
            full = _one_batch(full_data)
            if len(full[1]) > len(y) and len(full[1]) <= FULL_CURVATURE_LIMIT:
                confirmed = _confirmed_on(model, loss_fn, full, point)
                if not confirmed["held"]:  # the sample's curvature was its own: decide on all the data
                    point = classify(model, loss_fn, full, grad_tol=grad_tol, assume_critical=True,
                                     **{**options, "v0": point.eigenpairs.vectors})
                    measured_on = len(full[1])
    evidence["curvature"] = {
        "kind": point.verdict.kind if point.is_critical else "not_critical",
        "min_eigenvalue": point.min_eigenvalue, "max_eigenvalue": point.max_eigenvalue,
        "degenerate": bool(point.degenerate), "decided_by": point.verdict.decided_by,
        "dtype": point.precision, "eig_tol": point.eig_tol, "method": point.method, "n_params": point.n_params,
        "n_matvecs": point.n_matvecs, "converged": bool(point.eigenpairs.converged), "samples": measured_on,
        "confirmed_on_all_data": confirmed, "warnings": [str(w.message) for w in caught][:3],
    }
    if rate is not None:
        rule = stability_rule(optimizer, model, point.names)
        op = None if not rule.preconditioned else HessianOperator(model, loss_fn, sample, params=point.names)
        value, products = sharpness(rule, op, lambda_max=point.max_eigenvalue if not rule.preconditioned else None,
                                    seed=seed)
        rate.update(_rate_fields(rule, value, products))
    verdict = decide(evidence)
    return Finding(verdict, remedy(verdict, evidence), evidence, point)


def examine_divergence(model: nn.Module, loss_fn: Callable, sample: tuple[Any, torch.Tensor], *, step: int,
                       checkpoint_step: int | None, optimizer: Any = None, state_model: nn.Module | None = None,
                       peak_lr: float | None = None, loss: Mapping[str, float] | None = None, seed: int = 0) -> Finding:
    """The ``diverged`` verdict: λ_max and the sharpness at ``model``, the run's last good
    parameters (``checkpoint_step``), against the optimizer's stability limit. ``state_model`` is
    the model the optimizer steps (its parameters key the optimizer's state; default ``model``)."""
    evidence: dict[str, Any] = {"diverged": {"step": int(step), "checkpoint_step": checkpoint_step},
                                "loss": _loss_evidence(loss)}
    rate = rate_evidence(optimizer, peak_lr)
    evidence["rate"] = rate
    try:
        op = HessianOperator(model, loss_fn, sample)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            top = lanczos(op, k=1, which="LA", tol=1e-2, max_iter=200, seed=seed)
        lambda_max = float(top.values[0])
        evidence["curvature"] = {"max_eigenvalue": lambda_max, "dtype": str(op.dtype).replace("torch.", ""),
                                 "n_matvecs": top.n_matvecs}
        if rate is not None:
            rule = stability_rule(optimizer, state_model if state_model is not None else model, op.names)
            if rule.preconditioned and not all(torch.isfinite(s).all() for s in rule.steps.values()):
                rule = None  # the optimizer's state overflowed with the loss: no preconditioner to read
            if rule is not None:
                value, products = sharpness(rule, op, lambda_max=None if rule.preconditioned else lambda_max, seed=seed)
                rate.update(_rate_fields(rule, value, products))
    except (RuntimeError, ValueError) as error:  # the last good point itself may be unusable
        evidence["curvature"] = {"error": f"{type(error).__name__}: {error}"}
    verdict = "diverged"
    return Finding(verdict, remedy(verdict, evidence), evidence)


def _confirmed_on(model: nn.Module, loss_fn: Callable, data: Any, point: CriticalPoint) -> dict[str, Any]:
    """Does the sample's curvature sign hold on ``data``? The Rayleigh quotients vᵀHv of the
    eigenvectors whose eigenvalues decided the kind (the negative ones of a saddle, all of a
    maximum's), with H the Hessian of ``data``: vᵀHv < 0 proves that H has a negative eigenvalue
    (λ_min <= vᵀHv), whatever the sample; it holds when the most negative one is beyond the zero
    band and, for a maximum, when every one is. One batched product of a few columns."""
    values, vectors = point.eigenpairs.values.double(), point.eigenpairs.vectors
    band = point.eig_tol * max(1.0, float(values.abs().max()))
    chosen = values < -band
    op = HessianOperator(model, loss_fn, data, params=point.names)
    V = vectors[:, chosen.to(vectors.device)].to(op.dtype)
    quotients = ((V * (op @ V)).sum(dim=0) / (V * V).sum(dim=0)).double()
    held = bool((quotients < -band).all()) if point.kind == "local_max" else bool(quotients.min() < -band)
    return {"held": held, "rayleigh_quotients": [float(q) for q in quotients], "band": band,
            "samples": len(data[1])}


def _one_batch(data: Any) -> Any:
    """All the batches of ``data`` as one ``(X, y)`` pair (one cached gradient graph for the products)."""
    batches = as_batches(data)
    if len(batches) == 1:
        return batches[0]
    X = [b[0] for b in batches]
    X = type(X[0])(torch.cat(c) for c in zip(*X)) if isinstance(X[0], (tuple, list)) else torch.cat(X)
    return X, torch.cat([b[1] for b in batches])


def _rate_fields(rule: Any, value: float, products: int) -> dict[str, Any]:
    finite = math.isfinite(value)
    return {"rule": rule.name, "formula": rule.formula, "limit": rule.limit, "sharpness": value if finite else None,
            "ratio": value / rule.limit if finite else None,
            "largest_stable_lr": rule.largest_stable_lr(value) if finite else None, "n_matvecs": products}


def _loss_evidence(loss: Mapping[str, float] | None) -> dict[str, Any] | None:
    if not loss:
        return None
    out = {k: (float(v) if v is not None else None) for k, v in loss.items()}
    out["near_best"] = near_best({"loss": out})
    out["stuck_high"] = stuck_high({"loss": out})
    return out
