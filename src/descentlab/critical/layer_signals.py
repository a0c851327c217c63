"""Signals per layer that need no Hessian: where the gradient fades or grows through the depth,
which units are dead or saturated, how the inputs are scaled, what bounds the outputs.

All four come from one forward pass over the monitor's fixed sample (through the data layer,
in eval mode; batch-norm on the batch's statistics in a model that trains it) with hooks on
the model's own modules, and from the gradient the diagnosis has already measured:

* **the depth profile** — for each *weight layer* (a module with a weight of two or more
  dimensions: linear, convolution, recurrent, attention projections; embeddings left out, their
  gradient is sparse by nature), in the order the forward pass calls them, the relative
  gradient ``‖∂L/∂W‖ / ‖W‖`` and, between two checks, the relative update ``‖ΔW‖ / ‖W‖`` per
  step. A vanishing gradient falls by orders of magnitude from the output to the input; an
  exploding one grows. Through a chain of sigmoid layers whose pre-activations sit at 0 with
  weights ``c·I``, each layer toward the input multiplies it by ``c/4`` (``σ'(0) = 1/4``);
* **units** — for every activation module (each call of a module used several times counts
  apart), per *unit* (one output position of one sample, all non-batch dimensions together):
  ReLU-family units that are zero on every sample are *dead* (no gradient flows through them);
  so are the units of a smooth activation whose negative tail flattens (ELU, CELU, SELU, GELU,
  SiLU, Mish, Hardswish) where its slope, read at the unit's input, is below :data:`FLAT_SLOPE`
  on every sample (a GELU unit held at -5 passes 1e-5 of the gradient: dead in all but name);
  sigmoid-family units whose slope is below :data:`FLAT_SLOPE` of its maximum on at least
  :data:`MOST_SAMPLES` of the samples are *saturated*; leaky units (LeakyReLU, PReLU, RReLU)
  that are negative on every sample are *inactive* (reported, not dead: their slope never falls
  below theirs). Activations written as functions (``torch.relu(x)``) cannot be seen by a
  hook: then a unit that passes nothing is read where its output enters the next weight layer
  (an input exactly zero on every sample), saturation is not measured, the evidence says so,
  and the depth profile still works;
* **inputs** — per input feature, its spread and mean over the sample, and the condition number
  of the second-moment matrix of ``[x, 1]`` (the factor the inputs contribute to the first
  linear layer's Hessian, ``E[(x,1)(x,1)ᵀ] ⊗ ...``) raw and with the features standardized;
  features at one value on all but 1 % of the samples (rare ink at the edge of an image) left
  out, their spread being how rarely they move;
* **outputs** — a bounded function built into the model's outputs (a sigmoid, tanh or softmax
  as its last operation) and the floor it puts under the loss
  (:func:`~descentlab.critical.output_floor.output_bound`);
* **targets** — for floating-point targets shaped like the outputs (a regression), their
  root-mean-square against the outputs' (:class:`TargetScales`): targets in raw units (prices in
  dollars) ask the last layer for weights and a bias 1e5 times their initial scale; the share of
  them at which the loss has no lowest value (binary cross-entropy's targets outside [0, 1]); and,
  under squared error, the few far from the rest and their share of the squared error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from descentlab.critical.output_floor import (OutputBound, last_bounded, output_bound, recognise_loss,
                                              targets_without_floor)
from descentlab.critical.mixing import Mixing, per_sample_forward, sample_mixing
from descentlab.critical.pairing import Pairing, target_pairing
from descentlab.curvature import EmpiricalLoss
from descentlab.curvature.empirical import trains_batch_norm
from descentlab.engine.model_changes import NORM_LAYERS
from descentlab.ranks import largest_each

__all__ = ["copied_share", "copied_units", "UnitStats", "LayerGradient", "InputScales", "TargetScales",
           "LayerSignals", "measure_layers", "input_scales", "target_scales", "first_floating", "FAMILIES",
           "FLAT_SLOPE", "MOST_SAMPLES", "OUTLYING"]

#: A regression target this many robust spreads from the median is far out: a normal sample never
#: has one (the chance is 1e-197); a log-normal one of spread 1 (prices, incomes) has ~5 in 10,000,
#: holding ~10 % of the squared deviations, of spread 1.5 ~1 %, holding ~75 % (seeded draws of 10,000).
OUTLYING = 30.0

#: A saturating unit is in its flat tail where its slope is below this fraction of the largest.
FLAT_SLOPE = 0.02
#: ... on at least this share of the samples.
MOST_SAMPLES = 0.9
#: A feature at one value on all but this share of the samples is rare: left out of the input scales.
RARE_SHARE = 0.01
#: Input features measured at most (a seeded subset of wider inputs, such as images).
MAX_FEATURES = 2048

#: Activation modules by family: ``relu`` (dead at 0), ``smooth`` (dead where its slope is under
#: :data:`FLAT_SLOPE`: a negative tail that flattens), ``leaky`` (never dead), and the saturating
#: ``sigmoid``, ``tanh``, ``hardtanh``, ``hardsigmoid``, ``softsign``. Looked up along the
#: class's MRO, most derived first (``ReLU6`` is a ``Hardtanh``).
FAMILIES: Mapping[type, str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu",
    nn.LeakyReLU: "leaky", nn.PReLU: "leaky", nn.RReLU: "leaky",
    nn.ELU: "smooth", nn.CELU: "smooth", nn.SELU: "smooth", nn.GELU: "smooth", nn.SiLU: "smooth", nn.Mish: "smooth",
    nn.Hardswish: "smooth",
    nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Hardtanh: "hardtanh", nn.Hardsigmoid: "hardsigmoid",
    nn.Softsign: "softsign",
}


@dataclass(frozen=True)
class UnitStats:
    """One activation call site on the sample.

    Attributes:
        name: the module's name (``"#k"`` added for the k-th call of a module used several times).
        family: its :data:`FAMILIES` entry.
        units: units per sample.
        dead: share of units zero on every sample (``relu`` family), or whose slope is below
            :data:`FLAT_SLOPE` on every sample (``smooth`` family); else ``None``.
        saturated: share of units in their flat tail on most samples (saturating families, else ``None``).
        inactive: share of units negative on every sample (``leaky`` family, else ``None``).
        variation: (``relu`` family) the median over the units that are not zero on every sample
            of their spread over the samples against their root-mean-square: ~0.3-1 where the
            units tell the samples apart, ~1e-8 where a signal that faded through the layers below
            leaves each unit its bias alone, on or off alike for every sample (``None``: no unit
            alive, or another family).
        after: the weight layer the forward pass called last before this activation (the layer
            whose outputs these units are, in a plain stack), or ``None``.
        norms: the normalization layers called between ``after`` and this activation (a
            batch-norm's shift can hold every unit below zero as surely as a bias).
        module: the site is an activation module (one a remedy can swap); ``False`` for units
            read at a weight layer's inputs (an activation written as a function).
    """

    name: str
    family: str
    units: int
    dead: float | None = None
    saturated: float | None = None
    inactive: float | None = None
    after: str | None = None
    module: bool = True
    norms: tuple[str, ...] = ()
    variation: float | None = None


@dataclass(frozen=True)
class LayerGradient:
    """One weight layer's gradient and update, relative to its weights.

    Attributes:
        name: the module's name; kind: its class name.
        grad_norm, weight_norm: of its weights (every tensor of two or more dimensions it owns).
        relative: ``grad_norm / weight_norm`` (``nan`` for zero weights).
        update: ``‖ΔW‖ / ‖W‖`` per step since the previous check (``None`` when not known).
        copies: the share of its output units (the rows of its first weight, with their bias) equal
            to another unit's to 1e-6 of the largest weight (:func:`copied_share`): units that start
            equal get equal gradients and stay copies, so the layer acts as one unit.
        size: the number of entries in those weights.
    """

    name: str
    kind: str
    grad_norm: float
    weight_norm: float
    relative: float
    update: float | None = None
    copies: float = 0.0
    size: int = 0


@dataclass(frozen=True)
class InputScales:
    """The input features over the sample (see the module docstring).

    Attributes:
        features: features measured (constant ones left out of the spreads); 0 where none varies
            (then the spreads are 0 and the condition numbers ``nan``: nothing to measure).
        std_min, std_median, std_max: their spreads.
        mean_max: the largest ``|mean|`` of a feature over its spread.
        cond_raw, cond_standardized: condition numbers of the second moment of ``[x, 1]``.
        rare: features left out of all of these: at one value on all but :data:`RARE_SHARE` of
            the samples (their spread says how rarely they move, not their units).
        constant: of those, the features at one value on every sample.
    """

    features: int
    std_min: float
    std_median: float
    std_max: float
    mean_max: float
    cond_raw: float
    cond_standardized: float
    rare: int = 0
    constant: int = 0

    @property
    def span(self) -> float:
        """How many times the widest feature's spread is the narrowest's (``nan`` where none varies)."""
        if not self.features:
            return math.nan
        return self.std_max / self.std_min if self.std_min > 0 else math.inf


@dataclass(frozen=True)
class TargetScales:
    """Floating-point targets shaped like the model's outputs, over the sample.

    Attributes:
        rms: the targets' root-mean-square, ``sqrt(mean(y²))``.
        mean, std: their mean and spread (over every entry).
        outputs_rms: the model's outputs' root-mean-square at the point.
        without_floor: the share of the target entries at which the loss has no lowest value
            (binary cross-entropy with logits, targets outside [0, 1]:
            :func:`~descentlab.critical.output_floor.targets_without_floor`).
        outlying, outlying_error: under squared error, the share of the target entries
            :data:`OUTLYING` or more robust spreads (1.4826 x the median absolute deviation) from
            their median, and their share of the squared deviations from it: a few targets that
            hold the loss (a sentinel such as -999 for a missing value, a unit error in some rows).
    """

    rms: float
    mean: float
    std: float
    outputs_rms: float
    without_floor: float = 0.0
    outlying: float = 0.0
    outlying_error: float = 0.0

    @property
    def ratio(self) -> float:
        """How many times the targets' size is the outputs' (infinite for outputs of 0)."""
        return self.rms / self.outputs_rms if self.outputs_rms > 0 else math.inf


@dataclass(frozen=True)
class LayerSignals:
    """Everything :func:`measure_layers` found (see the module docstring).

    Attributes:
        layers: the weight layers, input first.
        units: the activation call sites, in call order.
        inputs: the input scales (``None`` for inputs that are not floating point).
        recurrent: a weight layer was applied more than once in one forward pass, or the model has
            a recurrent module (a gradient can then explode or vanish through time, which the depth
            profile does not show).
        notes: what could not be seen, in words.
        batch_statistics: measured with batch-norm on the batch's statistics (a model that trains
            batch-norm), as training computes them.
        gradient_norm: ``‖∇L‖`` over every variable (biases too) of the gradient the layers were
            read from: exactly 0 where no gradient step can move the loss at all.
        outputs: what bounds the model's outputs and the floor it puts under the loss (``None``:
            nothing built in bounds them, or a loss the model computes itself).
        targets: the regression targets' size against the outputs' (``None``: targets that are
            not floating point or not shaped like the outputs).
        pairing: whether the loss compares each output with its own target
            (:func:`~descentlab.critical.pairing.target_pairing`; ``None``: not read).
        mixing: whether the model gives each sample an output of its own whatever its batch
            (:func:`~descentlab.critical.mixing.sample_mixing`, in eval mode; ``None``: not read).
    """

    layers: tuple[LayerGradient, ...]
    units: tuple[UnitStats, ...]
    inputs: InputScales | None
    recurrent: bool = False
    notes: tuple[str, ...] = ()
    batch_statistics: bool = False
    gradient_norm: float | None = None
    outputs: OutputBound | None = None
    targets: TargetScales | None = None
    pairing: Pairing | None = None
    mixing: Mixing | None = None

    @property
    def depth_drop(self) -> float | None:
        """``log10`` of the output-most weight layer's relative gradient over the input-most one's:
        3 means the gradient fades 1,000-fold toward the input, -3 that it grows 1,000-fold
        (``None`` with fewer than two weight layers or a zero gradient)."""
        rel = [layer.relative for layer in self.layers]
        if len(rel) < 2 or not all(math.isfinite(r) and r > 0 for r in (rel[0], rel[-1])):
            return None
        return math.log10(rel[-1] / rel[0])

    @property
    def depth_trend(self) -> float | None:
        """The same change as :attr:`depth_drop` read off the least-squares line through every weight
        layer's ``log10`` relative gradient against its position: a fade (or growth) through the
        whole depth has a trend close to its drop, one layer out of line has not (``None`` with
        fewer than three weight layers of non-zero gradient)."""
        rel = [layer.relative for layer in self.layers]
        if len(rel) < 3 or not all(math.isfinite(r) and r > 0 for r in rel):
            return None
        x = torch.arange(len(rel), dtype=torch.float64)
        y = torch.tensor([math.log10(r) for r in rel], dtype=torch.float64)
        slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
        return slope * (len(rel) - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the evidence."""
        return {"layers": [asdict(layer) for layer in self.layers], "units": [asdict(u) for u in self.units],
                "inputs": None if self.inputs is None else {**asdict(self.inputs), "span": self.inputs.span},
                "depth_drop": self.depth_drop, "depth_trend": self.depth_trend, "recurrent": self.recurrent,
                "notes": list(self.notes), "batch_statistics": self.batch_statistics,
                "gradient_norm": self.gradient_norm,
                "outputs": None if self.outputs is None else {**asdict(self.outputs),  # JSON has no infinity
                                                              "high": self.outputs.high
                                                              if math.isfinite(self.outputs.high) else None},
                "targets": None if self.targets is None else {**asdict(self.targets), "ratio": self.targets.ratio},
                "pairing": None if self.pairing is None else {"leak": self.pairing.leak,
                                                              "outputs": list(self.pairing.outputs),
                                                              "targets": list(self.pairing.targets)},
                "mixing": None if self.mixing is None else {**asdict(self.mixing),
                                                            "batch_first_off": list(self.mixing.batch_first_off)}}


