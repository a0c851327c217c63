"""The remedies that fit a verdict, each as the change it makes to a run.

The lectures name the remedies (a step along negative curvature, a lower or decaying rate,
warm-up, momentum, adaptive rates, larger batches, gradient noise); a verdict says which of
them address *its* cause. At a stall they are not guessed but tried (:mod:`descentlab.critical.trials`):
each :class:`Remedy` below is a change to the run as it is at the stall, applied to a copy of
it, and the same change is what ``apply_remedy`` makes to the run itself.

==================  =====================================================================
remedy              the change (t = steps since the stall, T = the trials' length)
==================  =====================================================================
``keep``            nothing: the run's optimizer, state and rate as they are (the control)
``escape``          one step along the most negative eigenvector (line search), then ``keep``
``escape-fast``     the escape step, then the rate at half the stability limit of the Hessian's
                    largest |eigenvalue| ρ at the stall (1/ρ for gradient descent; a plain rule only):
                    the escaping direction then grows ~2x a step instead of (1 + η|λ_min|)x
``lower-rate``      the rate × 0.3, or lower where that would leave the measured sharpness above
                    half its limit (:func:`lower_factor`), the optimizer's state kept
``raise-rate``      the rate raised to half the largest stable rate the rate test measured (the
                    lectures' 1/λ_max for gradient descent), the optimizer's state kept
``decay``           the rate decays as lr / (1 + t / (T/4)) (Robbins-Monro's 1/t: a fifth at T)
``warm-up``         the lectures' warm-up, restarted: the rate rises linearly from 0 over T/2 steps,
                    then decays as sqrt(T/2 / t) (the ``warmup-rsqrt`` schedule, the Transformer's shape)
``larger-batch``    batches of max(4B, B*) samples (B* where the gradient's SNR reaches 1), at most all
``momentum``        heavy-ball momentum 0.9 on the run's SGD, same rate, a fresh velocity
``lower-decay``     (``weight_decay``) every group's weight decay × 0.01, the rest of the run as it is
``no-decay``        (``weight_decay``) the weight decay dropped: a decay 100x too strong is still too
                    strong at a hundredth (AdamW's 30 at 0.3), and a fresh decay is the user's to choose
``no-decay-         (``weight_decay``) the same, and the modules the decay shrank re-initialised (each
reinit``            module's own ``reset_parameters``), the optimizer's state fresh: weights dragged
                    toward 0 are a start near the network's saddle at the origin
``lower-momentum``  (``unstable`` where the momentum rings, :func:`~descentlab.critical.verdicts.ringing`,
                    or is 1 or more, :func:`~descentlab.critical.verdicts.runaway_momentum`: then the only trial)
                    the momentum (Adam's β₁) lowered to 0.9, same rate, a fresh velocity (and moments)
``adam``            Adam at its default rate 1e-3, fresh moments
``noise``           annealed Gaussian gradient noise (Neelakantan et al. 2015, the registry's
                    ``noisy:`` wrapper, σ² = 0.3/(1 + t)^0.55) on the run's optimizer
``peak-rate``       the rate back at the largest the run has used
``clip``            the gradients clipped to the run's typical gradient norm
``reinit``          the named layers re-initialised (Kaiming, bias 0; Xavier with the saturating
                    activation's gain where units saturate; at a ``symmetric_units`` stall the layers
                    whose units are copies and the weight layer after each, whose inputs are the
                    copies, each by its module's own ``reset_parameters``: nothing in a constant
                    start says what scale the user meant), and the normalization layers in
                    front of those units (scale 1, shift 0); dead units behind a normalization
                    layer get that layer alone back (only its scale and shift can hold them dead)
``reinit-head``     the output layer (the last weight layer in forward order) re-initialised at the
                    scale PyTorch builds it (no activation follows it), bias 0: a flat region where
                    the output is held past a bound (a clamp) or in a saturated tail passes no
                    gradient to anything before it
``relu``            ReLU for the saturating activation modules, the layers re-initialised (Kaiming)
``leaky-relu``      LeakyReLU(0.01) for the ReLU modules with dead units, the layers that hold them
                    dead re-initialised as ``reinit`` does (not for an activation written as a
                    function: no module to swap)
``raw-outputs``     (``bounded_outputs``, ``dead_units``) the bounded module that makes the outputs (a
                    sigmoid, tanh, softmax or ReLU in front of a loss that wants raw scores, recognised
                    by its value) swapped for ``nn.Identity`` (not for one written as a function in the
                    user's forward: no module to swap)
``batch-first``     (``mixed_samples``) ``batch_first=True`` on the layers built without it (recurrent
                    and attention layers, torch's default), which the model feeds batch first: they ran
                    along the batch (none where no layer has the flag off: a softmax over dim 0 or a
                    loss that broadcasts is the user's code to change)
``standardize``     the inputs standardized with the sample's mean and spread (a wrapper); at an
                    ``unscaled_inputs`` stall under a plain rule (SGD, momentum), the rate set to
                    half the largest stable rate the standardized problem has, measured at the
                    current weights (:func:`~descentlab.critical.diagnosis.standardized_rate`)
``standardize-      the inputs standardized and every weight layer re-initialised: the weights
reinit``            fitted to the raw scales are of no use to standardized inputs, so the run
                    starts again, well scaled; under a plain rule the rate set to half the largest
                    stable rate of that fresh start (the new weights' curvature, not the old ones')
``rollback``        the weights put back to the last good point (the lowest tracked loss), the
                    optimizer's state forgotten, the rate lowered so the sharpness measured there
                    is half its limit (:func:`lower_factor`; × 0.3 where it was not measured).
                    A ``diverged`` run is rolled back, not tried; at any other stall whose loss
                    is :data:`ROLLBACK_ABOVE` times its best or more (the run lost what it had
                    learned: a rate that threw its units dead) it is one of the trials
``rollback-clip``   (``exploding_gradient``, where ``rollback`` is tried) the same, at the run's rate,
                    the gradients clipped to their typical norm from then on
``shuffle``         (``biased_batches``) the loop asked to draw each step's batch from the whole data,
                    shuffled (:attr:`~descentlab.engine.LoopState.shuffle`: no callback can reorder a
                    loop's data; the zoo's loop reads it, ``train()`` always shuffles)
``zero-grad``       (``accumulating_gradient``) the gradients forgotten after each step
                    (:class:`~descentlab.optim.FreshGradients`), the optimizer's state forgotten
                    (moments and velocities of summed gradients: Adam's second moments would keep
                    its steps small for hundreds of steps)
==================  =====================================================================

Which fit which verdict (:data:`MENU`): a saddle or a maximum is left by the escape (at the run's
rate or at the fast one), by momentum, by noise, or by an adaptive rate; an ``unstable`` run needs a
lower, decaying or warmed-up rate (or, where its momentum rings, a lower momentum); a
``noise_floor`` a lower or decaying rate or a larger batch; units that are copies of each other
fresh random weights or gradient noise (either breaks their symmetry); a ``flat`` region a fresh
output layer, momentum, an adaptive rate or noise; a ``slow`` run the rate its own stability limit
allows, momentum or an adaptive rate; a minimum stuck high noise or an adaptive rate (a minimum at
the best loss seen gets no trials: nothing should beat stopping); ``no_learning_rate`` the rate
restored; outputs held above the loss's floor by a bounded function that function taken off; a
weight decay that holds the weights the decay lowered; samples a model mixes through a layer built
without ``batch_first`` the flag set.
``keep`` is always tried too, so a ranking says whether any remedy beats carrying on.
``momentum`` needs plain SGD (torch's ``SGD`` without momentum), ``adam`` an optimizer that is not
already adaptive; ``diverged`` gets no trials (its point is not finite): with ``apply_remedy`` the
run is rolled back instead (:func:`rollback`). Nor does ``accumulating_gradient``: a trial's loop
zeroes its gradients, so every trial, ``keep`` too, would be the repaired run; with ``apply_remedy``
``zero-grad`` is applied (:data:`IMPOSED`); nor does ``biased_batches`` (every trial draws shuffled
batches of its own), whose ``shuffle`` is requested.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from descentlab.critical.stability import current_rate, innermost
from descentlab.critical.verdicts import (blind_units, climbs, constant_inputs, copied, floorless_targets, kinked,
                                          mixed, outlying_targets, quoted, ringing, runaway_momentum)
from descentlab.engine.changes import Change
from descentlab.schedules import InverseTime, WarmupInverseSqrt

__all__ = ["Remedy", "MENU", "IMPOSED", "remedies_for", "rollback", "lower_factor", "LOWER_FACTOR", "RAISE_TO",
           "MOMENTUM", "BATCH_FACTOR", "ROLLBACK_ABOVE", "DECAY_FACTOR"]

#: The rate factor of ``lower-rate``.
LOWER_FACTOR = 0.3
#: ``raise-rate`` sets the rate to this fraction of the largest stable rate (the limit's half: the
#: top direction then contracts fastest under gradient descent, and sharpening has room).
RAISE_TO = 0.5
#: ``rollback`` is tried at a stall whose tracked loss is this many times its best or more.
ROLLBACK_ABOVE = 3.0
#: ``lower-decay`` multiplies the weight decay by this.
DECAY_FACTOR = 0.01
#: The heavy-ball coefficient of ``momentum``.
MOMENTUM = 0.9
#: ``larger-batch`` multiplies the batch by at least this.
BATCH_FACTOR = 4

#: verdict -> the remedies tried at such a stall (``keep`` first).
MENU: Mapping[str, tuple[str, ...]] = {
    "saddle": ("keep", "escape", "escape-fast", "momentum", "noise", "adam"),
    "maximum": ("keep", "escape", "escape-fast", "noise"),
    "flat": ("keep", "momentum", "adam", "noise", "reinit-head"),
    "slow": ("keep", "raise-rate", "momentum", "adam"),
    "unstable": ("keep", "lower-rate", "decay", "warm-up", "lower-momentum"),
    "noise_floor": ("keep", "lower-rate", "decay", "larger-batch"),
    "minimum": ("keep", "noise", "adam"),
    "no_learning_rate": ("keep", "peak-rate"),
    "exploding_gradient": ("keep", "clip", "lower-rate", "warm-up", "reinit"),
    "dead_units": ("keep", "leaky-relu", "reinit", "lower-rate", "raw-outputs"),
    "saturated_units": ("keep", "standardize", "reinit", "relu"),
    "symmetric_units": ("keep", "reinit", "noise"),
    "vanishing_gradient": ("keep", "adam", "reinit", "relu"),
    "unscaled_inputs": ("keep", "standardize", "standardize-reinit", "adam"),
    "bounded_outputs": ("keep", "raw-outputs"),
    "weight_decay": ("keep", "lower-decay", "no-decay", "no-decay-reinit"),
    "mixed_samples": ("keep", "batch-first"),
}

#: the registry's optimizers that step sparse gradients (torch's SGD and Adagrad)
SPARSE_OPTIMIZERS = ("sgd", "adagrad")

_ADAPTIVE_STATE = ("exp_avg_sq", "square_avg", "sum", "acc_delta")


@dataclass(frozen=True)
class Remedy:
    """One remedy: a named :class:`~descentlab.engine.changes.Change` to the run (see the module
    docstring's table), and whether it starts with a step along negative curvature.

    Attributes:
        name: the remedy's name.
        text: what it does, in words.
        change: the change to the optimizer, its rate and the batches (made by
            :func:`~descentlab.engine.changes.apply_change`, on a fork for a trial and on the run
            when applied).
        escape: start with one step along the most negative eigenvector.
        restore: start from the weights of the run's last good point (``rollback``).
    """

    name: str
    text: str
    change: Change = Change()
    escape: bool = False
    restore: bool = False

    def rate_factor(self, t: int) -> float:
        """The rate's factor ``t`` steps after the stall (1 without a schedule)."""
        return self.change.rate_factor(t)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what ``stalls.json`` records and a resumed run re-applies)."""
        return {"name": self.name, "text": self.text, "change": self.change.to_dict(), "escape": self.escape,
                "restore": self.restore}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Remedy":
        """The inverse of :meth:`to_dict`."""
        return cls(str(data["name"]), str(data["text"]), Change.from_dict(data.get("change") or {}),
                   bool(data.get("escape", False)), bool(data.get("restore", False)))


#: verdict -> the remedy ``apply_remedy`` makes without trials (none could measure it).
IMPOSED: Mapping[str, Remedy] = {
    "accumulating_gradient": Remedy("zero-grad", "the gradients forgotten after each step (what "
                                    "optimizer.zero_grad() before each backward does), the optimizer's state "
                                    "forgotten (its moments measured the sums)",
                                    Change(fresh_gradients=True, fresh_state=True)),
    "biased_batches": Remedy("shuffle", "each step's batch drawn from the whole data, shuffled (a loop that draws "
                             "its own batches reads LoopState.shuffle; yours: DataLoader(shuffle=True))",
                             Change(shuffle=True)),
}


def remedies_for(verdict: str | None, evidence: Mapping[str, Any] | None, optimizer: Any, *, batch_size: int | None,
                 n_data: int | None, trial_steps: int, peak_lr: float | None = None,
                 can_escape: bool = False, inputs: tuple[Sequence[float], Sequence[float]] | None = None,
                 can_roll_back: bool = False, sparse: bool = False) -> list[Remedy]:
    """The remedies :data:`MENU` lists for ``verdict`` that apply to this run (``[]``: none).

    ``optimizer`` is the run's (its rate, class and state decide ``momentum`` and ``adam``);
    ``batch_size``/``n_data`` the run's batch and data sizes (``larger-batch`` needs a
    mini-batch); ``can_escape``: negative curvature was found, with its eigenvector;
    ``inputs``: the sample's mean and spread per input feature (``standardize`` needs them);
    ``can_roll_back``: the run's loss is :data:`ROLLBACK_ABOVE` times its best or more, and the
    weights there are kept (``rollback`` is tried too); ``sparse``: the model has an embedding with
    sparse gradients (:func:`~descentlab.params.sparse_embeddings`), which only the optimizers
    :data:`SPARSE_OPTIMIZERS` step and neither gradient noise nor clipping takes.
    The layers a remedy re-initialises or whose activations it swaps are the ones the
    evidence names (``evidence["layers"]``).
    """
    evidence = evidence or {}
    names = MENU.get(verdict or "", ())
    if verdict == "minimum" and not (evidence.get("loss") or {}).get("stuck_high"):
        names = ()
    targets = (evidence.get("layers") or {}).get("targets")
    if verdict == "unscaled_inputs" and (constant_inputs(evidence) or floorless_targets(evidence)
                                         or outlying_targets(targets)):
        names = ()  # inputs that do not vary, targets with no floor or far out: what could change them is the data
    if climbs(verdict or "", evidence):
        # maximize=True: a trial's fork climbs too; a negated loss: the fork descends the monitor's
        # loss, which the loop never does; either way what changes it is the loop's own code
        names = ()
    if verdict == "unstable" and runaway_momentum(evidence):
        names = ("keep", "lower-momentum")  # at any rate, any decay or warm-up, the velocity grows
    if verdict == "slow" and kinked(evidence):  # the Hessian's rate does not hold: a smaller one is measured too
        names = (*names, "decay", "lower-rate")
    if not names or optimizer is None:
        return []
    lr = current_rate(optimizer)
    inner = innermost(optimizer)
    plain_sgd = isinstance(inner, torch.optim.SGD) and not any(g.get("momentum", 0) for g in inner.param_groups)
    adaptive = any(key in s for s in inner.state.values() for key in _ADAPTIVE_STATE) or "betas" in inner.defaults
    decay = max((float(g.get("weight_decay", 0.0) or 0.0) for g in inner.param_groups), default=0.0)
    out = []
    for name in names:
        remedy = _remedy(name, lr=lr, trial_steps=trial_steps, batch_size=batch_size, n_data=n_data,
                         peak_lr=peak_lr, evidence=evidence, plain_sgd=plain_sgd, adaptive=adaptive,
                         can_escape=can_escape, decay=decay) if name not in _NETWORK else \
            _network_remedy(name, evidence, inputs, lr)
        if remedy is not None and not (sparse and _needs_dense(remedy.change)):
            out.append(remedy)
    if can_roll_back:
        # the sharpness at the last good point is not measured at a stall
        out.append(rollback(None, runaway=runaway_momentum(evidence)))
        if verdict == "exploding_gradient" and not sparse:  # back to before the explosion, its own fix from there on
            clip = _network_remedy("clip", evidence, inputs, lr)
            out.append(Remedy("rollback-clip", "back to the last good point, fresh optimizer state, " + clip.text,
                              Change(clip=clip.change.clip, fresh_state=True), restore=True))
    return out if len(out) > 1 else []  # keep alone is nothing to compare


def _needs_dense(change: Change) -> bool:
    """``change`` steps with an optimizer or a wrapper that needs dense gradients."""
    return (change.optimizer is not None and change.optimizer not in SPARSE_OPTIMIZERS
            or change.noise or change.clip is not None)


def lower_factor(evidence: Mapping[str, Any] | None) -> tuple[float, float | None]:
    """``(factor, ratio)``: the rate's factor that puts the measured sharpness at
    :data:`RAISE_TO` (half) of its limit, and × :data:`LOWER_FACTOR` at least (× 0.3 alone would
    leave a rate 4x past its limit still past it); :data:`LOWER_FACTOR` where the ratio (sharpness
    over limit) was not measured. ``ratio``: that ratio, or ``None``."""
    ratio = ((evidence or {}).get("rate") or {}).get("ratio")
    if ratio is None or not math.isfinite(ratio) or ratio <= 0:
        return LOWER_FACTOR, None
    return min(LOWER_FACTOR, RAISE_TO / ratio), float(ratio)


def rollback(evidence: Mapping[str, Any] | None, *, runaway: bool = False) -> Remedy:
    """The ``rollback`` remedy (the weights are put back by the request or the trial that carries
    it): the rate lowered by :func:`lower_factor` of the sharpness at the last good point, measured
    there when a run diverged (``evidence``; an optimizer whose state overflowed has no
    preconditioner to read: × 0.3 then), not measured at a stall's trials (``None``: × 0.3). Where
    the momentum is 1 or more (``runaway``, or :func:`~descentlab.critical.verdicts.runaway_momentum`
    of ``evidence``) it is lowered to :data:`MOMENTUM` too: at any rate it would blow up again."""
    factor, ratio = lower_factor(evidence)
    why = f"the sharpness there {ratio:.3g}x its limit" if ratio is not None else "the sharpness there not measured"
    runaway = runaway or (evidence is not None and runaway_momentum(evidence))
    return Remedy("rollback", f"back to the last good point, fresh optimizer state, the rate x {factor:.3g} ({why})"
                  + (f", the momentum {MOMENTUM:g}" if runaway else ""),
                  Change(lr_factor=factor, fresh_state=True, momentum=MOMENTUM if runaway else None), restore=True)


#: Remedies that change the network or its inputs (from the evidence's layers).
_NETWORK = ("clip", "reinit", "reinit-head", "relu", "leaky-relu", "standardize", "standardize-reinit", "raw-outputs",
            "batch-first")
_SATURATING = ("sigmoid", "tanh", "hardtanh", "hardsigmoid", "softsign")


def _network_remedy(name: str, evidence: Mapping[str, Any],
                    inputs: tuple[Sequence[float], Sequence[float]] | None, lr: float) -> Remedy | None:
    layers = evidence.get("layers") or {}
    weights = [layer["name"] for layer in layers.get("layers") or []]
    units = layers.get("units") or []
    saturating = [u for u in units if u["family"] in _SATURATING]
    if name == "clip":
        typical = (evidence.get("gradient") or {}).get("typical")
        norm = float(typical) if typical and math.isfinite(typical) and typical > 0 else 1.0
        return Remedy("clip", f"gradients clipped to a norm of {norm:.3g}", Change(clip=norm))
    if name == "reinit":
        if not weights:
            return None
        dead = [name for u in units if (u.get("dead") or 0) >= 0.5 and u.get("after") and not blind_units(u)
                for name in _holding(u)]  # blind units are the fade's: every layer is re-initialised
        copies = [layer["name"] for layer in copied(evidence)]  # random weights break the copies' symmetry
        copies = [name for i, name in enumerate(weights) if name in copies or (i and weights[i - 1] in copies)]
        if copies and not dead:
            return Remedy("reinit", f"re-initialise {quoted(copies)} (PyTorch's own initialisation of each)",
                          Change(reinit=tuple(copies), init="module"))
        names = tuple(dict.fromkeys(dead)) or tuple(weights) + _norms(units)
        if saturating and not dead:
            family = max(saturating, key=lambda u: u.get("saturated") or 0)["family"]
            gain = "tanh" if family in ("tanh", "hardtanh", "softsign") else "sigmoid"
            return Remedy("reinit", f"re-initialise {quoted(names)} (Xavier, {gain} gain)",
                          Change(reinit=names, init="xavier", gain_of=gain))
        return Remedy("reinit", f"re-initialise {quoted(names)} ({_drawn(names, units)})",
                      Change(reinit=names, init="kaiming"))
    if name == "reinit-head":  # the output layer held where the loss is flat (past a clamp, saturated); no
        # activation follows it, so no activation's gain: the scale the model was built at
        head = _output_layer(weights)
        return Remedy("reinit-head", f"re-initialise the output layer {head!r} (PyTorch's default scale, bias 0)",
                      Change(reinit=(head,), init="default")) if head is not None else None
    if name == "relu":  # the new activation needs its own gain: the layers are re-initialised with it
        sites = tuple(dict.fromkeys(u["name"].split("#")[0] for u in saturating))
        return Remedy("relu", f"ReLU for the {quoted(sites)} activations, the layers re-initialised (Kaiming)",
                      Change(activations=sites, activation="relu", reinit=tuple(weights))) if sites else None
    if name == "leaky-relu":  # a unit dead from a large negative bias stays dead without new weights
        dead = [u for u in units if (u.get("dead") or 0) > 0 and u.get("module", True)]  # a function: no swap
        sites = tuple(dict.fromkeys(u["name"].split("#")[0] for u in dead))
        before = tuple(dict.fromkeys(name for u in dead if u.get("after") for name in _holding(u)))
        return Remedy("leaky-relu", f"LeakyReLU(0.01) for {quoted(sites)}, {quoted(before)} re-initialised "
                      f"({_drawn(before, units)})",
                      Change(activations=sites, activation="leaky_relu", reinit=before)) if sites else None
    if name == "batch-first":  # only where the model mixes the samples and some layer has the flag off
        mixing = layers.get("mixing") or {}
        off = tuple(mixing.get("batch_first_off") or ()) if mixed(evidence) else ()
        return Remedy("batch-first", f"batch_first=True on {quoted(off)}", Change(batch_first=off)) if off else None
    if name == "raw-outputs":  # the bounded module at the outputs taken out (one in the user's forward cannot be)
        outputs = layers.get("outputs") or {}
        return Remedy("raw-outputs", f"the {outputs['family']} at {outputs['by']!r} taken off the outputs (raw "
                      "scores)", Change(activations=(outputs["by"],), activation="identity")) \
            if outputs.get("module") and outputs.get("loss") else None  # a loss that wants raw scores
    if name == "standardize":
        if inputs is None:
            return None
        largest = (evidence.get("standardized_rate") or {}).get("largest_stable_lr")
        if largest and math.isfinite(largest) and lr > 0:  # the rate the standardized problem allows
            return Remedy("standardize", f"the inputs standardized with the sample's mean and spread, the rate "
                          f"{RAISE_TO * largest:.3g} (half the largest stable rate there)",
                          Change(standardize=inputs, lr_factor=RAISE_TO * largest / lr))
        return Remedy("standardize", "the inputs standardized with the sample's mean and spread",
                      Change(standardize=inputs))
    if name == "standardize-reinit":
        if inputs is None or not weights:
            return None
        # the rate a fresh start on standardized inputs allows (measured at the new weights)
        largest = ((evidence.get("standardized_rate") or {}).get("fresh") or {}).get("largest_stable_lr")
        factor = RAISE_TO * largest / lr if largest and math.isfinite(largest) and lr > 0 else 1.0
        at = f", the rate {RAISE_TO * largest:.3g} (half the largest stable rate there)" if factor != 1.0 else ""
        if saturating:  # the activation the layers feed decides the gain
            family = saturating[0]["family"]
            gain = "tanh" if family in ("tanh", "hardtanh", "softsign") else "sigmoid"
            return Remedy("standardize-reinit", f"the inputs standardized and {quoted(weights)} re-initialised "
                          f"(Xavier, {gain} gain){at}", Change(standardize=inputs, reinit=tuple(weights),
                                                                init="xavier", gain_of=gain, lr_factor=factor))
        return Remedy("standardize-reinit", f"the inputs standardized and {quoted(weights)} re-initialised "
                      f"(Kaiming, bias 0){at}", Change(standardize=inputs, reinit=tuple(weights), init="kaiming",
                                                       lr_factor=factor))
    raise ValueError(f"unknown remedy {name!r}")


def _output_layer(weights: Sequence[str]) -> str | None:
    """The last weight layer in forward order that holds no other (a module with a parameter of its
    own, such as a learned position table, also lists itself after the layers inside it)."""
    leaves = [n for n in weights if not any(o != n and (n == "" or o.startswith(n + ".")) for o in weights)]
    return leaves[-1] if leaves else None


def _holding(unit: Mapping[str, Any]) -> tuple[str, ...]:
    """The layers that hold ``unit``'s activation dead: a normalization layer between it and its
    weight layer alone (the unit's input is then γ·x̂ + β with x̂ standardized, so only γ and β can
    keep it below zero on every sample; the weight layer's scale, which the normalization hides,
    sets its effective step, and a fresh draw at another scale trains at another rate), else the
    weight layer."""
    return tuple(unit.get("norms") or ()) or (unit["after"],)


def _drawn(names: Sequence[str], units: Sequence[Mapping[str, Any]]) -> str:
    """How the layers ``names`` are re-initialised, in words (the normalization layers in front of
    ``units`` get their scale 1 and shift 0 back, the others Kaiming's draw)."""
    norms = set(_norms(units)) & set(names)
    if names and norms == set(names):
        return "scale 1, shift 0"
    return "Kaiming, bias 0" + ("; the normalization layers scale 1, shift 0" if norms else "")


def _norms(units: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The normalization layers in front of ``units`` (their shift can hold units in a tail too)."""
    return tuple(dict.fromkeys(name for u in units for name in (u.get("norms") or ())))


def _escape_rate(evidence: Mapping[str, Any]) -> float | None:
    """Half the largest stable rate of a plain rule for the Hessian's largest |eigenvalue| ρ
    measured at the stall (1/ρ for gradient descent), or ``None`` (not measured, or a preconditioned
    rule, whose sharpness is not the Hessian's)."""
    rate, curvature = evidence.get("rate") or {}, evidence.get("curvature") or {}
    radius = max(abs(curvature.get("min_eigenvalue") or 0.0), abs(curvature.get("max_eigenvalue") or 0.0))
    scale = rate.get("scale")
    if rate.get("preconditioned", True) or not scale or not (0 < radius < math.inf) or not rate.get("limit"):
        return None
    return RAISE_TO * float(rate["limit"]) / (float(scale) * radius)


def _remedy(name: str, *, lr: float, trial_steps: int, batch_size: int | None, n_data: int | None,
            peak_lr: float | None, evidence: Mapping[str, Any], plain_sgd: bool, adaptive: bool,
            can_escape: bool, decay: float = 0.0) -> Remedy | None:
    if name == "keep":
        return Remedy("keep", "carry on as is")
    if name == "escape":
        return Remedy("escape", "a step along the most negative eigenvector, then carry on", escape=True) if can_escape else None
    if name == "escape-fast":
        target = _escape_rate(evidence) if can_escape else None
        if target is None or target <= 2 * lr:
            return None  # not measured, or not far enough above the rate to be worth a trial
        return Remedy("escape-fast", f"a step along the most negative eigenvector, then the rate {target:.3g} (half "
                      "the stability limit of the largest |eigenvalue| there)", Change(lr_factor=target / lr),
                      escape=True)
    if name == "lower-rate":
        factor, _ = lower_factor(evidence)
        return Remedy("lower-rate", f"the rate x {factor:.3g} ({lr * factor:.3g})", Change(lr_factor=factor))
    if name == "raise-rate":
        largest = (evidence.get("rate") or {}).get("largest_stable_lr")
        if not largest or not math.isfinite(largest) or RAISE_TO * largest <= 2 * lr:
            return None  # not measured, or not far enough above the rate to be worth a trial
        factor = RAISE_TO * largest / lr
        return Remedy("raise-rate", f"the rate x {factor:.3g} ({lr * factor:.3g}, half the largest stable rate "
                      f"{largest:.3g})", Change(lr_factor=factor))
    if name == "decay":
        tau = max(1, trial_steps // 4)
        return Remedy("decay", f"the rate decays as lr / (1 + t/{tau})", Change(schedule=str(InverseTime(tau))))
    if name == "warm-up":
        length = max(1, trial_steps // 2)
        return Remedy("warm-up", f"the rate warms up from 0 over {length} steps, then decays as 1/sqrt(t)",
                      Change(schedule=str(WarmupInverseSqrt(warmup=length))))
    if name == "larger-batch":
        if batch_size is None or n_data is None or batch_size >= n_data:
            return None
        critical = (evidence.get("noise") or {}).get("critical_batch")
        size = max(BATCH_FACTOR * batch_size, math.ceil(critical) if critical and math.isfinite(critical) else 0)
        size = min(size, n_data)
        return Remedy("larger-batch", f"batches of {size}" + (" (all the data)" if size == n_data else ""),
                      Change(batch_size=size))
    if name == "momentum":
        return Remedy("momentum", f"heavy-ball momentum {MOMENTUM:g}, same rate",
                      Change(momentum=MOMENTUM)) if plain_sgd else None
    if name == "lower-decay":
        return Remedy("lower-decay", f"the weight decay x {DECAY_FACTOR:g} ({decay * DECAY_FACTOR:.3g})",
                      Change(decay_factor=DECAY_FACTOR)) if decay > 0 else None
    if name == "no-decay":
        return Remedy("no-decay", "the weight decay dropped (0)", Change(decay_factor=0.0)) if decay > 0 else None
    if name == "no-decay-reinit":  # the weights the decay shrank toward 0 are a poor start: a fresh one
        modules = tuple((evidence.get("decay") or {}).get("modules") or ())
        return Remedy("no-decay-reinit", f"the weight decay dropped (0) and the {len(modules)} modules it shrank "
                      "re-initialised (each module's own initialisation), fresh optimizer state",
                      Change(decay_factor=0.0, reinit=modules, init="module", fresh_state=True)) \
            if decay > 0 and modules else None
    if name == "lower-momentum":
        return Remedy("lower-momentum", f"the momentum {MOMENTUM:g}, same rate, a fresh velocity",
                      Change(momentum=MOMENTUM, fresh_state=True)) if ringing(evidence) or runaway_momentum(evidence) \
            else None
    if name == "adam":
        # a new optimizer at Adam's defaults: the run's weight decay is not carried over, said where it had one
        without = f", without the run's weight decay {decay:g}" if decay > 0 else ""
        return None if adaptive else Remedy("adam", f"Adam at lr 1e-3{without}", Change(optimizer="adam", lr=1e-3))
    if name == "noise":
        return Remedy("noise", "annealed Gaussian gradient noise (eta 0.3, gamma 0.55)", Change(noise=True))
    if name == "peak-rate":
        if not peak_lr or peak_lr <= lr:
            return None
        return Remedy("peak-rate", f"the rate back at its peak {peak_lr:.3g}", Change(lr=peak_lr))
    raise ValueError(f"unknown remedy {name!r}")
