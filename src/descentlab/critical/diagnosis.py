"""Measure the evidence at a stall and name the verdict (:mod:`descentlab.critical.verdicts`).

:func:`examine` works at the model's current parameters on a fixed sample of the data:

1. the **rate**: the optimizer's current rate and the largest it has been (``no_learning_rate``
   needs nothing more, so nothing more is measured);
2. the **gradient** of the loss over all the data where affordable (data in memory, at most
   :data:`FULL_DATA_LIMIT` samples: one pass), else of the sample with its sampling noise
   taken out (E||g_sample||² = ||∇L||² + (S²/n)(1 − n/N), ``critical.noise``): the point is
   critical when ||∇L|| <= ``grad_tol`` · max(1, |L|). A sample's own gradient would not do:
   at the stall preset's saddle the full gradient is 0.0028 and a 512-sample one 0.037.
   Against it the loop's own gradient (the norms the monitor read after each step): 4x the
   norm a fresh batch gradient has here, and 10x the run's first, is a sum over past steps
   (``accumulating_gradient``; only then is the noise of step 5 measured this early);
3. the **point**, where it is critical (no verdict reads the curvature of a point that is not:
   there only step 4 is measured, the top eigenvalue alone):
   :func:`~descentlab.critical.classify` on the sample — the extreme Hessian
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
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from descentlab.critical.classify import CriticalPoint, classify
from descentlab.critical.coverage import held_share
from descentlab.critical.kink import step_curvature
from descentlab.critical.decay import decay_pull, decayed_escape_curvature, has_decay
from descentlab.critical.layer_signals import measure_layers
from descentlab.critical.noise import NoiseEstimate, gradient_noise
from descentlab.critical.options import DiagnosisOptions
from descentlab.critical.remedies import MOMENTUM
from descentlab.critical.stability import (StabilityRule, current_rate, eps_bound_share, maximizes,
                                           momentum_option, ring_half_life, sharpness, stability_rule,
                                           steps_per_coordinate)
from descentlab.critical.verdicts import (ACCUMULATED, ACCUMULATED_GROWTH, LR_ZERO, biased, decide,
                                          decide_without_curvature, near_best, remedy, stuck_high)
from descentlab.curvature import EmpiricalLoss, HessianOperator, lanczos
from descentlab.curvature.batches import batch_size as batch_count
from descentlab.curvature.batches import non_finite_rows, take
from descentlab.curvature.empirical import UPCAST, mode_dependent_modules, trains_batch_norm
from descentlab.ranks import smallest

__all__ = ["Finding", "examine", "examine_divergence", "look_evidence", "rate_evidence", "standardized_rate",
           "batches_evidence", "fair_low", "lowest_direction", "escape_reach", "decay_evidence",
           "FULL_DATA_LIMIT", "FULL_CURVATURE_LIMIT", "FAIR_SAMPLES", "FAIR_DRAWN", "RATE_PRODUCTS", "RATE_LEAST",
           "POINT_PRODUCTS"]

#: The gradient test reads all the data when it is in memory and holds at most this many samples.
FULL_DATA_LIMIT = 20_000
#: The batches' fair reading (:func:`fair_low`) takes at most this many samples' losses one by one ...
FAIR_SAMPLES = 256
#: ... and resamples intervals of at most this many (2,000 of them: 66 MB of indices at the cap).
FAIR_DRAWN = 4096
#: A critical point's curvature is measured on all the data up to this many samples.
FULL_CURVATURE_LIMIT = 4_096
#: Hessian-vector products a rate test is expected to take (Lanczos for one eigenvalue to 1 %:
#: what a rate test the budget cut short waits for) ...
RATE_PRODUCTS = 15
#: ... the fewest it starts with (the budget's first ask; more are asked one at a time) ...
RATE_LEAST = 4
#: ... and a critical point's classification (both ends of the spectrum, its rate test after).
POINT_PRODUCTS = 60


@dataclass(frozen=True)
class Finding:
    """The verdict at one point, its remedy, its evidence (plain data) and the classified point
    (``verdict`` and ``remedy`` are ``None`` when the Hessian was needed and not afforded)."""

    verdict: str | None
    remedy: str | None
    evidence: dict[str, Any]
    point: CriticalPoint | None = field(default=None, repr=False)


def rate_evidence(optimizer: Any, peak_lr: float | None, zero_since: int | None = None,
                  total_steps: int | None = None, first_lr: float | None = None,
                  rising: bool | None = None) -> dict[str, Any] | None:
    """The current rate, the largest seen, since when it has been ~0, the run's length, the rate at
    the run's first check, whether it rose at the last, whether the optimizer's steps move a
    coordinate by about the rate whatever its gradient's size, whether it climbs the gradient
    (``maximize``), and its ``momentum`` option (``None`` without an optimizer)."""
    if optimizer is None:
        return None
    lr = current_rate(optimizer)
    return {"lr": lr, "peak_lr": max(lr, peak_lr or 0.0), "zero_since": zero_since, "total_steps": total_steps,
            "first_lr": first_lr, "rising": rising, "per_coordinate": steps_per_coordinate(optimizer),
            "maximize": maximizes(optimizer), "momentum_option": momentum_option(optimizer)}


def examine(sample: EmpiricalLoss, *, full: EmpiricalLoss | None = None, optimizer: Any = None,
            batch_size: int | None = None, n_data: int | None = None, peak_lr: float | None = None,
            lr_zero_since: int | None = None, total_steps: int | None = None, first_lr: float | None = None,
            rate_rising: bool | None = None, loss: Mapping[str, float] | None = None,
            options: DiagnosisOptions = DiagnosisOptions(),
            v0: torch.Tensor | None = None, seed: int = 0, previous: Sequence[torch.Tensor] | None = None,
            steps_since: int | None = None, recent_gradients: Sequence[tuple[float, float]] = (),
            gradient_history: Sequence[tuple[float, float]] = (),
            afford: Callable[[int], bool] | None = None, batches: Mapping[str, float] | None = None,
            step_test: bool = True) -> Finding:
    """The verdict at the point ``sample`` is taken at (the module docstring gives the steps).

    Every quantity goes through the data layer, so the model is only read: its parameters,
    buffers (batch-norm statistics), modes and torch's global generator are left as they were.

    Args:
        sample: the loss over the monitor's fixed sample at the point (curvature and noise are
            measured on it).
        full: the loss over all the training data at the same point, for the gradient test
            (``None``: the sample's gradient, corrected for its sampling noise).
        optimizer: the run's optimizer (its rate, momentum and state); ``None``: no rate verdict.
        batch_size, n_data: the training batch size and the training set's size; the noise is
            measured when ``batch_size < n_data``.
        peak_lr: the largest rate the run has used so far.
        lr_zero_since, total_steps: the step since which the rate has been ~0, and the run's
            length (for the ``no_learning_rate`` remedy).
        first_lr, rate_rising: the rate at the run's first check, and whether it rose at the last (a
            warm-up under way).
        loss: ``value``, ``best``, ``initial`` of the tracked loss, for the ``minimum`` verdict.
        options: how the point is classified.
        v0: a Lanczos warm start (the previous stall's eigenvectors).
        previous, steps_since: the variables ``steps_since`` steps ago, for the layers' relative
            updates (:func:`~descentlab.critical.layer_signals.measure_layers`).
        recent_gradients: the loop's gradient norms, (smallest, largest) between each of the
            monitor's recent checks (their growth is evidence of an exploding gradient; their
            median a clipping threshold).
        gradient_history: the same over every check of the run.
        batches: the loop's batch losses against the tracked loss
            (:meth:`~descentlab.critical.history.RunHistory.batch_record`).
        afford: ``afford(products)``, asked before each costly stage, once the verdicts that need
            no Hessian have been ruled out, with the Hessian-vector products it is expected to
            spend: 0 before the gradient test, :data:`RATE_LEAST` before the rate test of a
            point that is not critical and 1 before each of its next products,
            :data:`POINT_PRODUCTS` before a critical point's classification. ``False`` ends the
            examination with ``verdict=None``, the evidence so far kept and
            ``evidence["waits_for_products"]`` the stage's products. ``None``: always.
        step_test: where the verdict is ``slow``, whether the curvature one step of the optimizer
            meets is measured against the Hessian's (:mod:`~descentlab.critical.kink`: two
            gradients and a product); a monitor that will not tell ``slow`` (after an alarm) skips it.
    """
    evidence: dict[str, Any] = {"loss": _loss_evidence(loss), "data": _data_evidence(sample)}
    evidence["batches"] = batches_evidence(batches, evidence["loss"], sample)
    rate = rate_evidence(optimizer, peak_lr, lr_zero_since, total_steps, first_lr, rate_rising)
    evidence["rate"] = rate
    if rate is not None:
        rate["held"] = held_share(optimizer, sample.model)
    if rate is not None and (rate["lr"] == 0 or rate["lr"] <= LR_ZERO * rate["peak_lr"]):
        verdict = decide(evidence)
        return Finding(verdict, remedy(verdict, evidence), evidence)

    model, loss_fn = sample.model, sample.loss_fn
    X, y = sample.one_batch()
    if full is not None:
        value, gradient = full.loss_and_gradient()
        value, norm, source = float(value), float(gradient.norm()), "all the data"
    else:
        value, gradient = sample.loss_and_gradient()
        value, norm, source = float(value), None, f"a sample of {sample.n_samples}, its sampling noise taken out"
    evidence["gradient"] = {"norm": norm, "loss": value, "source": source,
                            **_recent(recent_gradients, gradient_history),
                            "loop_cosine": _loop_cosine(sample if full is None else full, gradient)}
    evidence["layers"] = measure_layers(sample, gradient, previous=previous, steps_since=steps_since).to_dict()
    evidence["precision"] = _rounding_evidence(sample, gradient, previous, steps_since)
    mini_batch = batch_size is not None and n_data is not None and batch_size < n_data

    def measure_noise() -> NoiseEstimate:
        return gradient_noise(sample, batch_size=batch_size or 1, n_data=n_data or sample.n_samples, seed=seed)

    noise = None
    if _summed_suspect(float(gradient.norm()) if norm is None else norm, recent_gradients, gradient_history):
        noise = measure_noise() if mini_batch or full is None else None
        _loop_gradient(evidence["gradient"], norm, recent_gradients, gradient_history, noise, _part_held(rate))
    if rate is not None:
        evidence["decay"] = decay_evidence(optimizer, sample, gradient)
    early = decide_without_curvature(evidence)
    if early is not None:  # a cause in the network or its inputs: no Hessian needed
        _gradient_test(evidence, options)
        return Finding(early, remedy(early, evidence), evidence)
    if afford is not None and not afford(0):
        return _waiting(evidence, 0)

    if noise is None and (mini_batch or full is None):
        noise = measure_noise()
    if full is None:
        evidence["gradient"]["norm"] = norm = noise.grad_norm_sq ** 0.5
    if "loop_ratio" not in evidence["gradient"]:  # the loop's gradient against the fresh one, for every verdict
        _loop_gradient(evidence["gradient"], norm, recent_gradients, gradient_history, noise, _part_held(rate))
    tolerance = _gradient_test(evidence, options)
    if mini_batch:
        evidence["noise"] = noise.to_dict()
    elif batch_size is not None and n_data is not None:
        evidence["noise"] = {"batch_size": batch_size, "n_data": n_data, "snr": None, "full_batch": True}

    critical = norm <= tolerance
    if not critical:  # no verdict reads the curvature of a point that is not critical: only the rate's sharpness
        if rate is not None:
            if afford is not None and not afford(RATE_LEAST):
                return _waiting(evidence, RATE_LEAST)
            evidence["curvature"] = _rate_test(sample, optimizer, rate, options, seed, afford)
            if not rate["converged"] and (rate["ratio"] is None or rate["ratio"] < 1.0):
                return _waiting(evidence, RATE_PRODUCTS)  # the budget ran out before the answer
        verdict = decide(evidence)
        if verdict == "slow" and rate is None and (afford is None or afford(RATE_LEAST)):
            evidence["curvature"] = _descent_limit(sample, options, seed, afford)  # no rate to test: its limit
        if (step_test and verdict == "slow" and rate is not None and rate["lr"]
                and (afford is None or afford(1))):  # a rate the Hessian calls small: does it see the curvature?
            rate["step_curvature"] = _step_curvature(sample, optimizer, rate["lr"])
        return Finding(verdict, remedy(verdict, evidence), evidence)
    if afford is not None and not afford(POINT_PRODUCTS):
        return _waiting(evidence, POINT_PRODUCTS)
    classify_options = {**options.classify_options(), "seed": seed}
    if v0 is not None:
        classify_options["v0"] = v0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        point = classify(model, loss_fn, sample.data(X, y), assume_critical=critical, **classify_options)
        measured_on, confirmed = sample.n_samples, None
        if critical and point.kind in ("saddle", "local_max") and full is not None:
            if sample.n_samples < full.n_samples <= FULL_CURVATURE_LIMIT:
                everything = full.data(*full.one_batch())
                confirmed = _confirmed_on(model, loss_fn, everything, point)
                if not confirmed["held"]:  # the sample's curvature was its own: decide on all the data
                    point = classify(model, loss_fn, everything, assume_critical=True,
                                     **{**classify_options, "v0": point.eigenpairs.vectors})
                    measured_on = full.n_samples
    evidence["curvature"] = {
        "kind": point.verdict.kind if point.is_critical else "not_critical",
        "min_eigenvalue": point.min_eigenvalue, "max_eigenvalue": point.max_eigenvalue,
        "degenerate": bool(point.degenerate), "decided_by": point.verdict.decided_by,
        "dtype": point.precision, "eig_tol": point.eig_tol, "method": point.method, "n_params": point.n_params,
        "n_matvecs": point.n_matvecs, "converged": bool(point.eigenpairs.converged), "samples": measured_on,
        "confirmed_on_all_data": confirmed, "warnings": [str(w.message) for w in caught][:3],
    }
    if point.is_critical and point.verdict.kind == "saddle":
        evidence["curvature"]["escape_reach"] = escape_reach(point.min_eigenvalue, norm, options.max_step)
    if rate is not None and point.is_critical and point.verdict.kind == "saddle":
        held = decayed_escape_curvature(optimizer, model, point.names, point.min_eigenvalue, lowest_direction(point))
        if held is not None:
            evidence["curvature"]["decay"], evidence["curvature"]["decayed_escape"] = held
    if rate is not None:
        rule = stability_rule(optimizer, model, point.names)
        trained = trains_batch_norm(model)  # then the eval-mode λ_max found above is not the one the rate meets
        op = _training_operator(sample, point.names) if rule.preconditioned or trained else None
        value, products, _ = sharpness(rule, op, lambda_max=None if op is not None else point.max_eigenvalue,
                                       seed=seed)
        rate.update(_rate_fields(rule, value, products), batch_statistics=trained)
    verdict = decide(evidence)
    return Finding(verdict, remedy(verdict, evidence), evidence, point)


def escape_reach(min_eigenvalue: float, gradient_norm: float, max_step: float) -> float:
    """What the negative curvature gains against the gradient over the escape's longest step r:
    ``½|λ_min| r² / (‖∇L‖ r)``. Along the escape direction the loss can fall by ½|λ_min| r² (the
    quadratic model), while a step of r down the gradient takes off ‖∇L‖ r; below 1 the point is a
    saddle of the Hessian's signs whose curvature matters less than the gradient still there
    (``inf`` at a zero gradient)."""
    if gradient_norm <= 0:
        return math.inf
    return 0.5 * abs(float(min_eigenvalue)) * max_step / float(gradient_norm)


def lowest_direction(point: Any) -> torch.Tensor | None:
    """The eigenvector of the smallest eigenvalue among ``point.eigenpairs`` (``None`` if none)."""
    pairs = getattr(point, "eigenpairs", None)
    if pairs is None or pairs.vectors is None or len(pairs.values) == 0:
        return None
    values = torch.as_tensor(pairs.values)
    return torch.as_tensor(pairs.vectors)[:, int(torch.argmin(values))]


def decay_evidence(optimizer: Any, sample: EmpiricalLoss, gradient: torch.Tensor) -> dict[str, Any] | None:
    """The weight decay's pull against ``gradient`` at ``sample``'s point, through the optimizer's
    own per-coordinate steps (:func:`~descentlab.critical.decay.decay_pull`; Adam's bias
    correction of the first moment left out: at a plateau the moment is the gradient); ``None``
    without a decay, before the optimizer's steps are read."""
    if not has_decay(optimizer):
        return None
    rule = stability_rule(optimizer, sample.model, sample.names)
    steps = None if rule.steps is None else {n: s / rule.scale for n, s in rule.steps.items()}
    return decay_pull(optimizer, sample.model, sample.names, sample.point, gradient, steps)


