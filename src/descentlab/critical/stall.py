"""One stall of a training run, as a record: where, the verdict, its evidence, what was done.

A :class:`Stall` is plain data (``to_dict`` gives numbers, strings, lists and nested dicts, so
``stalls.json`` and a ``weights_only`` checkpoint take it as it is); the live objects it was
computed from (the :class:`~descentlab.critical.CriticalPoint`, the
:class:`~descentlab.critical.Escape`, the :class:`~descentlab.critical.trials.Trials`) ride along
for the caller, typed, but are never saved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from descentlab.critical.output_floor import output_range
from descentlab.critical.verdicts import (climbs, constant_inputs, copied, floorless_targets, held_by_decay,
                                          in_class_order, kinked, mixed, mostly_frozen, outlying_targets, raised,
                                          ringing, runaway_momentum,
                                          rounded_away, samples_shape, shrunk, targets_not_inputs, unpaired,
                                          weights_still)

__all__ = ["Stall", "STATUSES"]

#: ``diagnosed``; ``skipped (budget)`` (the plateau was seen, the budget had no room while it
#: lasted); ``failed: <error>`` (a diagnosis must never stop the training run).
STATUSES = ("diagnosed", "skipped (budget)", "failed")

_LIVE = ("point", "escape", "trial_result")
_TUPLES = ("eigenvalues", "slice_t", "slice_loss")


@dataclass(frozen=True)
class Stall:
    """One plateau (or the divergence) of a run and what the monitor found there.

    Attributes:
        step: the training step at which the plateau was noticed (or the loss became non-finite).
        loss: the tracked loss there (the loss on the monitor's fixed sample of the data).
        grad_norm: the gradient norm of that loss (``None`` when not measured).
        reason: ``"loss"`` (the plateau test), ``"grad"`` (the gradient test: below ``grad_tol``,
            or at a look between plateaus exactly 0 on the tracked samples), ``"growth"`` (the
            loop's gradient grew while the loss rose), ``"bounce"`` (the tracked loss at several
            times its best at several recent checks), ``"network"`` (between plateaus, the loss
            stuck high and a cause in the network seen), ``"copies"`` (the same, units copies of
            each other, decided with the curvature), ``"mixing"`` (the same, the model or the loss not
            keeping the samples apart), ``"stale"`` (the loop's gradient grew
            10x and to 4x the loss's own here: summed over steps), ``"batches"`` (the loop's batch
            losses fell to a fifth of their first ratio to the tracked loss), ``"creep"`` (the loss stuck high
            and falling so slowly that it would be there at the run's last step), ``"non_finite"``, or
            ``"on_demand"``
            (``StallMonitor.diagnose``).
        status: one of :data:`STATUSES`.
        verdict: why training stopped (:data:`descentlab.critical.verdicts.VERDICTS`), ``None``
            until diagnosed.
        remedy: the verdict's remedy in one sentence.
        evidence: what the verdict was decided from, as plain data (see
            :mod:`descentlab.critical.verdicts` for the keys).
        kind, degenerate, min_eigenvalue, max_eigenvalue, minimum_ratio: from ``classify``.
        eigenvalues: the extreme eigenvalues found (both ends of the spectrum).
        spectrum: every eigenvalue when ``classify`` formed the Hessian, else ``None``.
        slice_t, slice_loss: at a saddle, the loss at θ + t·u along the most negative eigenvector u
            (unit norm; after an escape, signed as the step was taken, so it is at t = ``escape_step``).
        escaped, escape_loss_before, escape_loss_after, escape_predicted, escape_step: the escape.
        seconds: wall time of this diagnosis (its remedy trials included).
        diagnosed_at: the step the diagnosis ran (later than ``step`` when the budget made it wait).
        trials: the remedy trials run from the stall, as plain data
            (:meth:`~descentlab.critical.trials.Trials.to_dict` plus ``status`` and ``fork_step``;
            ``left_out``: the remedies the budget had no room for, where it had room for ``keep``
            and at least one other), or ``{"status": "skipped (budget)", ...}``; ``None`` when none
            were asked for or fit.
        remedy_applied: the remedy the run continued with (``apply_remedy``), or ``None``.
        point, escape, trial_result: the live :class:`~descentlab.critical.CriticalPoint`,
            :class:`~descentlab.critical.Escape` and :class:`~descentlab.critical.trials.Trials`
            (``None`` when not computed, and after a round trip through ``to_dict``).
    """

    step: int
    loss: float
    grad_norm: float | None
    reason: str
    status: str
    verdict: str | None = None
    remedy: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict, repr=False)
    kind: str | None = None
    degenerate: bool | None = None
    min_eigenvalue: float | None = None
    max_eigenvalue: float | None = None
    minimum_ratio: float | None = None
    eigenvalues: tuple[float, ...] = ()
    spectrum: tuple[float, ...] | None = field(default=None, repr=False)
    slice_t: tuple[float, ...] = field(default=(), repr=False)
    slice_loss: tuple[float, ...] = field(default=(), repr=False)
    escaped: bool = False
    escape_loss_before: float | None = None
    escape_loss_after: float | None = None
    escape_predicted: float | None = None
    escape_step: float | None = None
    seconds: float = 0.0
    diagnosed_at: int | None = None
    trials: dict[str, Any] | None = field(default=None, repr=False)
    remedy_applied: str | None = None
    point: Any = field(default=None, repr=False, compare=False)
    escape: Any = field(default=None, repr=False, compare=False)
    trial_result: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers, strings, lists and dicts (JSON and ``weights_only`` checkpoints take it)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _LIVE}
        for key in (*_TUPLES, "spectrum"):
            out[key] = None if out[key] is None else list(out[key])
        if out["minimum_ratio"] is not None and not math.isfinite(out["minimum_ratio"]):
            out["minimum_ratio"] = None  # JSON has no NaN
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Stall":
        """The inverse of :meth:`to_dict` (unknown keys are ignored, missing ones take their defaults)."""
        known = {f.name for f in fields(cls)} - set(_LIVE)
        values = {k: v for k, v in data.items() if k in known}
        for key in _TUPLES:
            values[key] = tuple(values.get(key) or ())
        if values.get("spectrum") is not None:
            values["spectrum"] = tuple(values["spectrum"])
        values["evidence"] = dict(values.get("evidence") or {})
        return cls(**values)

    def summary(self) -> str:
        """One line: where, the verdict and its main evidence, and what the escape did."""
        head = f"step {self.step}: plateau at loss {self.loss:.4g}"
        if self.reason == "non_finite":
            head = f"step {self.step}: the loss became non-finite"
        elif self.reason == "on_demand":
            head = f"step {self.step}: at loss {self.loss:.4g}"
        elif self.reason in ("network", "copies", "mixing"):
            head = f"step {self.step}: the loss stuck at {self.loss:.4g}"
        elif self.reason == "grad":
            head = f"step {self.step}: the gradient {'exactly 0' if self.grad_norm == 0 else 'below grad_tol'} at " \
                f"loss {self.loss:.4g}"
        elif self.reason == "bounce":
            seen = (self.evidence or {}).get("bounce") or {}
            head = f"step {self.step}: the loss bounced"
            if seen:
                head += (f" to {seen['factor']:.3g}x its best ({seen['best']:.4g}) at {seen['checks']} of the last "
                         f"{seen['of']} checks")
            head += f", {self.loss:.4g} now"
        elif self.reason == "creep":
            head = f"step {self.step}: the loss creeps at {self.loss:.4g}"
        elif self.reason == "stale":
            head = f"step {self.step}: the loop's gradient outgrew the loss's at loss {self.loss:.4g}"
        elif self.reason == "batches":
            head = f"step {self.step}: the loop's batches left the data's loss behind at {self.loss:.4g}"
        elif self.reason == "growth":
            growth = ((self.evidence or {}).get("gradient") or {}).get("growth")
            head = f"step {self.step}: the gradient grew" + (f" {growth:.3g}x" if growth else "") + \
                f" while the loss rose to {self.loss:.4g}"
        if self.status != "diagnosed":
            return f"{head}, {self.status}"
        text = f"{head}: {self.verdict} ({evidence_text(self)})"
        switched = ((self.evidence or {}).get("data") or {}).get("eval_mode")
        if switched:
            text += f" [measured with {', '.join(switched)} in eval mode"
            on_batches = [what for what, key in (("the sharpness", "rate"), ("the layers", "layers"))
                          if ((self.evidence or {}).get(key) or {}).get("batch_statistics")]
            if on_batches:
                text += f"; {' and '.join(on_batches)} with batch-norm on batch statistics, as in training"
            text += "]"
        back = (self.evidence or {}).get("rollback")
        if back:
            text += f"; rolled back to step {back['to_step']}: {back['text']}"
        if self.escaped:
            text += f"; escape lowered the loss {self.escape_loss_before:.4g} -> {self.escape_loss_after:.4g}"
        return text

    def trials_summary(self) -> str | None:
        """One line on the remedy trials (``None`` when none ran or were skipped)."""
        trials = self.trials
        if not trials:
            return None
        if trials.get("status") != "ran":
            return f"step {self.step}: remedy trials {trials.get('status')}"
        by_name = {t["remedy"]: t for t in trials["trials"]}
        after = ", ".join(f"{name} {_loss_text(by_name[name]['losses'][-1])}" for name in trials["ranking"])
        text = (f"step {self.step}: tried {len(by_name)} remedies for {trials['steps']} steps from loss "
                f"{_loss_text(trials['trials'][0]['losses'][0])}: {after} "
                "(best first, by orders of magnitude of loss per second)")
        left = (trials.get("left_out") or {}).get("remedies")
        if left:
            text += f"; not tried for the budget: {', '.join(left)}"
        if self.remedy_applied:
            text += f"; continuing with {self.remedy_applied}"
            if self.remedy_applied != trials.get("winner"):
                text += f" ({trials.get('winner')} changes the model's modules: make it in your code)"
        return text


def _loss_text(value: float | None) -> str:
    return "diverged" if value is None else f"{value:.4g}"


def evidence_text(stall: Stall) -> str:
    """The few numbers that carry a stall's verdict, in words (the verdict table's evidence column)."""
    ev = stall.evidence or {}
    rate, noise, grad, curv = (ev.get(k) or {} for k in ("rate", "noise", "gradient", "curvature"))
    loss = ev.get("loss") or {}
    verdict = stall.verdict
    if verdict == "no_learning_rate" and rate.get("lr") and rounded_away(ev):
        precision = ev["precision"]
        return (f"{precision['still']:.0%} of the weights with a gradient still in {precision['dtype']} over "
                f"{precision['steps']} steps, lr {rate.get('lr'):.3g}")
    if climbs(verdict, ev) and rate.get("maximize"):
        return (f"maximize=True, lr {rate.get('lr', math.nan):.3g}, the loss {loss.get('initial', math.nan):.3g} -> "
                + ("non-finite" if verdict == "diverged" else f"{loss.get('value', math.nan):.3g}"))
    if climbs(verdict, ev) and verdict == "diverged":  # a negative rate
        return f"lr {rate.get('lr', math.nan):.3g}, peak {rate.get('peak_lr', math.nan):.3g}, the loss -> non-finite"
    if climbs(verdict, ev):
        return (f"the loop's gradient at cosine {grad.get('loop_cosine', math.nan):.2f} to the loss's, the loss "
                f"{loss.get('initial', math.nan):.3g} -> {loss.get('value', math.nan):.3g}")
    if verdict == "no_learning_rate" and rate.get("lr") and weights_still(ev):
        return f"no weight moved at lr {rate.get('lr'):.3g}, |g| {grad.get('norm') or 0.0:.2g}"
    if verdict == "accumulating_gradient":
        return (f"the loop's gradient {grad.get('loop_norm', math.nan):.3g}, {grad.get('loop_ratio', math.nan):.3g}x a "
                f"fresh batch gradient's {grad.get('expected_norm', math.nan):.3g} here, grown "
                f"{grad.get('loop_growth', math.nan):.3g}x since the start")
    if verdict == "no_learning_rate":
        peak, since = rate.get("peak_lr"), rate.get("zero_since")
        return (f"lr {rate.get('lr'):.3g}" + (f" since step {since}" if since is not None else "")
                + (f", peak {peak:.3g}" if peak else ""))
    if verdict in ("unstable", "diverged") and runaway_momentum(ev):
        return f"momentum {rate['momentum_option']:g} >= 1: no rate is stable, lr {rate.get('lr', math.nan):.3g}"
    if verdict in ("unstable", "diverged"):
        where = ""
        if verdict == "diverged":
            good = (ev.get("diverged") or {}).get("checkpoint_step")
            where = " (no finite loss read before)" if good is None else f" at step {good}, the last good point"
            counted = (ev.get("data") or {}).get("non_finite") or {}
            if counted.get("samples"):
                return (f"{counted['samples']:,} of {counted['of']:,} samples in {counted['where']} not finite, "
                        f"lr {rate.get('lr', float('nan')):.3g}")
        if rate.get("sharpness") is None:
            return f"lr {rate.get('lr', float('nan')):.3g}, sharpness not measured{where}"
        top = curv.get("max_eigenvalue")  # not measured under a preconditioned rule at a point that is not critical
        loss = ev.get("loss") or {}
        if verdict == "unstable" and rate["sharpness"] < rate["limit"] and raised(ev) and not ringing(ev):
            return (f"lr {rate['lr']:.3g}, {rate['lr'] / loss['best_lr']:.3g}x the rate at the loss's best "
                    f"{loss['best']:.3g}; sharpness {rate['sharpness']:.3g} vs limit {rate['limit']:.3g}")
        if verdict == "unstable" and rate["sharpness"] < rate["limit"] and ringing(ev):
            return (f"momentum {rate['momentum']:g} rings: an oscillation halves every "
                    f"{rate.get('ring_half_life') or math.inf:,.0f} steps; sharpness {rate['sharpness']:.3g} "
                    f"vs limit {rate['limit']:.3g}")
        unmodelled = rate.get("unmodelled")
        return (f"sharpness {rate['sharpness']:.3g} vs limit {rate['limit']:.3g}{where} "
                f"(lr {rate['lr']:.3g}" + (f", lambda_max {top:.3g})" if top is not None else ")")
                + (f"; {unmodelled} is not modelled: read by gradient descent's rule" if unmodelled else ""))
    if verdict == "noise_floor":
        return f"gradient SNR {noise.get('snr', float('nan')):.3g} at batch {noise.get('batch_size')}, |g| {grad.get('norm', float('nan')):.2g}"
    if verdict == "saddle":
        text = (f"lambda_min {curv.get('min_eigenvalue', float('nan')):.3g} < 0 in {curv.get('dtype')}, "
                f"|g| {grad.get('norm', float('nan')):.2g}")
        if held_by_decay(ev):
            text += (f"; held by weight decay {curv['decay']:.3g} (curvature {curv['decayed_escape']:.3g} "
                     "along the escape)")
        return text
    if verdict == "maximum":
        return f"lambda_max {curv.get('max_eigenvalue', float('nan')):.3g} < 0, |g| {grad.get('norm', float('nan')):.2g}"
    if verdict == "minimum":
        where = "stuck high" if loss.get("stuck_high") else ("the best seen" if loss.get("near_best") else "above the best seen")
        if mostly_frozen(ev):
            where += f" ({ev['data']['trainable']:,} of {ev['data']['parameters']:,} parameters train)"
        lowest = curv.get("min_eigenvalue", float("nan"))
        if curv.get("degenerate"):
            return f"lambda_min {lowest:.2g} ~ 0 in {curv.get('dtype')} (probed: no descent), loss {where}"
        return f"lambda_min {lowest:.3g} > 0 in {curv.get('dtype')}, loss {where}"
    if verdict == "flat":
        return f"|g| {grad.get('norm', float('nan')):.2g}, |lambda| <= {max(abs(curv.get('min_eigenvalue') or 0), abs(curv.get('max_eigenvalue') or 0)):.2g}"
    layers = ev.get("layers") or {}
    if verdict in ("dead_units", "saturated_units"):
        key = "dead" if verdict == "dead_units" else "saturated"
        hit = [u for u in layers.get("units") or [] if (u.get(key) or 0) > 0]
        if not hit:
            return f"no {key} units measured"
        return ", ".join(f"{u[key]:.0%} {key} at {u['name']} ({u['family']})" for u in
                         sorted(hit, key=lambda u: -u[key])[:3])
    if verdict == "symmetric_units":
        shown = [f"{layer['copies']:.0%} of the units at {layer['name']} copies" for layer in copied(ev)[:3]]
        return ", ".join(shown) or "no copied units measured"
    if verdict in ("vanishing_gradient", "exploding_gradient"):
        rel = [layer["relative"] for layer in layers.get("layers") or []]
        profile = " -> ".join(f"{r:.1e}" for r in rel)
        growth = (ev.get("gradient") or {}).get("growth")
        text = f"|g|/|W| input -> output {profile}"
        return text + (f", |g| grew {growth:.3g}x" if verdict == "exploding_gradient" and growth else "")
    if verdict == "biased_batches" and in_class_order(ev.get("batches")):
        order = ev["batches"]["order"]
        return (f"the loader reads the data in order: its first batch holds {order['first_batch_classes']} of "
                f"{order['sample_classes']} classes")
    if verdict == "biased_batches":
        batches = ev.get("batches") or {}
        return (f"the loop's batches at loss {batches.get('batch_loss', math.nan):.3g}, the data at "
                f"{batches.get('tracked', math.nan):.3g}: {batches.get('ratio', math.nan):.2g} of their ratio at the "
                "start")
    if verdict == "weight_decay":
        decay = ev.get("decay") or {}
        kind = "decoupled" if decay.get("decoupled") else "coupled"
        return (f"weight decay {decay.get('decay', math.nan):g} ({kind}) pulls {decay.get('pull', math.nan):.3g}x the "
                f"loss's gradient step, loss {loss.get('value', math.nan):.4g} of {loss.get('initial', math.nan):.4g} "
                "at the start")
    if verdict == "bounded_outputs":
        out = layers.get("outputs") or {}
        held = f", {out['at_bound']:.0%} held at the bound" if out.get("at_bound") else ""
        return (f"outputs in {output_range(out) if 'low' in out else '?'} by {out.get('by')} "
                f"({out.get('family')}{held}): {out.get('loss')} floor {out.get('floor') or math.nan:.3g}, loss "
                f"{out.get('value') or math.nan:.3g}")
    if verdict == "unscaled_inputs" and floorless_targets(ev):
        return f"{floorless_targets(ev):.0%} of the targets outside [0, 1] under binary cross-entropy: no lowest loss"
    if verdict == "mixed_samples" and unpaired(ev):
        pairing = layers["pairing"]
        return (f"the loss does not pair outputs {samples_shape(pairing['outputs'])} with targets "
                f"{samples_shape(pairing['targets'])}: half the targets moved, its gradient elsewhere moves "
                f"{pairing['leak']:.2g}x as much")
    if verdict == "mixed_samples" and mixed(ev):
        return (f"the model mixes the samples of a batch: half a batch's outputs move {layers['mixing']['change']:.2g} "
                "without the other half")
    if verdict == "unscaled_inputs" and outlying_targets(layers.get("targets")):
        targets = layers["targets"]
        return (f"{targets['outlying']:.2%} of the targets 30+ robust spreads out, {targets['outlying_error']:.0%} of "
                "the squared error")
    if verdict == "unscaled_inputs" and targets_not_inputs(ev):
        targets = layers["targets"]
        return (f"targets' root-mean-square {targets['rms']:.3g}, {targets['ratio']:.3g}x the outputs' "
                f"{targets['outputs_rms']:.3g}")
    if verdict == "unscaled_inputs" and constant_inputs(ev):
        return "no input feature varies over the sample"
    if verdict == "unscaled_inputs":
        inputs = layers.get("inputs") or {}
        return (f"input spreads {inputs.get('std_min', float('nan')):.3g} to {inputs.get('std_max', float('nan')):.3g}, "
                f"condition number {inputs.get('cond_raw') or float('inf'):.3g} raw vs "
                f"{inputs.get('cond_standardized', float('nan')):.3g} standardized")
    if verdict == "slow":
        parts = [f"|g| {grad.get('norm', float('nan')):.2g}"]
        if rate.get("sharpness") is not None:
            parts.append(f"sharpness {rate['sharpness']:.3g} of limit {rate['limit']:.3g}"
                         + (f" (gradient descent's: {rate['unmodelled']} is not modelled)" if rate.get("unmodelled")
                            else ""))
        elif (ev.get("curvature") or {}).get("largest_stable_lr"):  # no optimizer: the stable rates
            parts.append(f"lambda_max {ev['curvature']['max_eigenvalue']:.3g}, stable rates below "
                         f"{ev['curvature']['largest_stable_lr']:.3g}")
        if noise.get("snr") is not None:
            parts.append(f"SNR {noise['snr']:.3g}")
        if shrunk(ev):
            parts.append(f"the loop's gradient {grad['loop_high_ratio']:.2g}x a fresh batch's")
        if kinked(ev):
            step = rate["step_curvature"]
            parts.append(f"kinked: curvature {step['secant']:.3g} along a step, the Hessian's {step['tangent']:.3g}")
        return ", ".join(parts)
    return ""
