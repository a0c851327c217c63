"""Which of the model's parameters the loop's optimizer steps, and which its backward reaches.

Two mistakes leave part of a model where it started while the loss still creeps down, so no
plateau shows them: an optimizer built over some of the parameters (``SGD(model.head.parameters())``
with the body still ``requires_grad``: backward computes the body's gradients and nothing steps
them), and a forward that cuts the graph (a body run under ``torch.no_grad()`` or ``.detach()``ed:
the optimizer holds the body, backward never reaches it). Both are read from the objects as they
are after a step (the optimizer's param groups, each parameter's ``.grad``), nothing computed. A
parameter the optimizer does not hold may still be stepped by a second one (``SparseAdam`` for a
sparse embedding beside ``Adam`` for the rest): it is told only where it has not moved between two
reads (:func:`snapshot`, :func:`unmoved`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from descentlab.critical.verdicts import quoted

__all__ = ["Coverage", "coverage", "held_share", "snapshot", "unmoved"]


@dataclass(frozen=True)
class Coverage:
    """The parameters that require a gradient, against the optimizer and the last backward.

    Attributes:
        trainable: their entries.
        not_held: entries of those in none of the optimizer's param groups, and their names.
        unreached: entries of those the optimizer holds whose ``.grad`` is ``None`` while others'
            is not (backward did not reach them), and their names.
    """

    trainable: int
    not_held: int
    not_held_names: tuple[str, ...]
    unreached: int
    unreached_names: tuple[str, ...]

    def notes(self) -> list[str]:
        """The findings in words (none where every trainable parameter is held and reached)."""
        out = []
        if self.not_held:
            out.append(f"the optimizer does not hold {self.not_held:,} of the {self.trainable:,} parameter entries "
                       f"that require a gradient ({quoted(self.not_held_names)}): backward computes their "
                       "gradients, and nothing has moved them since the check before (pass them to the "
                       "optimizer, or set requires_grad=False to freeze them)")
        if self.unreached:
            out.append(f"backward did not reach {self.unreached:,} of the {self.trainable:,} parameter entries the "
                       f"optimizer steps ({quoted(self.unreached_names)}): they have no gradient and never move "
                       "(computed under torch.no_grad(), detached, not used by the loss, or inside "
                       "torch.utils.checkpoint with use_reentrant=True on inputs that do not require grad)")
        return out


def coverage(optimizer: Any, model: nn.Module) -> Coverage:
    """:class:`Coverage` of ``model``'s parameters under ``optimizer``, read after a step."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    not_held = [(name, p) for name, p in trainable if id(p) not in held]
    stepped = [(name, p) for name, p in trainable if id(p) in held]
    # every .grad None: the loop zeroed them (set_to_none) before this read, which says nothing
    reached_any = any(p.grad is not None for _, p in stepped)
    unreached = [(name, p) for name, p in stepped if p.grad is None] if reached_any else []
    return Coverage(sum(p.numel() for _, p in trainable), sum(p.numel() for _, p in not_held),
                    tuple(name for name, _ in not_held), sum(p.numel() for _, p in unreached),
                    tuple(name for name, _ in unreached))


def snapshot(found: Coverage, model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters that ``found`` says the optimizer does not hold, to tell later
    whether another optimizer steps them."""
    names = set(found.not_held_names)
    return {name: p.detach().clone() for name, p in model.named_parameters() if name in names}


def unmoved(found: Coverage, model: nn.Module, before: dict[str, torch.Tensor]) -> Coverage:
    """``found``'s parameters not held, narrowed to those still equal to their copies in ``before``
    (nothing stepped them since), and nothing unreached (told when ``found`` was read)."""
    params = dict(model.named_parameters())
    still = [name for name in found.not_held_names
             if name in params and torch.equal(params[name].detach(), before[name])]
    return replace(found, not_held=sum(params[name].numel() for name in still), not_held_names=tuple(still),
                   unreached=0, unreached_names=())


def held_share(optimizer: Any, model: nn.Module) -> float | None:
    """The share of ``model``'s trainable parameters (by entries) that ``optimizer`` steps
    (``None``: the model has none)."""
    found = coverage(optimizer, model)
    return (found.trainable - found.not_held) / found.trainable if found.trainable else None