def look_evidence(sample: EmpiricalLoss, *, loss: Mapping[str, float] | None = None,
                  previous: Sequence[torch.Tensor] | None = None, steps_since: int | None = None,
                  recent_gradients: Sequence[tuple[float, float]] = (),
                  gradient_history: Sequence[tuple[float, float]] = (), optimizer: Any = None,
                  batches: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The evidence :func:`examine` reads before any Hessian, from one gradient of the sample and the
    layers' signals (the arguments are :func:`examine`'s): whether it shows a weight decay that
    holds the weights (with ``optimizer``), batches unlike the data, or a cause in the network or
    its inputs (rows 4-11 of the verdict table,
    :func:`~descentlab.critical.verdicts.decide_without_curvature`), at the cost of one forward
    and backward pass. The monitor takes it between plateaus, where the loss is stuck high and not
    surely falling, so a network that cannot train is named before a plateau is proven (and a
    gradient exactly 0, which nothing moves, diagnosed at once)."""
    decayed = optimizer is not None and has_decay(optimizer)
    training = sample.with_batch_statistics() if trains_batch_norm(sample.model) else sample  # what a step descends
    gradient = training.loss_and_gradient()[1] if decayed else None
    evidence = {"loss": _loss_evidence(loss), "gradient": _recent(recent_gradients, gradient_history),
                "layers": measure_layers(training, gradient, previous=previous, steps_since=steps_since).to_dict()}
    evidence["batches"] = batches_evidence(batches, evidence["loss"], training)
    if decayed:
        evidence["decay"] = decay_evidence(optimizer, training, gradient)
    return evidence


def batches_evidence(batches: Mapping[str, float] | None, loss: Mapping[str, Any] | None,
                     sample: EmpiricalLoss) -> Mapping[str, float] | None:
    """The batches' record (:meth:`~descentlab.critical.history.RunHistory.batch_record`), with
    the data's loss as training computes it beside it (``tracked_batch_statistics``, batch-norm on
    the batch's statistics) where the model trains batch-norm and the record alone reads biased:
    the tracked loss reads the running statistics, which lag the batches' early on, and the two
    part for that alone."""
    if batches is None or not biased({"batches": batches, "loss": loss}):
        return batches
    if batches.get("samples"):
        batches = {**batches, "fair_low": fair_low(sample, int(batches["samples"]))}
    if not trains_batch_norm(sample.model):
        return batches
    return {**batches, "tracked_batch_statistics": float(sample.with_batch_statistics().loss())}


def fair_low(sample: EmpiricalLoss, drawn: int, *, most: int = FAIR_SAMPLES, draws: int = 2_000,
             seed: int = 0) -> float | None:
    """How low, against the data's mean loss, the mean over ``drawn`` samples of the data reads at
    the least: the lowest of ``draws`` means of ``drawn`` of the sample's per-sample losses (its
    first ``most``), resampled (a run reads its batches at every check, so a rare low reading is
    met: what no fair draw reaches is the test). Near 1 where every sample's loss is alike; far
    below where a few samples hold most of the loss (a heavy tail of targets under squared error,
    the few images a late network still misfits), for a fair batch then usually misses them:
    batches below the data's loss are what such data gives, not batches that are not a sample of
    it. Under ``torch.distributed`` the smallest over the ranks (every rank decides alike).
    ``None`` where the losses are not positive or a sample's loss cannot be taken alone."""
    X, y = sample.one_batch()  # on the model's device and dtype already
    n = min(batch_count(X, y), int(most))
    theta = sample.leaves()

    def alone(i: int) -> torch.Tensor:
        index = torch.tensor([i])
        return sample.batch_loss(theta, take(X, index), None if y is None else take(y, index)).reshape(())

    def each() -> torch.Tensor:
        if torch.is_tensor(X) and torch.is_tensor(y):
            try:  # one vmapped call: 4x the loop's speed on the scale bench's ResNet
                return torch.func.vmap(lambda x, t: sample.batch_loss(theta, x[None], t[None]).reshape(()))(
                    X[:n], y[:n])
            except (RuntimeError, ValueError, NotImplementedError):  # a forward vmap cannot batch
                pass
        return torch.stack([alone(i) for i in range(n)])

    read = math.inf
    try:
        with torch.no_grad():
            losses = each().double().cpu()
        mean = float(losses.mean())
        if n > 1 and mean > 0 and bool((losses >= 0).all()):
            generator = torch.Generator().manual_seed(seed)
            drawn = min(int(drawn), FAIR_DRAWN)  # larger intervals read nearer the mean: the cap reads lower
            read = float(losses[torch.randint(0, n, (draws, drawn), generator=generator)].mean(dim=1).min()) / mean
    except (RuntimeError, ValueError):  # a model that needs more than one sample (batch-norm in training)
        pass
    read = smallest(read)
    return read if math.isfinite(read) else None


