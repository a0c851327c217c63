"""Why the loss stopped going down: a verdict from the evidence measured at a stall.

The lectures' question has more answers than "the gradient is zero". Each verdict below comes
from evidence a :class:`~descentlab.critical.StallMonitor` measures at the plateau, held as plain
data (numbers, strings, booleans in nested dicts: JSON as it is), and names one remedy:

====================  ==========================================================  =====================================
verdict               evidence                                                    remedy
====================  ==========================================================  =====================================
``no_learning_rate``  the rate is 0, or at most 1e-3 of the largest it has been   fix the schedule
``unstable``          sharpness at or past the optimizer's stability limit         a rate below limit/λ_max, or warm-up
                      (``critical.stability``); not a critical point
``saddle``            critical, and negative curvature that matters (λ_min < 0    step along the negative-curvature
                      beyond tolerance, decided in float64 where float32 could     eigenvector (line search)
                      hide its sign, or a probe finds descent along a flat one)
``maximum``           critical, all curvature negative                             any step downhill
``noise_floor``       mini-batch training and the full-data gradient smaller      decay the rate, or a larger batch
                      than the mini-batch noise (SNR < 1, ``critical.noise``)
``minimum``           critical, no negative curvature; the loss near the best     stop (or a larger model), or restart /
                      seen, or stuck high (above half the initial loss)           noise / a larger model
``flat``              critical, gradient and spectrum ≈ 0, the loss flat around   a larger rate, momentum, or noise
``slow``              none of the above: not critical, stable, not noise-bound;   a larger rate (up to the largest stable
                      the step moves the loss less than the plateau test sees      one) or momentum
``diverged``          the loss became non-finite; sharpness at the last good point the largest stable rate there
====================  ==========================================================  =====================================

They are tried in that order: a rate of zero explains any plateau; a rate past the stability
limit keeps the iterate from settling whatever the point is; a saddle or a maximum is escaped
by a step, whatever the noise; the noise floor is tested before calling a point a minimum,
because SGD at a constant rate hovers *around* a minimum at a loss above it. ``slow`` is what
is left: the run is stable, noise-free enough and not at a critical point, so the rate (or an
ill-conditioned valley) makes progress too small to see. A verdict needs only the evidence it
reads: without the optimizer (``rate`` missing) no rate verdict is given, without the batch
size no noise verdict.

Evidence keys (each a dict, ``None`` when not measured): ``loss`` (``value``, ``best``,
``initial``), ``gradient`` (``norm``, ``tolerance``, ``critical``), ``curvature`` (``kind`` from
:mod:`descentlab.critical.rules`, ``min_eigenvalue``, ``max_eigenvalue``, ``degenerate``,
``decided_by``, ``dtype``, ``eig_tol``), ``rate`` (``lr``, ``peak_lr``, ``zero_since``, ``total_steps``,
``rule``, ``formula``, ``limit``, ``sharpness``, ``ratio``, ``largest_stable_lr``), ``noise`` (from
:meth:`~descentlab.critical.noise.NoiseEstimate.to_dict`), ``diverged`` (``step``, ``checkpoint_step``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["VERDICTS", "REMEDIES", "decide", "remedy", "stuck_high", "near_best", "LR_ZERO", "AT_LIMIT", "NOISE_SNR", "STUCK_HIGH", "NEAR_BEST"]

#: Every verdict, in the order they are tried (``diverged`` comes from a non-finite loss).
VERDICTS = ("no_learning_rate", "unstable", "saddle", "maximum", "noise_floor", "minimum", "flat", "slow", "diverged")

#: The remedy of each verdict in one sentence (with the numbers filled in by :func:`remedy`).
REMEDIES = {
    "no_learning_rate": "fix the schedule: the rate is ~0, so no step can move the loss",
    "unstable": "lower the rate below the largest stable rate, or warm it up",
    "saddle": "step along the negative-curvature eigenvector (a line search keeps the loss from rising)",
    "maximum": "take any step downhill",
    "noise_floor": "decay the rate, or use a larger batch",
    "minimum": "stop here, or restart / add noise / use a larger model to go lower",
    "flat": "use a larger rate, momentum, or noise to cross the flat region",
    "slow": "raise the rate toward the largest stable rate, or add momentum",
    "diverged": "restart with a rate below the largest stable rate at the last good point",
}

#: The rate is ~0 when it is at most this fraction of the largest rate the run has used.
LR_ZERO = 1e-3
#: A non-critical point whose sharpness is at least this fraction of the limit is at the limit.
AT_LIMIT = 0.9
#: Below this gradient signal-to-noise ratio the mini-batch noise dominates.
NOISE_SNR = 1.0
#: A minimum whose loss is above this fraction of the initial loss is stuck high.
STUCK_HIGH = 0.5
#: A loss within this relative distance of the best loss seen is near the best.
NEAR_BEST = 0.01


def _get(evidence: Mapping[str, Any], section: str, key: str, default: Any = None) -> Any:
    part = evidence.get(section) or {}
    value = part.get(key, default)
    return default if value is None else value


def decide(evidence: Mapping[str, Any]) -> str:
    """The verdict (one of :data:`VERDICTS`) the evidence supports, tried in the module's order."""
    if evidence.get("diverged"):
        return "diverged"
    lr, peak = _get(evidence, "rate", "lr"), _get(evidence, "rate", "peak_lr")
    if lr is not None and (lr == 0 or (peak and lr <= LR_ZERO * peak)):
        return "no_learning_rate"
    critical = bool(_get(evidence, "gradient", "critical", False))
    ratio = _get(evidence, "rate", "ratio")
    if ratio is not None and math.isfinite(ratio) and (ratio >= 1.0 or (ratio >= AT_LIMIT and not critical)):
        return "unstable"
    kind = _get(evidence, "curvature", "kind")
    if critical and kind == "saddle":
        return "saddle"
    if critical and kind == "local_max":
        return "maximum"
    snr = _get(evidence, "noise", "snr")
    if snr is not None and snr < NOISE_SNR:
        return "noise_floor"
    if critical and kind == "local_min":
        return "minimum"
    if critical and kind == "flat":
        return "flat"
    return "slow"


