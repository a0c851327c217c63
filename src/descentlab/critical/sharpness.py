"""Sharpness through training, against the stability limit of the optimizer that is running.

Every ``every`` steps :class:`SharpnessTracker` measures, on a fixed sample of the training
data, the *sharpness* in curvature units and the threshold the rate allows
(:mod:`descentlab.critical.stability` holds the rules; this module only reads them):

====================================  ====================================  =====================
optimizer                             sharpness                             stability threshold
====================================  ====================================  =====================
gradient descent                      λ_max(H)                              2 / lr
heavy ball (β, dampening τ)           (1 − τ) λ_max(H)                      2 (1 + β) / lr
Nesterov                              λ_max(H)                              2 (1 + β)/((1 + 2β) lr)
Adam / AdamW (β₁, bias-corrected v̂)   λ_max(P⁻¹H), P = (1 − β₁ᵗ)(√v̂ + ε)   2 (1 + β₁)/((1 − β₁) lr)
                                                                            (38/lr at β₁ = 0.9)
RMSprop / Adagrad                     λ_max(D⁻¹H), D = √v + ε               2 (1 + μ) / lr, 2 / lr
====================================  ====================================  =====================

i.e. the rule's dimensionless sharpness ``a`` (``lr · scale · λ``) divided by ``lr``, and its
limit divided by ``lr``: the Adam row is the *preconditioned sharpness* of Cohen et al. 2022
("Adaptive gradient methods at the edge of stability", arXiv:2207.14484), whose P is Adam's
step denominator with the first moment's bias correction folded in; λ_max(P⁻¹H) is the top
eigenvalue of the symmetric P^{-1/2} H P^{-1/2}. Under full-batch gradient descent the
sharpness rises until it reaches 2/lr and then hovers there while the loss keeps falling,
non-monotonically (Cohen, Kaur, Li, Kolter & Talwalkar, ICLR 2021, "Gradient descent on neural
networks typically occurs at the edge of stability"); :func:`edge_of_stability` says whether
a run did.

Each estimate is Lanczos warm-started from the previous eigenvector
(:class:`~descentlab.curvature.tracking.EigenTracker`, relative residual 1e-2: within 1 % of an
eigenvalue) on the Hessian operator of the sample, refreshed at the model's current parameters
(:meth:`~descentlab.curvature.EmpiricalLoss.refreshed`: the data is not read again). λ_min
(``track_min``) is a second tracker at the other end, on the plain Hessian.

**Which function.** The Hessian is that of the function a training step differentiates, with
nothing random in it (:meth:`~descentlab.curvature.EmpiricalLoss.with_batch_statistics`):
batch-norm layers the model trains normalise by the sample's own statistics, as they do each
batch, not by their running statistics, whose function can be many times sharper than the one
the rate meets (its loss is not invariant to the scale of the weights before each normalisation;
the measured gap on a ResNet is in ``bench/RESULTS.md``); dropout is off.

**When.** At step 0 and every ``every`` steps; under an adaptive optimizer (Adam's, RMSprop's,
Adagrad's kind) not before its first step, whose state its rule reads
(:func:`~descentlab.critical.stability.awaits_state`): the first estimate is then at ``every``.

**What it costs.** With a ``share``, each estimate is given the share of the training time since
the one before (80 % of it; the first, and any while the allowance lasts, what is left of the
allowance) and stops there, after two products at least, unconverged: a Rayleigh quotient, so a
lower bound of the sharpness (the top eigenvalue is at least that), with its residual, which the
next estimate, warm-started from its vector, goes on from. Where even two products cost more, a
:class:`~descentlab.critical.budget.Cadence` spreads the estimates out beyond ``every`` (to 2x,
4x, 8x ``every``) to keep them within that share; each point says how many samples it read and
its residual.

**Which samples.** The sample an estimate reads is fixed for the run (``size``, or what
:meth:`SharpnessTracker.fix_size` sets before the first estimate): the cap spreads the estimates
out, it never shrinks the sample. The top eigenvalue is convex in the matrix, so the sharpness
of a smaller random sample is, on average, *larger* than the training loss's (Jensen), by how
much depends on the model: measured on the scale bench's models (``bench/scale.py --only
samples``, recorded in ``bench/RESULTS.md``, "scale"), a character transformer's preconditioned
sharpness moves little from 256 down to 8 sequences (1.1-1.2x), while a batch-norm ResNet's
late in training is 15x larger on 32 images than on 512 (per-sample curvature of the few
samples still misfit dominates a small sample). A sample that shrank during a run would draw a sharpness that rises
for that reason alone, the picture of progressive sharpening.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from descentlab.checks import check_int
from descentlab.critical.budget import Cadence
from descentlab.critical.stability import awaits_state, sharpness_of, stability_operator, stability_rule
from descentlab.critical.verdicts import AT_LIMIT
from descentlab.curvature import HessianOperator
from descentlab.curvature.batches import batch_size as count_of
from descentlab.curvature.batches import is_pair, is_single_batch, take
from descentlab.curvature.losses import is_model_loss
from descentlab.curvature.tracking import EigenTracker

__all__ = ["SharpnessPoint", "SharpnessTracker", "edge_of_stability", "COLUMNS", "FIELDS", "HOVER_BAND"]

#: The columns a tracker adds to ``metrics.csv`` (``lambda_min`` only when it tracks λ_min).
COLUMNS = ("sharpness", "stability_threshold", "lambda_min")
#: "At the edge": the sharpness within this relative distance of the threshold (Cohen et al.'s ~10 %).
HOVER_BAND = 0.1


@dataclass(frozen=True)
class SharpnessPoint:
    """One estimate.

    Attributes:
        step: the training step after which it was measured.
        lr: the rate of the optimizer's first group then (``None`` without an optimizer).
        sharpness: the (preconditioned) λ_max in curvature units (see the module docstring).
        threshold: the largest stable sharpness at this rate, ``limit / lr`` (``None`` without
            an optimizer or at a rate of 0).
        ratio: ``sharpness / threshold`` (1: at the edge of stability).
        lambda_min: the smallest Hessian eigenvalue (``None`` unless tracked).
        rule: the stability rule's name (``"gd"``, ``"heavy-ball"``, ``"adam"``, ...; ``""`` without optimizer).
        n_matvecs: Hessian-vector products spent on this estimate.
        converged: every eigenvalue met its residual tolerance.
        seconds: wall time of the estimate.
        samples: the samples of the sample it was measured on.
        residual: the top estimate's relative residual r: some eigenvalue lies within r·|λ| of
            it (not necessarily the top one). Where the cost cap ended it unconverged it is a
            Rayleigh quotient, so the top eigenvalue is at least ``sharpness``: a lower bound, which
            the residual does not bound from above.
    """

    step: int
    lr: float | None
    sharpness: float
    threshold: float | None
    ratio: float | None
    lambda_min: float | None
    rule: str
    n_matvecs: int
    converged: bool
    seconds: float
    samples: int | None = None
    residual: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers (non-finite ones as ``None``)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


#: The fields of a :class:`SharpnessPoint` (the columns of a run's ``sharpness.csv``).
FIELDS = tuple(f.name for f in fields(SharpnessPoint))


class SharpnessTracker:
    """Sharpness (and λ_min) every ``every`` steps on a fixed ``sample`` (see the module docstring).

    Args:
        loss_fn: ``loss_fn(output, target)``, mean over a batch.
        sample: the ``(X, y)`` the Hessian is taken on.
        every: measure when ``step % every == 0``.
        track_min: also track λ_min.
        tol: relative residual of every estimate (1e-2: within 1 % of an eigenvalue).
        seed: seeds the cold starts.
        share: the most the estimates may cost, as a share of the training time between two of
            them (``None``: no cap); the training time comes with each :meth:`measure`.
        size: the samples of ``sample`` every estimate reads (the first ones; ``None``: all of
            it). Fixed for the run: the cap spreads the estimates out instead (see the module
            docstring, "Which samples").
        allowance: seconds the estimates may spend in all before ``share`` is enforced.
    """

    def __init__(self, loss_fn: Callable, sample: tuple[Any, torch.Tensor], *, every: int, track_min: bool = False,
                 tol: float = 1e-2, seed: int = 0, share: float | None = None, size: int | None = None,
                 allowance: float = 0.0) -> None:
        self.loss_fn = loss_fn
        self.sample = sample
        check_int("every", every)
        self.track_min = bool(track_min)
        self._held = _count(sample, is_model_loss(loss_fn))  # None: batches, read whole
        held = self._held or 1
        size = held if size is None else min(check_int("size", size), held)
        self.cadence = Cadence(share, size, tuple(every * 2 ** i for i in range(4)), allowance=allowance)
        self.top = EigenTracker("LA", tol=tol, seed=seed)
        self.bottom = EigenTracker("SA", tol=tol, seed=seed + 1) if track_min else None
        self.points: list[SharpnessPoint] = []
        self.seconds = 0.0
        self._op: HessianOperator | None = None
        self._op_size: int | None = None  # the samples it was built on
        self._rule_kind: tuple[str, bool] | None = None

    @property
    def every(self) -> int:
        """Steps between two estimates now (``every``, or more where the cost cap spread them out)."""
        return self.cadence.every

    @property
    def columns(self) -> tuple[str, ...]:
        """What it adds to ``metrics.csv``."""
        return COLUMNS if self.track_min else COLUMNS[:2]

    def fix_size(self, size: int) -> None:
        """Read the first ``size`` samples of the sample (at most all of it) in every estimate from
        the next one on. Before the first estimate only: a run's points must share one sample."""
        if self.points:
            raise ValueError("fix_size must come before the first estimate: a run's points share one sample")
        size = min(check_int("size", size), self._held) if self._held else 1
        self.cadence.size = size

    def due(self, step: int, optimizer: Any = None) -> bool:
        """A measurement is due after ``step`` (with ``optimizer``: not before an adaptive one's
        first step, :func:`~descentlab.critical.stability.awaits_state`; the next one is due
        ``every`` steps on)."""
        return (step % self.every == 0 and (not self.points or self.points[-1].step != step)
                and not (optimizer is not None and awaits_state(optimizer)))

    def measure(self, step: int, model: nn.Module, optimizer: Any = None, *,
                training: float | None = None) -> SharpnessPoint:
        """Measure at ``model``'s current parameters, against ``optimizer``'s current rule;
        ``training``: the training seconds since the last estimate (for the cost cap; ``None``:
        not counted, as for the first, cold-started one)."""
        t0 = time.perf_counter()
        size = self.cadence.size if self._held else None
        if self._op is None or self._op.model is not model or size != self._op_size:
            data = self.sample if size is None else _first(self.sample, size, is_model_loss(self.loss_fn))
            self._op = HessianOperator(model, self.loss_fn, data, eval_mode=True).with_batch_statistics()
            self._op_size = size
        else:
            self._op = self._op.refreshed()
        op = self._op
        rule = stability_rule(optimizer, model, op.names) if optimizer is not None else None
        kind = (rule.name, rule.preconditioned) if rule is not None else ("", False)
        if kind != self._rule_kind:
            self.top.reset()  # another operator: the old eigenvector is no warm start
            self._rule_kind = kind
        allowed = self._allowed(training)
        if allowed is not None and self.bottom is not None:
            allowed /= 2  # the two ends share it
        top = self.top(op if rule is None else stability_operator(rule, op), seconds=allowed)
        products, converged = top.n_matvecs, top.converged
        lam = float(top.values[0])
        lr = float(rule.lr) if rule is not None else None
        if rule is None:
            value, threshold = lam, None
        elif lr > 0:
            value, threshold = sharpness_of(rule, lam) / lr, rule.limit / lr
        else:  # a rate of 0 allows any curvature (and a preconditioned operator is then 0)
            value, threshold = (math.nan if rule.preconditioned else lam * rule.scale), None
        lambda_min = None
        if self.bottom is not None:
            low = self.bottom(op, seconds=allowed)
            lambda_min = float(low.values[0])
            products, converged = products + low.n_matvecs, converged and low.converged
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        point = SharpnessPoint(int(step), lr, value, threshold, value / threshold if threshold else None, lambda_min,
                               kind[0], products, bool(converged), seconds, op.n_samples, float(top.residuals[0]))
        self.points.append(point)
        if training is not None:
            self.cadence.observe(seconds, training)
        else:  # the cold first estimate spends the allowance too, but is no measure of a warm one's cost
            self.cadence.charge(seconds)
        return point

    def _allowed(self, training: float | None) -> float | None:
        """Seconds the next estimate may take (``None``: no cap): 80 % of the share of the training
        since the last, or what is left of the allowance, whichever is more."""
        share = self.cadence.share
        if share is None:
            return None
        return max(0.8 * share * (training or 0.0), self.cadence.allowance - self.seconds)

    def row(self, step: int) -> dict[str, float | None]:
        """The ``metrics.csv`` columns at ``step`` (empty unless measured there)."""
        if not self.points or self.points[-1].step != step:
            return {}
        point = self.points[-1]
        values = {"sharpness": point.sharpness, "stability_threshold": point.threshold, "lambda_min": point.lambda_min}
        return {k: values[k] for k in self.columns}

    def state_dict(self) -> dict[str, Any]:
        """The points, the warm starts and the rule they belong to."""
        return {"points": [p.to_dict() for p in self.points], "seconds": self.seconds, "top": self.top.state_dict(),
                "cadence": self.cadence.state_dict(),
                "bottom": None if self.bottom is None else self.bottom.state_dict(),
                "rule_kind": None if self._rule_kind is None else list(self._rule_kind)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.points = [SharpnessPoint(**{k: (math.nan if v is None and k == "sharpness" else v) for k, v in p.items()})
                       for p in state["points"]]
        self.seconds = float(state["seconds"])
        if state.get("cadence") is not None:
            self.cadence.load_state_dict(state["cadence"])
        self.top.load_state_dict(state["top"])
        if self.bottom is not None and state["bottom"] is not None:
            self.bottom.load_state_dict(state["bottom"])
        self._rule_kind = None if state["rule_kind"] is None else (state["rule_kind"][0], bool(state["rule_kind"][1]))


def _count(data: Any, model_loss: bool) -> int | None:
    """The samples ``data`` holds as one batch (``None``: an iterable of batches, not counted)."""
    if model_loss and isinstance(data, list) and len(data) == 1:
        return count_of(data[0])  # the one batch the monitor holds in a list (a list batch stays one)
    if model_loss and is_single_batch(data):
        return count_of(data)
    if not model_loss and is_pair(data):
        return count_of(*data)
    return None


def _first(data: Any, n: int, model_loss: bool) -> Any:
    """The first ``n`` samples of ``data`` held as one batch, in its form (other data as it is)."""
    held = _count(data, model_loss)
    if held is None or n >= held:
        return data
    part = slice(0, n)
    if model_loss:
        return [take(data[0], part)] if isinstance(data, list) else take(data, part)
    return take(data[0], part), take(data[1], part)


def edge_of_stability(points: Sequence[SharpnessPoint], losses: Sequence[tuple[int, float]] = (),
                      band: float = HOVER_BAND) -> dict[str, Any]:
    """Did the sharpness reach the stability threshold and hover there, and what did the loss do?

    Cohen et al.'s picture has three phases: the sharpness rises (progressive sharpening), crosses
    the threshold and overshoots it briefly, then falls back and hovers. So: ``reached_step``,
    the first step with ``ratio >= AT_LIMIT`` (0.9; ``None`` if never); ``peak_ratio`` and
    ``peak_step`` after it; ``settled_step``, the first step after the peak with
    |ratio − 1| <= ``band``; from there on ``within_band`` (the fraction of estimates within the
    band) and ``median_ratio``. From ``reached_step`` on, the tracked ``losses`` ((step, loss)
    pairs): the loss there and at the end, and ``loss_rises``, how often it went up (a
    non-monotone descent). Without a threshold, or before reaching it: ``max_ratio``.
    """
    rated = [p for p in points if p.ratio is not None and math.isfinite(p.ratio)]
    out: dict[str, Any] = {"estimates": len(points), "band": band, "max_ratio": max((p.ratio for p in rated), default=None),
                           "reached_step": None, "settled_step": None}
    if points:
        out.update(first_sharpness=points[0].sharpness, last_sharpness=points[-1].sharpness,
                   threshold=points[-1].threshold,
                   products_per_estimate=sum(p.n_matvecs for p in points) / len(points))
    reached = next((i for i, p in enumerate(rated) if p.ratio >= AT_LIMIT), None)
    if reached is None:
        return out
    after = rated[reached:]
    peak = max(range(len(after)), key=lambda i: after[i].ratio)
    out.update(reached_step=after[0].step, peak_ratio=after[peak].ratio, peak_step=after[peak].step)
    settled = next((i for i in range(peak, len(after)) if abs(after[i].ratio - 1) <= band), None)
    if settled is not None:
        hover = [p.ratio for p in after[settled:]]
        out.update(settled_step=after[settled].step, within_band=sum(abs(r - 1) <= band for r in hover) / len(hover),
                   median_ratio=statistics.median(hover))
    tail = [(s, v) for s, v in losses if s >= after[0].step and math.isfinite(v)]
    if len(tail) >= 2:
        out.update(loss_at_reach=tail[0][1], loss_end=tail[-1][1],
                   loss_rises=sum(b[1] > a[1] for a, b in zip(tail, tail[1:])), loss_checks=len(tail) - 1)
    return out