def _training_operator(loss: EmpiricalLoss, params: Any = None) -> HessianOperator:
    """The Hessian operator of the function a training step differentiates, which the rate
    meets: batch-norm by the batch's statistics where the model trains it, else ``loss``'s own
    (``params``: other variables, as :meth:`~descentlab.curvature.EmpiricalLoss.like` takes them)."""
    return HessianOperator.like(loss.with_batch_statistics() if trains_batch_norm(loss.model) else loss, params=params)


def _step_curvature(sample: EmpiricalLoss, optimizer: Any, lr: float) -> dict[str, Any] | None:
    """:func:`~descentlab.critical.kink.step_curvature` of the training function along the
    optimizer's own step: the rate, or a preconditioned rule's per-coordinate steps (without the
    bias correction's scale, as at a plateau)."""
    rule = stability_rule(optimizer, sample.model, sample.names)
    op = _training_operator(sample)
    step = rule.lr if rule.steps is None else op.flatten([rule.steps[name] / rule.scale for name in op.names])
    return step_curvature(op, step, lr)


def _waiting(evidence: dict[str, Any], products: int) -> Finding:
    """No verdict yet: the next stage's products did not fit the budget."""
    evidence["waits_for_products"] = products
    return Finding(None, None, evidence)


def _rate_test(sample: EmpiricalLoss, optimizer: Any, rate: dict[str, Any], options: DiagnosisOptions,
               seed: int, afford: Callable[[int], bool] | None) -> dict[str, Any]:
    """The rate's sharpness at a point that is not critical, into ``rate``; the curvature evidence
    that came with it (λ_max of the Hessian for a plain rule, exact where ``options`` would
    classify exactly; nothing else was measured). Past :data:`RATE_LEAST` products, each next one
    is asked of ``afford``: where the budget ends first, the sharpness is Lanczos' lower bound
    (``rate["converged"]`` False), which settles ``unstable`` when it is past the limit already."""
    rule = stability_rule(optimizer, sample.model, sample.names)
    op = _training_operator(sample)
    value, products, converged, top = _measured_sharpness(rule, op, options, seed, afford)
    rate.update(_rate_fields(rule, value, products), batch_statistics=trains_batch_norm(sample.model),
                converged=converged)
    bound = eps_bound_share(optimizer) if rule.preconditioned else None
    if bound is not None:
        rate.update(eps=bound[0], eps_bound=bound[1])
    if top is None and not rule.preconditioned and rule.lr > 0:
        top = value / (rule.lr * rule.scale)
    return {"kind": "not_critical", "max_eigenvalue": top, "min_eigenvalue": None, "n_matvecs": products,
            "dtype": str(op.dtype).replace("torch.", ""), "samples": sample.n_samples,
            "measured": "the rate's sharpness only (a point that is not critical)"}