def remedy(verdict: str, evidence: Mapping[str, Any]) -> str:
    """The remedy of ``verdict`` in one sentence, with the evidence's numbers where they help."""
    if verdict not in REMEDIES:
        raise ValueError(f"unknown verdict {verdict!r}; valid: {', '.join(VERDICTS)}")
    largest = _get(evidence, "rate", "largest_stable_lr")
    lr, peak = _get(evidence, "rate", "lr"), _get(evidence, "rate", "peak_lr")
    if verdict == "no_learning_rate":
        since, total = _get(evidence, "rate", "zero_since"), _get(evidence, "rate", "total_steps")
        when = f" since step {since}" if since is not None else ""
        if total is not None:
            when += f" of {total}"
        return (f"fix the schedule so the rate lasts until the last step: it has been {lr:.3g}{when}"
                + (f" (its peak was {peak:.3g})" if peak else "") + ", and no step can move the loss")
    if verdict == "unstable" and largest:
        return f"lower the rate below {largest:.3g} (the largest stable rate here), or warm it up"
    if verdict == "diverged":
        good = _get(evidence, "diverged", "checkpoint_step")
        if largest and lr and largest < lr:
            where = f" at step {good}, the last good point" if good is not None else " at the last good point"
            return f"restart with a rate below {largest:.3g} (the largest stable rate{where})"
        return ("the rate was stable at the last good point: restart from it with a smaller rate or clipped "
                "gradients, and check the data for extreme values")
    if verdict == "noise_floor":
        critical_batch = _get(evidence, "noise", "critical_batch")
        batch = _get(evidence, "noise", "batch_size")
        if critical_batch and batch and critical_batch > batch:
            return f"decay the rate, or use a larger batch (above {critical_batch:.0f}, where the gradient's SNR reaches 1)"
        return REMEDIES[verdict]
    if verdict == "minimum":
        value, initial = _get(evidence, "loss", "value"), _get(evidence, "loss", "initial")
        if stuck_high(evidence):
            return (f"restart from another seed, add noise, or use a larger model: this minimum keeps "
                    f"{value / initial:.0%} of the initial loss")
        return "stop here: no direction lowers the loss (a larger model could go lower)"
    if verdict == "slow" and lr is None:
        return "give StallMonitor the optimizer (and the batch size) so it can test the rate and the noise"
    if verdict == "slow" and largest and lr and largest > lr:
        return f"raise the rate toward {largest:.3g} (the largest stable rate here), or add momentum"
    return REMEDIES[verdict]


def stuck_high(evidence: Mapping[str, Any]) -> bool:
    """The loss is above :data:`STUCK_HIGH` of the initial loss."""
    value, initial = _get(evidence, "loss", "value"), _get(evidence, "loss", "initial")
    return bool(value is not None and initial and initial > 0 and value > STUCK_HIGH * initial)


def near_best(evidence: Mapping[str, Any]) -> bool:
    """The loss is within :data:`NEAR_BEST` (relative) of the best loss seen."""
    value, best = _get(evidence, "loss", "value"), _get(evidence, "loss", "best")
    return bool(value is not None and best is not None and value <= best + NEAR_BEST * max(abs(best), 1e-12))