def measure_layers(loss: EmpiricalLoss, gradient: torch.Tensor | None = None, *,
                   previous: Sequence[torch.Tensor] | None = None,
                   steps_since: int | None = None) -> LayerSignals:
    """The signals of the module docstring at ``loss``'s point.

    Args:
        loss: the data layer over the sample (its model, data, snapshot and modes).
        gradient: the flat gradient of the loss at that point (over ``loss.names``), e.g. of all
            the data; ``None``: taken here, on the function measured.
        previous: the variables' values ``steps_since`` steps earlier (in ``loss.names`` order),
            for the relative updates.

    A model that trains batch-norm is measured on the function training computes, batch-norm by
    the batch's statistics (:meth:`~descentlab.curvature.EmpiricalLoss.with_batch_statistics`;
    a ``gradient`` given, of the eval-mode function, is taken again there; ``loss`` already on the
    batches' statistics keeps it): in eval mode, running statistics that are not the batches' can
    show units dead that training never sees dead (stale running means of +100 make every unit
    of a layer look dead where the batches' statistics leave 3 of 8 alive:
    ``tests/test_layer_signals.py``).
    """
    batch_statistics = trains_batch_norm(loss.model)
    if batch_statistics and not loss.batch_statistics:  # a gradient of the training function itself is kept
        loss, gradient = loss.with_batch_statistics(), None
    if gradient is None:
        _, gradient = loss.loss_and_gradient()
    model = loss.model
    order: list[str] = []
    sites: dict[str, _Site] = {}
    calls: dict[int, int] = {}
    names = {module: name for name, module in model.named_modules()}
    last: list[str | None] = [None]
    between: list[str] = []  # the normalization layers called since the last weight layer

    entering: dict[str, _Site] = {}  # what enters each weight layer after the first: its inputs as units

    applied: dict[str, int] = {}

    def note_order(module: nn.Module, inputs: Any, output: Any) -> None:
        name = names.get(module, "")
        applied[name] = applied.get(name, 0) + 1
        if order and name not in entering and inputs and torch.is_tensor(inputs[0]) and inputs[0].is_floating_point():
            entering[name] = _Site(f"{name} (its inputs)", "relu", module, last[0], swappable=False)
        if name in entering and inputs and torch.is_tensor(inputs[0]):
            entering[name].add(inputs[0])
        last[0] = name
        between.clear()
        if name not in order:
            order.append(name)

    def note_norm(module: nn.Module, inputs: Any, output: Any) -> None:
        between.append(names.get(module, ""))

    def note_units(module: nn.Module, inputs: Any, output: Any) -> None:
        count = calls.get(id(module), 0)
        calls[id(module)] = count + 1
        key = names.get(module, "") + (f"#{count}" if count else "")
        if torch.is_tensor(output) and output.ndim >= 1 and output.is_floating_point():
            site = sites.setdefault(key, _Site(key, _family(module), module, last[0], norms=tuple(between)))
            site.add(output, inputs[0] if inputs and torch.is_tensor(inputs[0]) else None)

    handles = []
    for module in model.modules():
        if _weights(module):
            handles.append(module.register_forward_hook(note_order))
        if _family(module) is not None:
            handles.append(module.register_forward_hook(note_units))
        if isinstance(module, NORM_LAYERS) and any(True for _ in module.parameters(recurse=False)):
            handles.append(module.register_forward_hook(note_norm))
    X, y = loss.one_batch()
    try:
        with last_bounded(model) as bounded:
            out = loss.forward(X)
    finally:
        for handle in handles:
            handle.remove()

    layers = _layer_gradients(loss, gradient, order, previous, steps_since)
    units = tuple(site.stats() for site in sites.values() if site.count)
    notes = []
    if not units:
        # no activation module to hook (activations written as functions): a unit that passes nothing
        # still shows where its output enters the next weight layer, exactly zero on every sample
        units = tuple(site.stats() for site in entering.values() if site.count)
        notes.append("no activation module was called (activations written as functions cannot be seen): "
                     "dead units read from the inputs of the weight layers after the first; saturated units "
                     "not measured")
    if len(layers) < 3:
        notes.append(f"{len(layers)} weight layer(s): a depth profile needs at least 3")
    recurrent = any(n > 1 for n in applied.values()) or any(isinstance(m, (nn.RNNBase, nn.RNNCellBase))
                                                          for m in model.modules())
    outputs = None if loss.model_loss else output_bound(out, y, loss.loss_fn, bounded[0])
    targets = None if loss.model_loss else target_scales(out, y, loss.loss_fn)
    pairing = None if loss.model_loss else target_pairing(loss.loss_fn, out, y)
    mixing = None if loss.model_loss else sample_mixing(per_sample_forward(loss), X)
    if mixing is not None:
        off = tuple(name for name, m in model.named_modules() if getattr(m, "batch_first", None) is False)
        mixing = replace(mixing, batch_first_off=off)
    return LayerSignals(tuple(layers), units, input_scales(X), recurrent, tuple(notes), batch_statistics,
                        float(gradient.norm()), outputs, targets, pairing, mixing)