def _measured_sharpness(rule: StabilityRule, op: HessianOperator, options: DiagnosisOptions, seed: int,
                        afford: Callable[[int], bool] | None) -> tuple[float, int, bool, float | None]:
    """``rule``'s sharpness on ``op`` as the rate test takes it: ``(value, products, converged, λ_max)``,
    λ_max exact for a plain rule where ``options`` would classify exactly (as classify would take
    it; ``None`` otherwise), else Lanczos, which asks ``afford`` for each product past
    :data:`RATE_LEAST` and stops, a lower bound, where the budget ends first."""
    done = [0]

    def spent() -> bool:
        done[0] += 1
        return done[0] >= RATE_LEAST and afford is not None and not afford(1)

    top = None
    exact = options.method == "exact" or (options.method == "auto" and op.n_params <= options.dense_threshold)
    if not rule.preconditioned and exact:
        top = float(torch.linalg.eigvalsh(op.dense().double())[-1])
    value, products, converged = sharpness(rule, op, lambda_max=top, seed=seed, stop=spent)
    return value, products, converged, top


def _descent_limit(sample: EmpiricalLoss, options: DiagnosisOptions, seed: int,
                   afford: Callable[[int], bool] | None) -> dict[str, Any]:
    """Without an optimizer (a loop that steps the parameters itself) there is no rate to test, but
    the rates that are stable here are known from λ_max of the Hessian: 2/λ_max for gradient descent,
    2(1 + β)/λ_max with heavy-ball momentum β = :data:`~descentlab.critical.remedies.MOMENTUM`."""
    rule = StabilityRule("gd", 1.0, 2.0, 1.0, "lr * lambda_max < 2 (gradient descent)")  # at rate 1: λ_max itself
    op = _training_operator(sample)
    top, products, converged, _ = _measured_sharpness(rule, op, options, seed, afford)
    stable = converged and math.isfinite(top) and top > 0
    return {"kind": "not_critical", "max_eigenvalue": top, "min_eigenvalue": None, "n_matvecs": products,
            "dtype": str(op.dtype).replace("torch.", ""), "samples": sample.n_samples, "converged": converged,
            "largest_stable_lr": 2.0 / top if stable else None,
            "largest_stable_lr_momentum": 2.0 * (1.0 + MOMENTUM) / top if stable else None, "momentum": MOMENTUM,
            "measured": "lambda_max only (no optimizer: the stable rates, not the rate)"}


