"""The lowest loss a model can reach when a bounded function makes its outputs.

A sigmoid, tanh or softmax as a model's last operation, in front of a loss that expects raw
scores (``F.cross_entropy``, ``F.binary_cross_entropy_with_logits``) or values of any size
(``F.mse_loss`` on targets outside the range), puts a floor under the loss that no step can go
through: a softmax fed to cross-entropy (the "double softmax") keeps every score in [0, 1], and
ten classes then cost at least log(1 + 9/e) = 1.46 nats, ln 10 = 2.30 being chance. Training
creeps toward that floor and stalls above it, where the rate, the noise and the curvature all
look like the lectures' causes (``noise_floor``, ``saddle``) though none of them is.

The floor, in closed form, for outputs held in the box [a, b] (``w = b - a``), per sample:

* **cross-entropy**, K classes: ``log(1 + (K - 1) e^{-w})``, the true class's score at b and the
  others at a (the loss falls as any score gap widens, and the box bounds every gap by w); with
  label smoothing, the gap that loss wants, where the box allows it (:func:`loss_floor`).
  Softmax outputs lie on the probability simplex inside [0, 1]^K and reach its floor,
  ``log(1 + (K - 1)/e)``, at a one-hot row;
* **binary cross-entropy with logits**: ``ℓ(clamp(logit(y), a, b), y)``: the loss is convex in
  the score with its free minimum at ``logit(y)`` (±∞ for hard labels);
* **squared error**: ``(clamp(y, a, b) - y)²``, the nearest value the box holds.

A function that is flat at its bound (a ReLU, whose outputs are [0, inf); a hardtanh or ReLU6 at
either end) passes no gradient to an output it holds there, so that output stays where it is
whatever the loss wants of it: the floor is then taken with every output held at the bound fixed
at its value and the others free in the box. A ReLU in front of cross-entropy (scores that cannot
go below 0) holds a sample whose true class's score is at 0 at ``log K`` at best, every other score
at 0 too: README's digits MLP trained so reads 0.989 at step 200, 89 % of its scores held at 0, a
floor of 0.913, and creeps on (0.695 at step 2,000, 30 % of the true scores still at 0) where the
same MLP without it reaches 0.046 by step 300. A sample's loss is held while its outputs stay at
the bound; other samples' gradients, through the weights they share, may move them, slowly (the
creep above), so the floor is that of the outputs as they are held now.

The loss is recognised by value, not by name: the user's ``loss_fn`` on the sample's outputs is
compared with each of the three (mean or sum; ``nn.CrossEntropyLoss``'s label smoothing read off
it and checked the same way), so a loss with class weights or its own reduction gets no floor
rather than a wrong one. Soft targets and label smoothing give a loss a lowest value of its own
above 0 (the targets' entropy); what the bound costs is measured above that. The bound is only claimed where it is
built in: a bounded activation module whose output is the model's (hooked in the forward pass),
or rows that are non-negative and sum to 1 (a softmax written as a function: no other output
does that); a ``torch.sigmoid`` written as a function is not seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["OutputBound", "bound_of", "last_bounded", "output_bound", "output_range", "loss_floor", "recognise_loss",
           "targets_without_floor", "LOSSES", "MATCH_TOL"]

#: The losses whose floor has a closed form (module docstring).
LOSSES = ("cross_entropy", "bce_with_logits", "mse")

#: The loosest relative tolerance a loss is recognised at (the three losses differ by far more on any outputs).
MATCH_TOL = 1e-2

#: The range each bounded module's outputs lie in, looked up along the class's MRO (``ReLU6`` is a
#: ``Hardtanh`` with its own limits).
_BOUNDS: Mapping[type, Callable[[nn.Module], tuple[float, float]]] = {
    nn.Sigmoid: lambda m: (0.0, 1.0), nn.Hardsigmoid: lambda m: (0.0, 1.0),
    nn.Tanh: lambda m: (-1.0, 1.0), nn.Softsign: lambda m: (-1.0, 1.0),
    nn.Hardtanh: lambda m: (float(m.min_val), float(m.max_val)),
    nn.Softmax: lambda m: (0.0, 1.0), nn.Softmin: lambda m: (0.0, 1.0),
    nn.ReLU: lambda m: (0.0, math.inf),
}

#: The bounded modules that are flat at their bounds: no gradient reaches an output held there.
_FLAT = (nn.ReLU, nn.Hardtanh, nn.Hardsigmoid)


@dataclass(frozen=True)
class OutputBound:
    """A bound built into the model's outputs, and the floor it puts under the loss.

    Attributes:
        by: what bounds them: the module's name, or ``"rows sum to 1"`` (a softmax written as a function).
        family: the bounding function (``"sigmoid"``, ``"softmax"``, ...).
        low, high: the range every output lies in.
        module: the bound is a module a remedy can take out (``False``: it is in the user's code).
        loss: the loss recognised (one of :data:`LOSSES`), or ``None`` (not one of them: no floor).
        value: the loss on the sample; floor: the lowest it can reach with outputs in [low, high];
        free: the lowest it reaches with outputs unbounded (0 but for soft targets or label smoothing);
        held: ``(floor - free) / (value - free)``, the share of what is left to learn that the bound
            forbids (1: the loss sits on its floor), ``None`` without a floor.
        at_bound: the share of the outputs a function flat at its bound holds there (no gradient
            reaches them; the floor takes them as they are), ``None`` for a function never flat.
    """

    by: str
    family: str
    low: float
    high: float
    module: bool
    loss: str | None = None
    value: float | None = None
    floor: float | None = None
    free: float | None = None
    held: float | None = None
    at_bound: float | None = None


def bound_of(module: nn.Module) -> tuple[float, float] | None:
    """The range ``module``'s outputs lie in, or ``None`` (not a bounded activation)."""
    for cls in type(module).__mro__:
        if cls in _BOUNDS:
            return _BOUNDS[cls](module)
    return None


@contextmanager
def last_bounded(model: nn.Module) -> Iterator[list[tuple[str, nn.Module, torch.Tensor] | None]]:
    """While the block runs, forward hooks on ``model``'s bounded modules: the list's one item is
    the last one called, ``(name, module, output)`` (``None``: none), what :func:`output_bound`
    takes as ``last``."""
    names = {module: name for name, module in model.named_modules()}
    last: list[tuple[str, nn.Module, torch.Tensor] | None] = [None]

    def note(module: nn.Module, inputs: Any, output: Any) -> None:
        if torch.is_tensor(output):
            last[0] = (names.get(module, ""), module, output)

    handles = [module.register_forward_hook(note) for module in model.modules() if bound_of(module) is not None]
    try:
        yield last
    finally:
        for handle in handles:
            handle.remove()


def output_bound(out: Any, y: Any, loss_fn: Callable[[Any, Any], torch.Tensor],
                 last: tuple[str, nn.Module, torch.Tensor] | None) -> OutputBound | None:
    """The bound on ``out`` (the model's output on the sample, targets ``y``) and the floor it puts
    under ``loss_fn``; ``last``: the last bounded module called in that forward pass, its name and
    output. ``None`` where nothing built in bounds the outputs."""
    if not (torch.is_tensor(out) and out.is_floating_point() and out.ndim >= 1 and out.numel()):
        return None
    fixed = None
    if last is not None and _same(last[2], out):
        name, module, _ = last
        low, high = bound_of(module)
        found = OutputBound(name, type(module).__name__.lower(), low, high, True)
        if isinstance(module, _FLAT):
            fixed = (out <= low) | (out >= high)
            found = replace(found, at_bound=float(fixed.double().mean()))
    elif _rows_on_simplex(out):
        found = OutputBound("rows sum to 1", "softmax", 0.0, 1.0, False)
    else:
        return None
    recognised = recognise_loss(loss_fn, out, y)
    if recognised is None:
        return found
    name, value, scale, smoothing = recognised
    if fixed is not None and smoothing > 0:
        fixed = None  # a smoothed cross-entropy's floor with scores held has no closed form here: the box's
    floor = scale * loss_floor(name, out, y, found.low, found.high, smoothing=smoothing, fixed=fixed)
    free = scale * loss_floor(name, out, y, -math.inf, math.inf, smoothing=smoothing)
    held = (floor - free) / (value - free) if value > free else None
    return replace(found, loss=name, value=value, floor=floor, free=free, held=held)


def output_range(outputs: Mapping[str, Any]) -> str:
    """The range of :class:`OutputBound`'s plain data ``outputs``, as ``[0, 1]`` or ``[0, inf)``."""
    high = outputs["high"]
    return f"[{outputs['low']:g}, " + ("inf)" if high is None or math.isinf(high) else f"{high:g}]")


def recognise_loss(loss_fn: Callable[[Any, Any], torch.Tensor], out: torch.Tensor,
                   y: Any) -> tuple[str, float, float, float] | None:
    """``(name, value, scale, smoothing)``: which of :data:`LOSSES` ``loss_fn(out, y)`` is, its
    value, the factor from the mean over samples to it (1 for a mean, the count for a sum), and
    the label smoothing of a cross-entropy (``nn.CrossEntropyLoss``'s ``label_smoothing``, checked
    by value like the rest); ``None`` where it is none of them to a thousand units of ``out``'s
    precision (at most :data:`MATCH_TOL`)."""
    if not torch.is_tensor(y):
        return None
    smoothing = float(getattr(loss_fn, "label_smoothing", 0.0) or 0.0)
    with torch.no_grad():
        value = float(loss_fn(out, y))
        if not math.isfinite(value):
            return None
        for name in LOSSES:
            mean = _reference(name, out, y, smoothing)
            scale = None if mean is None else _scale_of(value, mean, _count(name, out, y), out.dtype)
            if scale is not None:
                return name, value, scale, smoothing if name == "cross_entropy" else 0.0
    return None


def _scale_of(value: float, mean: float, count: int, dtype: torch.dtype) -> float | None:
    """1 where ``value`` is ``mean`` (a mean), ``count`` where it is ``count`` times it (a sum), to a
    thousand units of ``dtype``'s precision (at most :data:`MATCH_TOL`); ``None`` where it is neither."""
    tol = min(1e3 * torch.finfo(dtype).eps, MATCH_TOL)  # float32: 1.2e-4; half precision: capped
    return next((scale for scale in (1.0, float(count))
                 if math.isclose(value, scale * mean, rel_tol=tol, abs_tol=tol * 1e-3)), None)


def targets_without_floor(loss_fn: Callable[[Any, Any], torch.Tensor], out: Any, y: Any) -> int:
    """How many entries of ``y`` lie outside [0, 1] where ``loss_fn(out, y)`` is binary
    cross-entropy with logits (recognised by value, mean or sum, as :func:`recognise_loss` does);
    0 otherwise. At such a target t the loss, ``t·softplus(-x) + (1 - t)·softplus(x)`` in the score
    x, falls linearly without end (as x → -∞ for t < 0, as x → +∞ for t > 1): it has no lowest value,
    and descent grows the scores, and the weights, for as long as it runs (labels -1/+1 given to a
    loss that wants 0/1)."""
    if not (torch.is_tensor(out) and torch.is_tensor(y) and y.is_floating_point() and out.is_floating_point()
            and out.shape == y.shape and y.numel()):
        return 0
    outside = int(((y < 0) | (y > 1)).sum())
    if not outside:
        return 0
    with torch.no_grad():
        value = float(loss_fn(out, y))
        mean = float(F.binary_cross_entropy_with_logits(out, y))
    if not (math.isfinite(value) and math.isfinite(mean)):
        return 0
    return outside if _scale_of(value, mean, y.numel(), out.dtype) is not None else 0


def loss_floor(name: str, out: torch.Tensor, y: torch.Tensor, low: float, high: float, *,
               smoothing: float = 0.0, fixed: torch.Tensor | None = None) -> float:
    """The lowest mean of loss ``name`` (one of :data:`LOSSES`) over ``y`` that outputs shaped as
    ``out`` reach in the box [low, high] (the module docstring's closed forms; ``-inf, inf``: the
    loss's own lowest value, 0 but for soft targets). ``smoothing``: a cross-entropy's label
    smoothing ε, whose targets put q = 1 - ε + ε/K on the true class and ε/K on each other: the
    loss at a score gap t is ``(1 - q) t + log(1 + (K - 1) e^{-t})``, convex, least at
    ``t* = log(q K / ε)``, so the box's floor is at ``t = min(high - low, t*)``. ``fixed``: a mask
    shaped as ``out`` of the outputs held where they are (a function flat at its bound), the
    others free in the box (without smoothing)."""
    if fixed is not None and bool(fixed.any()):
        return _floor_with_fixed(name, out.detach().double(), y, low, high, fixed)
    if name == "cross_entropy":
        dim = _class_dim(out, y)
        if dim is None:
            raise ValueError(f"cross_entropy: targets shaped {tuple(y.shape)} fit no class dimension of outputs "
                             f"shaped {tuple(out.shape)}")
        classes, width = out.shape[dim], high - low
        if smoothing <= 0:
            return math.log1p((classes - 1) * math.exp(-width))
        true_share = 1 - smoothing + smoothing / classes
        gap = min(width, math.log(true_share * classes / smoothing))
        return (1 - true_share) * gap + math.log1p((classes - 1) * math.exp(-gap))
    if name in ("bce_with_logits", "mse"):  # per entry: none held, each at its target's best in the box
        return _floor_with_fixed(name, out.detach().double(), y, low, high, torch.zeros(y.shape, dtype=torch.bool))
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {name!r}")


def _floor_with_fixed(name: str, out: torch.Tensor, y: torch.Tensor, low: float, high: float,
                      fixed: torch.Tensor) -> float:
    """:func:`loss_floor` with the outputs ``fixed`` held at their values: each free output at its
    best in the box. Cross-entropy: the true class's score at ``high`` and every other at ``low``
    (a true score free below an infinite ``high`` takes its sample's loss to 0); binary
    cross-entropy and squared error: each free output at its target's best value in the box."""
    if name == "cross_entropy":
        dim = _class_dim(out, y)
        if dim is None:
            raise ValueError(f"cross_entropy: targets shaped {tuple(y.shape)} fit no class dimension of outputs "
                             f"shaped {tuple(out.shape)}")
        scores, held = out.movedim(dim, -1), fixed.movedim(dim, -1)
        true = F.one_hot(y.long(), scores.shape[-1]).bool()
        unbounded_true = math.isinf(high) & ~(held & true).any(-1)  # that sample's loss goes to 0
        best = torch.where(held, scores, torch.where(true, high if math.isfinite(high) else 0.0, low))
        losses = F.cross_entropy(best.reshape(-1, best.shape[-1]), y.reshape(-1).long(), reduction="none")
        return float(losses.reshape(y.shape).where(~unbounded_true, 0.0).mean())
    target = y.to(torch.float64)
    if name == "bce_with_logits":
        target = target.clamp(0.0, 1.0)
        best = torch.logit(target).clamp(low, high).where(~fixed, out)
        finite = best.isfinite()  # an unbounded score at a hard label: its loss is the label's entropy, 0
        entropy = -torch.special.xlogy(target, target) - torch.special.xlogy(1 - target, 1 - target)
        losses = F.binary_cross_entropy_with_logits(best.where(finite, 0.0), target, reduction="none")
        return float(losses.where(finite, entropy).mean())
    if name == "mse":
        return float(((target.clamp(low, high).where(~fixed, out) - target) ** 2).mean())
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {name!r}")


def _reference(name: str, out: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> float | None:
    """Loss ``name``'s mean on ``(out, y)`` where their shapes fit it, else ``None``."""
    if name == "cross_entropy":
        dim = _class_dim(out, y)
        if dim is None:
            return None
        if dim == 1:
            return float(F.cross_entropy(out, y, label_smoothing=smoothing))
        return float(F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1),  # scores last: (B, T, V)
                                     label_smoothing=smoothing))
    if not y.is_floating_point() or y.shape != out.shape:
        return None
    if name == "bce_with_logits":
        return float(F.binary_cross_entropy_with_logits(out, y)) if bool(((y >= 0) & (y <= 1)).all()) else None
    return float(F.mse_loss(out, y))