def target_scales(outputs: Any, y: Any,
                  loss_fn: Callable[[Any, Any], torch.Tensor] | None = None) -> TargetScales | None:
    """:class:`TargetScales` of targets ``y`` against the model's ``outputs`` on the same samples
    (over every rank's share), ``None`` unless both are floating-point tensors of one shape; with
    ``loss_fn``, the share of targets where it has no lowest value."""
    if not (torch.is_tensor(outputs) and torch.is_tensor(y) and y.is_floating_point()
            and outputs.is_floating_point() and outputs.shape == y.shape and y.numel() > 1):
        return None
    outside = targets_without_floor(loss_fn, outputs, y) if loss_fn is not None else 0
    squared = loss_fn is not None and (recognise_loss(loss_fn, outputs.detach(), y) or ("",))[0] == "mse"
    y, out = y.detach().double(), outputs.detach().double()
    far, far_error, error = _outlying(y) if squared else (0.0, 0.0, 0.0)
    sums = EmpiricalLoss.allreduce(torch.stack([y.new_tensor(float(y.numel())), y.sum(), (y * y).sum(),
                                                (out * out).sum(), y.new_tensor(float(outside)), y.new_tensor(far),
                                                y.new_tensor(far_error), y.new_tensor(error)]))
    n, total, squares, out_squares, outside, far, far_error, error = sums.tolist()
    mean = total / n
    return TargetScales(rms=math.sqrt(squares / n), mean=mean, std=math.sqrt(max(squares / n - mean * mean, 0.0)),
                        outputs_rms=math.sqrt(out_squares / n), without_floor=outside / n, outlying=far / n,
                        outlying_error=far_error / error if error > 0 else 0.0)