def standardized_rate(standardized: EmpiricalLoss, optimizer: Any, *, seed: int = 0,
                      max_matvecs: int = 100) -> dict[str, Any] | None:
    """The rate test of the model fed standardized inputs (``standardized``: the loss over the
    sample with its inputs standardized, the model's parameters as they are): the rate a
    ``standardize`` remedy is given, since a rate tuned to the raw scales is far from what the
    standardized problem allows (on the zoo's moons in units 1e5 apart, lr 3e-6 against 0.5).
    Its fields are the rate evidence's (``largest_stable_lr``, ...). ``None`` for a
    preconditioned rule (its preconditioner was built from the raw inputs' gradients), a rate
    of 0, or an estimate that did not converge (a lower bound of the sharpness would make an
    upper bound of the rate)."""
    rule = stability_rule(optimizer, standardized.model, standardized.names)
    if rule.preconditioned or rule.lr <= 0:
        return None
    value, products, converged = sharpness(rule, _training_operator(standardized), seed=seed,
                                           max_matvecs=max_matvecs)
    if not converged or not math.isfinite(value) or value <= 0:
        return None
    return _rate_fields(rule, value, products)


def examine_divergence(good: EmpiricalLoss, *, step: int, checkpoint_step: int | None, optimizer: Any = None,
                       peak_lr: float | None = None, loss: Mapping[str, float] | None = None,
                       seed: int = 0, full: EmpiricalLoss | None = None) -> Finding:
    """The ``diverged`` verdict: λ_max and the sharpness at the run's last good parameters
    (``good``: the loss over the sample taken there, :meth:`~descentlab.curvature.EmpiricalLoss.at`;
    ``checkpoint_step``), against the optimizer's stability limit (its state is keyed by the
    model's parameters, which ``good`` reads but does not change); and the samples whose inputs
    or targets are not finite, in the training data ``full`` holds in memory (else the sample's):
    a NaN in the data makes the loss NaN at any rate."""
    evidence: dict[str, Any] = {"diverged": {"step": int(step), "checkpoint_step": checkpoint_step},
                                "loss": _loss_evidence(loss), "data": _data_evidence(good)}
    evidence["data"]["non_finite"] = (_non_finite_samples(full, "the training data") if full is not None
                                      else _non_finite_samples(good, "the monitor's sample"))
    rate = rate_evidence(optimizer, peak_lr)
    evidence["rate"] = rate
    try:
        evidence["layers"] = measure_layers(good).to_dict()
        trained = trains_batch_norm(good.model)
        op = _training_operator(good)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            top = lanczos(op, k=1, which="LA", tol=1e-2, max_iter=200, seed=seed)
        lambda_max = float(top.values[0])
        evidence["curvature"] = {"max_eigenvalue": lambda_max, "dtype": str(op.dtype).replace("torch.", ""),
                                 "n_matvecs": top.n_matvecs}
        if rate is not None:
            rule = stability_rule(optimizer, good.model, op.names)
            if rule.preconditioned and not all(torch.isfinite(s).all() for s in rule.steps.values()):
                rule = None  # the optimizer's state overflowed with the loss: no preconditioner to read
            if rule is not None:
                value, products, _ = sharpness(rule, op, lambda_max=None if rule.preconditioned else lambda_max,
                                               seed=seed)
                rate.update(_rate_fields(rule, value, products), batch_statistics=trained)
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
    if not bool(chosen.any()):  # the kind came from a probe along flat directions: no eigenvector proves it
        return {"held": False, "rayleigh_quotients": [], "band": band, "samples": op.n_samples,
                "note": "decided by a probe along flat directions: classified again on all the data"}
    V = vectors[:, chosen.to(vectors.device)].to(op.dtype)
    quotients = ((V * (op @ V)).sum(dim=0) / (V * V).sum(dim=0)).double()
    held = bool((quotients < -band).all()) if point.kind == "local_max" else bool(quotients.min() < -band)
    return {"held": held, "rayleigh_quotients": [float(q) for q in quotients], "band": band,
            "samples": op.n_samples}


