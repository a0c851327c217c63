"""The networks of the normalization study, and how saturated their units are.

Four models separate the two ways raw feature scales hurt gradient descent:

- ``"softmax"``: softmax regression (one linear layer), started at zero. Convex and unable to
  saturate at the start (every logit 0): the pure *conditioning* case, where the Hessian at the
  start is exact in closed form (``1/2 E[x~ x~^T]`` on the class-difference direction, ``x~ = (x, 1)``).
- ``"tanh"``: ``n_in -> hidden (tanh) -> 2`` with torch's default initialisation. On raw
  features of spread up to ~570 its pre-activations are in the hundreds: the *saturation* case.
- ``"relu"``: the same shape with ReLU and a small initialisation (torch's default weights
  times :data:`SMALL_INIT`, biases 0): no unit can saturate and the start is near the origin,
  so raw features hurt only through *conditioning*.
- ``"deep"``: ``n_in -> 16 -> 16 -> 16 -> 2`` tanh (torch's default initialisation), where
  BatchNorm on the hidden layers is usually credited with most of its benefit.

Every hidden model exists with and without ``BatchNorm1d`` after each hidden linear layer
(Ioffe & Szegedy 2015; never on the input, which would be standardising by another name).

:func:`saturation` measures what :mod:`descentlab.critical.layer_signals` names
``saturated_units``, in the loss's own mode (full-batch statistics for BatchNorm), at the *first*
tanh layer -- the one the inputs feed; later layers see tanh outputs in [-1, 1] -- : the share of
its pre-activations (samples x units) with ``|z| > 3`` (slope ``1 - tanh^2 < 0.01``), and the
share of its units the stall monitor calls saturated (slope below ``FLAT_SLOPE`` of its peak on
at least ``MOST_SAMPLES`` of the samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["MODELS", "MODEL_LABELS", "SMALL_INIT", "DEEP_WIDTHS", "PRE_ACTIVATION_LIMIT", "Saturation",
           "make_network", "saturation"]

#: The study's models (see the module docstring).
MODELS = ("softmax", "tanh", "relu", "deep")
#: One line per model, for tables and pages.
MODEL_LABELS = {"softmax": "softmax regression (zero init)", "tanh": "tanh MLP (default init)",
                "relu": "ReLU MLP (small init)", "deep": "deep tanh MLP (default init)"}
#: ``"relu"``'s weights are torch's default initialisation times this; its biases start at 0.
SMALL_INIT = 0.1
#: The hidden widths of ``"deep"``.
DEEP_WIDTHS = (16, 16, 16)
#: A tanh pre-activation beyond this is in the flat tail (slope ``1 - tanh(3)^2 = 0.0099``).
PRE_ACTIVATION_LIMIT = 3.0


def make_network(model: str, n_in: int, n_out: int, *, hidden: int = 8, batchnorm: bool = False,
                 dtype: torch.dtype = torch.float64) -> nn.Module:
    """A fresh network ``model`` (:data:`MODELS`) from torch's global RNG (seed it first)."""
    if model not in MODELS:
        raise ValueError(f"model: expected one of {', '.join(MODELS)}, got {model!r}")
    if hidden < 1:
        raise ValueError(f"hidden: must be >= 1, got {hidden}")
    if model == "softmax":
        if batchnorm:
            raise ValueError("batchnorm: softmax regression has no hidden layer to normalise")
        net = nn.Sequential(nn.Linear(n_in, n_out)).to(dtype)
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
        return net
    widths = DEEP_WIDTHS if model == "deep" else (hidden,)
    activation = nn.ReLU if model == "relu" else nn.Tanh
    layers: list[nn.Module] = []
    width_in = n_in
    for width in widths:
        layers.append(nn.Linear(width_in, width))
        if batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(activation())
        width_in = width
    layers.append(nn.Linear(width_in, n_out))
    net = nn.Sequential(*layers).to(dtype)
    if model == "relu":
        with torch.no_grad():
            for layer in net:
                if isinstance(layer, nn.Linear):
                    layer.weight.mul_(SMALL_INIT)
                    layer.bias.zero_()
    return net


@dataclass(frozen=True)
class Saturation:
    """How much of a network's first tanh layer sits in its flat tails (NaN without tanh units).

    Attributes:
        pre_activations: share of its pre-activations (samples x units) with ``|z| > PRE_ACTIVATION_LIMIT``.
        units: share of its units the stall monitor calls saturated
            (:func:`descentlab.critical.layer_signals.measure_layers`).
    """

    pre_activations: float
    units: float


def saturation(model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor) -> Saturation:
    """:class:`Saturation` of ``model`` on ``(X, y)`` in the model's own mode (the mode GD trains in),
    measured on a copy (a forward pass in training mode would move BatchNorm's running statistics)."""
    import copy

    from descentlab.critical.layer_signals import measure_layers
    from descentlab.curvature import EmpiricalLoss

    if not any(isinstance(m, nn.Tanh) for m in model.modules()):
        return Saturation(math.nan, math.nan)
    model = copy.deepcopy(model)
    first = next(m for m in model.modules() if isinstance(m, nn.Tanh))
    seen: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        seen.append(inputs[0].detach())

    handle = first.register_forward_pre_hook(keep)
    try:
        with torch.no_grad():
            model(X)
    finally:
        handle.remove()
    share = float((seen[0].abs() > PRE_ACTIVATION_LIMIT).double().mean())
    loss = EmpiricalLoss(model, loss_fn, (X, y), eval_mode=False)
    units = [u for u in measure_layers(loss, loss.loss_and_gradient()[1]).units if u.family == "tanh"]
    return Saturation(share, units[0].saturated)