def _outlying(y: torch.Tensor) -> tuple[float, float, float]:
    """``(count, their squared deviation, everyone's)``: the entries of ``y`` :data:`OUTLYING` or
    more robust spreads from the median (this rank's: under ``torch.distributed`` each rank's
    median stands in for the whole data's, which a cut this far out does not feel); nothing where
    half the entries or more are at the median (no spread to measure by)."""
    deviation = (y.flatten() - y.flatten().median()).abs()
    spread = 1.4826 * float(deviation.median())  # the median absolute deviation, a normal's sigma
    if not spread > 0:
        return 0.0, 0.0, 0.0
    far = deviation >= OUTLYING * spread
    squares = deviation * deviation
    return float(far.sum()), float(squares[far].sum()), float(squares.sum())


def input_scales(X: Any, *, seed: int = 0) -> InputScales | None:
    """:class:`InputScales` of inputs ``X`` (the first floating-point tensor of a tuple or dict),
    ``None`` for inputs that are not floating point (token ids) or have fewer than two samples.

    Computed from the second moment of ``[x, 1]`` alone (its last column holds the sums), so under
    ``torch.distributed`` the ranks' moments are summed and every rank gets the whole job's."""
    X = first_floating(X)
    if X is None or X.ndim < 2:
        return None
    F = X.detach().reshape(len(X), -1).double()
    if F.shape[1] > MAX_FEATURES:
        keep = torch.randperm(F.shape[1], generator=torch.Generator().manual_seed(seed))[:MAX_FEATURES]
        F = F[:, keep.to(F.device)]
    raw = torch.cat([F, torch.ones(len(F), 1, dtype=F.dtype, device=F.device)], dim=1)
    moment = EmpiricalLoss.allreduce(raw.T @ raw)  # Σ [x, 1][x, 1]ᵀ over every rank's sample
    n = float(moment[-1, -1])
    if n < 2:
        return None
    mean = moment[:-1, -1] / n
    covariance = moment[:-1, :-1] / n - torch.outer(mean, mean)  # the population covariance
    std = (covariance.diagonal().clamp_min(0) * n / (n - 1)).sqrt()  # the sample spread (n - 1)
    rare = _rare(F, n)
    varying = (std > 0) & ~rare
    constant = int((std == 0).sum())
    if not bool(varying.any()):  # inputs that tell no sample from another: a finding, not nothing
        return InputScales(0, 0.0, 0.0, 0.0, 0.0, math.nan, math.nan, int(rare.sum()), constant)
    index = varying.nonzero().flatten()
    mean, std = mean[index], std[index]
    covariance = covariance[index][:, index]
    rows = torch.cat([index, torch.tensor([len(varying)], device=index.device)])  # the varying features and the 1
    standardized = covariance / torch.outer(std, std)  # E[z zᵀ] of z = (x - mean) / std; E[z] = 0, E[1] = 1
    one = torch.ones(1, 1, dtype=std.dtype, device=std.device)
    return InputScales(int(len(index)), float(std.min()), float(std.median()), float(std.max()),
                       float((mean.abs() / std).max()), _eig_condition(moment[rows][:, rows] / n),
                       _eig_condition(torch.block_diag(standardized, one)), int(rare.sum()), constant)


