"""The optimizer's weight decay at a stall: how hard it pulls the weights against the loss.

SGD's and Adam's ``weight_decay`` add ``d θ`` to each gradient (the optimizer descends the loss
plus ``½ Σ d_i θ_i²``); AdamW's (and Adam's ``decoupled_weight_decay``) shrinks the weights by
``lr · d · θ`` beside its preconditioned step. A decay far too strong holds the run where its
pull balances the loss's gradient, or at the origin, whatever the rate: the loss stays where it
began, and the lectures' causes read it as a saddle (the origin of a network is one) or a slow
run ("raise the rate", which under AdamW only shrinks the weights faster). Two measurements:

* :func:`decay_pull` — the decay's part of the optimizer's step against the gradient's,
  ``‖step of d θ‖ / ‖step of ∇L‖``, each through the optimizer's own per-coordinate steps
  (Adam's ``lr / (√v̂ + ε)``; the decoupled decay's ``lr``): ~0 in a healthy run, ~1 where the
  decay balances the loss, above 1 at the origin it drags the weights to;
* :func:`decayed_escape_curvature` — at a saddle, the curvature of the descended function along
  the escape direction: where the decay makes it positive, a step along it is pulled back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from descentlab.critical.stability import innermost

__all__ = ["has_decay", "group_decays", "decay_pull", "decayed_escape_curvature"]


def has_decay(optimizer: Any) -> bool:
    """Some parameter group of ``optimizer`` (through its wrappers) has a weight decay above 0."""
    return any(float(g.get("weight_decay", 0.0) or 0.0) > 0 for g in innermost(optimizer).param_groups)


def group_decays(optimizer: Any, model: nn.Module, names: Sequence[str]) -> tuple[list[float], list[float], bool]:
    """Per parameter ``names``: the weight decay and the rate of the group that holds it, and
    whether the decay is decoupled from the gradient (AdamW, Adam's ``decoupled_weight_decay``)."""
    inner = innermost(optimizer)
    groups = inner.param_groups
    named = dict(model.named_parameters())
    group_of = {id(p): g for g in groups for p in g["params"]}
    held = [group_of.get(id(named[n]), {}) for n in names]
    decoupled = type(inner).__name__ == "AdamW" or any(g.get("decoupled_weight_decay") for g in groups)
    return ([float(g.get("weight_decay", 0.0) or 0.0) for g in held], [float(g.get("lr", 0.0)) for g in held],
            decoupled)


def decay_pull(optimizer: Any, model: nn.Module, names: Sequence[str], theta: torch.Tensor, gradient: torch.Tensor,
               steps: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any] | None:
    """The decay's pull on the weights ``theta`` (flat over ``names``) against the loss's
    ``gradient`` there, as the optimizer steps them: ``{"decay": the largest, "decoupled",
    "pull", "modules": the modules whose own parameters it decays, in order}``; ``None`` without
    decay or with a gradient of 0. ``steps``: the optimizer's per-coordinate step per parameter
    (:attr:`~descentlab.critical.stability.StabilityRule.steps`, Adam's ``lr / (√v̂ + ε)``),
    ``None`` for each group's rate (only ratios count, so a common factor drops out).
    """
    decays, rates, decoupled = group_decays(optimizer, model, names)
    if max(decays, default=0.0) <= 0:
        return None
    per_entry, rate = _per_entry(model, names, decays), _per_entry(model, names, rates)
    step = rate if steps is None else torch.cat([steps[n].detach().reshape(-1).double().cpu() for n in names])
    theta, gradient = theta.detach().double().cpu(), gradient.detach().double().cpu()
    if not (theta.numel() == gradient.numel() == per_entry.numel() == step.numel()):
        return None
    loss_step = float((step * gradient).norm())
    if not loss_step > 0:
        return None
    decay_step = float(((rate if decoupled else step) * per_entry * theta).norm())  # decoupled: lr · d · θ
    shrunk = [n.rpartition(".")[0] for n, d in zip(names, decays) if d > 0]
    return {"decay": max(decays), "decoupled": decoupled, "pull": decay_step / loss_step,
            "modules": list(dict.fromkeys(shrunk))}


def decayed_escape_curvature(optimizer: Any, model: nn.Module, names: Sequence[str], lowest: float,
                             direction: torch.Tensor | None) -> tuple[float, float] | None:
    """At a saddle, the optimizer's weight decay (its largest) and the curvature along the escape
    direction v of the function the optimizer descends, the loss plus ½ Σ d_i θ_i²:
    λ_min + Σ d_i v_i² (v of unit norm, d_i the decay of the group holding θ_i; ``lowest`` = λ_min,
    ``direction`` = v over ``names``). Where it is not negative, the decay holds the run at the
    loss's saddle: a step along v is pulled back. ``None`` without decay, without a measured
    negative eigenvalue and its eigenvector (a saddle found by a probe along a flat direction
    descends at a higher order than the decay's), or for a decoupled decay (AdamW: not a gradient
    term of its steps' fixed point, its preconditioner scales the decay's pull against the loss's)."""
    decays, _, decoupled = group_decays(optimizer, model, names)
    if decoupled or direction is None or not lowest < 0 or max(decays, default=0.0) <= 0:
        return None
    per_entry = _per_entry(model, names, decays)
    if per_entry.numel() != direction.numel():
        return None
    v = direction.double().cpu() / direction.double().norm()
    return max(decays), float(lowest) + float((per_entry * v * v).sum())


def _per_entry(model: nn.Module, names: Sequence[str], values: Sequence[float]) -> torch.Tensor:
    """One value per parameter of ``names`` spread over its entries, flat in their order (float64)."""
    named = dict(model.named_parameters())
    return torch.cat([torch.full((named[n].numel(),), v, dtype=torch.float64) for n, v in zip(names, values)])