def _recent(recent: Sequence[tuple[float, float]], history: Sequence[tuple[float, float]] = ()) -> dict[str, float | None]:
    """From the loop's gradient norms, as (smallest, largest) between two checks: ``growth``, the
    largest of the last interval over the smallest of the recent ones; ``typical``, the median of
    the recent smallest (a clipping threshold); ``peak_growth``, over the whole run, the most any
    largest exceeded the smallest before it (a spike that came and went)."""
    def ratio(high: float, low: float) -> float | None:
        return high / low if low > 0 and math.isfinite(high) else None

    lows = [low for low, _ in recent if math.isfinite(low)]
    out: dict[str, float | None] = {"growth": None, "typical": statistics.median(lows) if lows else None,
                                    "peak_growth": None}
    if recent and lows:
        out["growth"] = ratio(recent[-1][1], min(lows))
    smallest, peak = math.inf, None
    for low, high in history:
        smallest = min(smallest, low) if math.isfinite(low) else smallest
        grown = ratio(high, smallest) if smallest < math.inf else None
        if grown is not None:
            peak = max(peak or 0.0, grown)
    out["peak_growth"] = peak
    return out


def _summed_suspect(norm: float, recent: Sequence[tuple[float, float]], history: Sequence[tuple[float, float]]) -> bool:
    """The smallest gradient the loop stepped with since the last check is
    :data:`~descentlab.critical.verdicts.ACCUMULATED` times ``norm`` (the fresh gradient here, a
    sample's or all the data's) and :data:`~descentlab.critical.verdicts.ACCUMULATED_GROWTH` times
    the smallest of the run's first check: worth measuring the batch noise for, before the
    verdicts that need no Hessian (a fresh batch gradient is never far above that norm)."""
    if not recent or not history or not (math.isfinite(recent[-1][0]) and history[0][0] > 0):
        return False
    low = recent[-1][0]
    return low >= ACCUMULATED * norm and low >= ACCUMULATED_GROWTH * history[0][0]