def _rare(F: torch.Tensor, n: float) -> torch.Tensor:
    """The features at one value (their least or their largest over every rank) on all but
    :data:`RARE_SHARE` of the ``n`` samples: a pixel at the edge of a digit that is ink in 1 of
    500 images has a spread of 0.003 on [0, 1] because it is rarely on, not because it is
    measured in other units (standardizing it would blow that one image's value up 300x)."""
    d = F.shape[1]
    bounds = largest_each(torch.cat([-F.min(dim=0).values, F.max(dim=0).values]))
    low, high = -bounds[:d], bounds[d:]
    at = EmpiricalLoss.allreduce(torch.stack([(F == low).sum(dim=0), (F == high).sum(dim=0)]).to(F.dtype))
    return at.max(dim=0).values >= (1 - RARE_SHARE) * n


def first_floating(X: Any) -> torch.Tensor | None:
    """The first floating-point tensor of inputs ``X`` (a tensor, a tuple or list, a dict), ``None``
    where there is none (token ids)."""
    if torch.is_tensor(X):
        return X if X.is_floating_point() else None
    values = X.values() if isinstance(X, dict) else X if isinstance(X, (tuple, list)) else ()
    return next((t for t in (first_floating(v) for v in values) if t is not None), None)


# ---------------------------------------------------------------------- helpers
class _Site:
    """Per-unit counts of one activation call site over the batches of the sample."""

    def __init__(self, name: str, family: str, module: nn.Module, after: str | None, swappable: bool = True,
                 norms: tuple[str, ...] = ()) -> None:
        self.name, self.family, self.module, self.after, self.swappable = name, family, module, after, swappable
        self.norms = norms
        self.count = 0
        self.flags: torch.Tensor | None = None  # relu: ever non-zero; smooth: ever steep; leaky: ever positive
        self.flat: torch.Tensor | None = None  # saturating: samples in the flat tail
        self.moments: torch.Tensor | None = None  # relu: each unit's sum and sum of squares over the samples

    def add(self, out: torch.Tensor, inputs: torch.Tensor | None = None) -> None:
        """Count one call's units: its output ``out`` and, for a smooth activation, its ``inputs``
        (where its slope is read; a call without them, or in place, where the output has
        overwritten them, is not counted)."""
        out = out.detach()
        if self.family == "smooth":
            if inputs is None or inputs.shape != out.shape or inputs.data_ptr() == out.data_ptr():
                return
            out = _slope(self.module, inputs.detach())
        if self.flags is not None and self.flags.shape != out.shape[1:] or \
                self.flat is not None and self.flat.shape != out.shape[1:]:
            return  # another shape on this call (a sequence of another length): not one set of units
        if self.family in ("relu", "smooth"):  # smooth: ``out`` is the slope
            alive = (out.abs() > FLAT_SLOPE if self.family == "smooth" else out != 0).any(dim=0)
            self.flags = alive if self.flags is None else self.flags | alive
            if self.family == "relu":
                values = out.double()
                moments = torch.stack([values.sum(dim=0), (values * values).sum(dim=0)])
                self.moments = moments if self.moments is None else self.moments + moments
        elif self.family == "leaky":
            positive = (out > 0).any(dim=0)
            self.flags = positive if self.flags is None else self.flags | positive
        else:
            flat = _flat_tail(self.family, out, self.module).sum(dim=0)
            self.flat = flat if self.flat is None else self.flat + flat
        self.count += len(out)

    def stats(self) -> UnitStats:
        """The shares over every rank's sample (the counts summed under ``torch.distributed``)."""
        if self.family in ("relu", "smooth", "leaky"):
            ever = EmpiricalLoss.allreduce(self.flags.double()) > 0  # non-zero (steep, positive) on some rank's sample
            share = float((~ever).double().mean())
            if self.family != "leaky":
                return UnitStats(self.name, self.family, self.flags.numel(), dead=share, after=self.after,
                                 module=self.swappable, norms=self.norms, variation=self._variation())
            return UnitStats(self.name, self.family, self.flags.numel(), inactive=share, after=self.after,
                             module=self.swappable, norms=self.norms)
        counts = EmpiricalLoss.allreduce(torch.cat([self.flat.double().reshape(-1),
                                                    torch.tensor([float(self.count)], dtype=torch.float64,
                                                                 device=self.flat.device)]))
        share = counts[:-1] / counts[-1]
        return UnitStats(self.name, self.family, self.flat.numel(),
                         saturated=float((share >= MOST_SAMPLES).double().mean()), after=self.after,
                         module=self.swappable, norms=self.norms)


    def _variation(self) -> float | None:
        """:attr:`UnitStats.variation` over every rank's sample (``None`` for no moments or no unit alive)."""
        if self.moments is None:
            return None
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.moments.device)
        sums = EmpiricalLoss.allreduce(torch.cat([self.moments.reshape(-1), count]))
        n = float(sums[-1])
        total, squares = sums[:-1].reshape(2, -1) / n
        alive = squares > 0
        if n < 2 or not bool(alive.any()):
            return None
        spread = (squares[alive] - total[alive] ** 2).clamp_min(0).sqrt()
        return float((spread / squares[alive].sqrt()).median())