def _class_dim(out: torch.Tensor, y: torch.Tensor) -> int | None:
    """The dimension of ``out`` that holds the class scores of integer targets ``y``: 1 (PyTorch's
    ``(N, C, ...)``), else the last (a sequence model's ``(B, T, V)`` against ``(B, T)``), else ``None``."""
    if y.is_floating_point() or out.ndim < 2:
        return None
    if tuple(y.shape) == (out.shape[0], *out.shape[2:]):
        return 1
    return out.ndim - 1 if tuple(y.shape) == tuple(out.shape[:-1]) else None


def _count(name: str, out: torch.Tensor, y: torch.Tensor) -> int:
    """What a summed loss adds up: the targets of cross-entropy, the elements of the others."""
    return y.numel() if name == "cross_entropy" else out.numel()


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``b`` is ``a`` or a view of all of it (a reshape of the last module's output)."""
    return a is b or (a.numel() == b.numel() and a.data_ptr() == b.data_ptr() and a.dtype == b.dtype)


def _rows_on_simplex(out: torch.Tensor) -> bool:
    """Every output non-negative and the scores of each sample (along dimension 1, or the last)
    summing to 1: a softmax's, which no unbounded output gives."""
    if out.ndim < 2 or bool((out < 0).any()):
        return False
    for dim in dict.fromkeys((1, out.ndim - 1)):
        tol = 1e2 * torch.finfo(out.dtype).eps * out.shape[dim]
        if out.shape[dim] >= 2 and bool(((out.sum(dim=dim) - 1).abs() <= tol).all()):
            return True
    return False