def _part_held(rate: Mapping[str, Any] | None) -> bool:
    """The loop's optimizer holds only part of the trainable parameters (a second optimizer may
    step the rest): the loop's gradient norms, read from the parameters it holds, cover part of
    the fresh gradient's."""
    held = None if rate is None else rate.get("held")
    return held is not None and held < 1.0


def _loop_gradient(gradient: dict[str, Any], norm: float | None, recent: Sequence[tuple[float, float]],
                   history: Sequence[tuple[float, float]], noise: NoiseEstimate | None, part: bool = False) -> None:
    """The loop's gradient since the last check (its smallest and largest norm) against the norm a
    fresh *batch* gradient has here, sqrt(|g|² + tr Σ_B) (``noise``; without it, full-batch,
    ``norm``), into ``gradient``: ``loop_norm``, ``loop_high``, ``expected_norm``, ``loop_ratio``
    (the smallest over it: far above 1, a sum over steps), ``loop_high_ratio`` (the largest over
    it: far below 1, gradients clipped or a loss scaled down; ``None`` where the optimizer holds
    only ``part`` of the parameters, as their share of the norm may be anything) and ``loop_growth``
    (the smallest over the first check's). Nothing where the loop's gradients were not read."""
    if not recent or not (math.isfinite(recent[-1][0]) and math.isfinite(recent[-1][1])):
        return
    expected = math.sqrt(noise.grad_norm_sq + noise.noise_sq) if noise is not None else norm
    if expected is None or not expected > 0:
        return
    low, high = recent[-1]
    gradient.update(loop_norm=low, loop_high=high, expected_norm=expected, loop_ratio=low / expected,
                    loop_high_ratio=None if part else high / expected,
                    loop_growth=low / history[0][0] if history and history[0][0] > 0 else None)