def _slope(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The elementwise activation ``module``'s slope at each entry of ``x`` (the gradient of the
    sum of its outputs: each output depends on its own input alone; its ``forward`` called, not
    the module, whose hooks are the caller's)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(module.forward(x).sum(), x)[0]


def _flat_tail(family: str, y: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Where the activation's slope is below :data:`FLAT_SLOPE` of its largest, from its output."""
    if family == "sigmoid":  # σ' = y (1 - y), at most 1/4
        return y * (1 - y) <= FLAT_SLOPE * 0.25
    if family == "tanh":  # tanh' = 1 - y², at most 1
        return 1 - y * y <= FLAT_SLOPE
    if family == "softsign":  # softsign' = (1 - |y|)², at most 1
        return (1 - y.abs()) ** 2 <= FLAT_SLOPE
    if family == "hardtanh":  # slope 0 at the clips
        return (y <= module.min_val) | (y >= module.max_val)
    return (y <= 0) | (y >= 1)  # hardsigmoid


def _family(module: nn.Module) -> str | None:
    for cls in type(module).__mro__:
        if cls in FAMILIES:
            return FAMILIES[cls]
    return None


def _weights(module: nn.Module) -> list[torch.Tensor]:
    """The weights of a weight layer: its own parameters of two or more dimensions (none for an embedding)."""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return []
    return [p for p in module.parameters(recurse=False) if p.ndim >= 2]


def _layer_gradients(loss: EmpiricalLoss, gradient: torch.Tensor, order: list[str],
                     previous: Sequence[torch.Tensor] | None, steps_since: int | None) -> list[LayerGradient]:
    parts = dict(zip(loss.names, loss.split(gradient)))
    values = dict(zip(loss.names, loss.split(loss.point)))
    before = dict(zip(loss.names, previous)) if previous is not None else {}
    modules = dict(loss.model.named_modules())
    out = []
    for name in order:
        prefix = f"{name}." if name else ""
        own = [f"{prefix}{n}" for n, p in modules[name].named_parameters(recurse=False) if p.ndim >= 2]
        own = [n for n in own if n in parts]
        if not own:
            continue
        grad = _norm([parts[n] for n in own])
        weight = _norm([values[n] for n in own])
        update = None
        if before and steps_since and all(n in before for n in own) and weight > 0:
            update = _norm([values[n] - before[n].to(values[n]) for n in own]) / weight / steps_since
        bias = getattr(modules[name], "bias", None)
        out.append(LayerGradient(name, type(modules[name]).__name__, grad, weight,
                                 grad / weight if weight > 0 else math.nan, update,
                                 copied_share(values[own[0]], bias if isinstance(bias, torch.Tensor) else None),
                                 sum(values[n].numel() for n in own)))
    return out


def copied_share(weight: torch.Tensor, bias: torch.Tensor | None = None) -> float:
    """The share of a layer's output units (``weight``'s rows over its first dimension, each with its
    ``bias`` entry) that equal another unit's, each entry to 1e-6 of the largest ``|weight|``
    (an all-zero layer: every unit a copy). Rows that agree that closely were set equal: drawn at
    random they differ by the draw's own spread."""
    rows = weight.detach().reshape(weight.shape[0], -1).double()
    if bias is not None and bias.ndim == 1 and bias.shape[0] == rows.shape[0]:
        rows = torch.cat([rows, bias.detach().double()[:, None]], dim=1)
    if rows.shape[0] < 2:
        return 0.0
    scale = float(rows.abs().max())
    if scale == 0.0:
        return 1.0
    _, counts = torch.unique(torch.round(rows / (scale * 1e-6)), dim=0, return_counts=True)
    return float(counts[counts > 1].sum()) / rows.shape[0]


def copied_units(model: nn.Module) -> float:
    """The largest :func:`copied_share` over ``model``'s trainable weight layers (0.0 without one):
    read from the weights alone, no sample or gradient."""
    most = 0.0
    for module in model.modules():
        weights = [p for p in _weights(module) if p.requires_grad]
        if weights:
            bias = getattr(module, "bias", None)
            most = max(most, copied_share(weights[0], bias if isinstance(bias, torch.Tensor) else None))
    return most


def _norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def _eig_condition(S: torch.Tensor) -> float:
    """The condition number of a symmetric positive semi-definite ``S`` (its eigenvalues in
    float64; ``inf`` when singular)."""
    values = torch.linalg.eigvalsh(S)
    low, high = float(values[0]), float(values[-1])
    return high / low if low > high * 1e-15 else math.inf