def _loop_cosine(sample: EmpiricalLoss, gradient: torch.Tensor) -> float | None:
    """The cosine between the gradient the loop last gave its optimizer (``.grad`` of the sample's
    parameters, still there after the step) and the loss's gradient here: near 1 for a batch
    gradient of this loss with little noise, near -1 for the gradient of its negative (a loop that
    backpropagates ``-loss``). ``None`` where a parameter has no ``.grad`` (zeroed after the step),
    a sparse one, or either gradient is 0 or not finite."""
    named = dict(sample.model.named_parameters())
    parts = []
    for name in sample.names:
        grad = getattr(named.get(name), "grad", None)
        if grad is None or grad.is_sparse:
            return None
        parts.append(grad.detach().reshape(-1).to(gradient.device, gradient.dtype))
    loop = torch.cat(parts)
    scale = float(loop.norm() * gradient.norm())
    if not (scale > 0 and math.isfinite(scale)):
        return None
    return float(torch.dot(loop, gradient)) / scale


def _gradient_test(evidence: dict[str, Any], options: DiagnosisOptions) -> float:
    """The point is critical when ``||∇L|| <= grad_tol · max(1, |L|)`` (without a measured norm:
    not decided); writes the tolerance and the decision into the gradient's evidence."""
    gradient = evidence["gradient"]
    tolerance = options.grad_tol * max(1.0, abs(gradient["loss"]))
    norm = gradient["norm"]
    gradient.update(tolerance=tolerance, critical=None if norm is None else norm <= tolerance)
    return tolerance


def _data_evidence(loss: EmpiricalLoss) -> dict[str, Any]:
    """The samples measured on, the modules the data layer evaluated in eval mode although the
    model had them in training mode (the mode is part of what was measured), the precision
    measured in (the parameters' dtype, float32 for a half-precision model: the loop's autocast is
    off while the monitor measures), and how many of the model's parameters train
    (``requires_grad``) of all it has."""
    switched = sorted({type(m).__name__ for m in mode_dependent_modules(loss.model) if m.training})
    params = list(loss.model.parameters())  # shared ones listed once
    measured, held = (str(t).replace("torch.", "") for t in (loss.dtype, loss.params_dtype))
    return {"samples": loss.n_samples, "eval_mode": switched,
            "precision": measured + (f" (the model's {held} upcast; " if held != measured else " (") + "autocast off)",
            "trainable": sum(p.numel() for p in params if p.requires_grad),
            "parameters": sum(p.numel() for p in params)}


def _rounding_evidence(sample: EmpiricalLoss, gradient: torch.Tensor, previous: Sequence[torch.Tensor] | None,
                       steps_since: int | None) -> dict[str, Any] | None:
    """For a model that holds its variables in half precision (:data:`~descentlab.curvature.empirical.UPCAST`):
    ``still``, the share of the variables' entries with a gradient that did not change at all
    in the last ``steps_since`` steps (``previous``: their values then), which in float32 every
    such entry does: a step below half the spacing of the numbers around a weight rounds away
    (bfloat16 spaces them 2^-8 of the weight apart). ``None`` for other dtypes or no earlier values."""
    if sample.params_dtype not in UPCAST or previous is None or not steps_since:
        return None
    moving = still = 0
    for now, before, grad in zip(sample.split(sample.point), previous, sample.split(gradient)):
        pulled = grad != 0
        moving += int(pulled.sum())
        still += int((pulled & (now == before.to(now))).sum())
    return {"dtype": str(sample.params_dtype).replace("torch.", ""), "steps": int(steps_since),
            "still": still / moving if moving else None, "entries": moving}


def _non_finite_samples(loss: EmpiricalLoss, where: str) -> dict[str, Any]:
    """How many samples of ``loss``'s data (``where``: which data that is) hold a NaN or an
    infinity in their inputs or targets, of how many."""
    bad = 0
    for X, y, _ in loss.batches():
        rows = non_finite_rows((X, y))
        bad += 0 if rows is None else int(rows.sum())
    return {"samples": bad, "of": loss.n_samples, "where": where}


def _rate_fields(rule: Any, value: float, products: int) -> dict[str, Any]:
    finite = math.isfinite(value)
    half_life = ring_half_life(rule.momentum)  # never damped at 1: JSON has no infinity
    return {"rule": rule.name, "formula": rule.formula, "limit": rule.limit, "scale": rule.scale,
            "preconditioned": rule.preconditioned, "sharpness": value if finite else None,
            "ratio": value / rule.limit if finite else None,
            # gradient descent's limit read for an optimizer no rule models bounds nothing of its steps, nor
            # Adagrad's, whose accumulator grows with a larger rate's gradients
            "largest_stable_lr": (rule.largest_stable_lr(value) if finite and not rule.unmodelled and rule.bounded
                                  else None),
            "bounded": rule.bounded,
            "n_matvecs": products,
            "momentum": rule.momentum, "ring_half_life": half_life if math.isfinite(half_life) else None,
            "unmodelled": rule.unmodelled}


def _loss_evidence(loss: Mapping[str, float] | None) -> dict[str, Any] | None:
    if not loss:
        return None
    out = {k: (float(v) if v is not None else None) for k, v in loss.items()}
    out["near_best"] = near_best({"loss": out})
    out["stuck_high"] = stuck_high({"loss": out})
    return out
