"""The optimizer registry: every optimizer the field teaches, by name.

Where torch.optim has the algorithm, the entry *is* torch's class (configured, e.g.
``momentum`` is ``torch.optim.SGD(momentum=0.9)``); descentlab writes only what torch lacks.
Wrappers are written as a prefix: ``lookahead:adam``, ``noisy:sgd``, ``lookahead:noisy:adam``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from descentlab.errors import UserInputError

__all__ = ["OptimizerSpec", "OPTIMIZERS", "WRAPPERS", "make_optimizer", "parse_name"]


@dataclass(frozen=True)
class OptimizerSpec:
    """One registry entry.

    Attributes:
        name: registry name (``"nesterov"``).
        family: ``"sgd"``, ``"adaptive"``, ``"decoupled"``, ``"wrapper"`` or ``"hybrid"``.
        source: ``"torch"`` (the class is torch.optim's) or ``"descentlab"`` (written here).
        paper: the reference for the algorithm.
        factory: the optimizer class (or a callable with the same signature).
        defaults: hyperparameters this entry fixes on top of the class's defaults.
        lr: the default learning rate when the caller gives none.
        elementwise: the update of each scalar depends only on that scalar's own gradient
            history, so stacking independent models into one tensor changes nothing.
    """

    name: str
    family: str
    source: str
    paper: str
    factory: Callable[..., torch.optim.Optimizer]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    lr: float = 1e-3
    elementwise: bool = True

    @property
    def class_name(self) -> str:
        return f"{self.factory.__module__}.{self.factory.__qualname__}"


def _torch(name, family, paper, cls, lr, **defaults) -> OptimizerSpec:
    return OptimizerSpec(name, family, "torch", paper, cls, MappingProxyType(defaults), lr)


_ENTRIES: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        _torch("sgd", "sgd", "Robbins & Monro 1951", torch.optim.SGD, 1e-2),
        _torch("momentum", "sgd", "Polyak 1964", torch.optim.SGD, 1e-2, momentum=0.9),
        _torch("nesterov", "sgd", "Nesterov 1983; Sutskever et al. 2013", torch.optim.SGD, 1e-2,
               momentum=0.9, nesterov=True),
        _torch("adagrad", "adaptive", "Duchi, Hazan & Singer 2011", torch.optim.Adagrad, 1e-2),
        _torch("rmsprop", "adaptive", "Tieleman & Hinton 2012 (lecture 6.5)", torch.optim.RMSprop, 1e-3),
        _torch("adadelta", "adaptive", "Zeiler 2012", torch.optim.Adadelta, 1.0),
        _torch("adam", "adaptive", "Kingma & Ba 2015", torch.optim.Adam, 1e-3),
        _torch("amsgrad", "adaptive", "Reddi, Kale & Kumar 2018", torch.optim.Adam, 1e-3, amsgrad=True),
        _torch("adamw", "decoupled", "Loshchilov & Hutter 2019", torch.optim.AdamW, 1e-3),
        _torch("nadam", "adaptive", "Dozat 2016", torch.optim.NAdam, 2e-3),
        _torch("radam", "adaptive", "Liu et al. 2020", torch.optim.RAdam, 1e-3),
    )
}

#: Every plain (non-wrapper) optimizer by name, read-only.
OPTIMIZERS: Mapping[str, OptimizerSpec] = MappingProxyType(_ENTRIES)

#: Wrappers usable as a ``prefix:`` on any entry: name -> (factory(base, **kw), its own keyword names).
WRAPPERS: dict[str, tuple[Callable[..., torch.optim.Optimizer], tuple[str, ...]]] = {}


def parse_name(name: str) -> tuple[list[str], str]:
    """Split ``"lookahead:noisy:adam"`` into ``(["lookahead", "noisy"], "adam")``; unknown names raise."""
    if not isinstance(name, str) or not name.strip():
        raise UserInputError("optimizer name must be a non-empty string")
    *wrappers, base = name.strip().lower().split(":")
    for wrapper in wrappers:
        if wrapper not in WRAPPERS:
            raise UserInputError(f"unknown optimizer wrapper {wrapper!r}; valid: {', '.join(WRAPPERS) or 'none'}")
    if base not in OPTIMIZERS:
        raise UserInputError(f"unknown optimizer {base!r}; valid: {', '.join(OPTIMIZERS)}")
    return wrappers, base


def make_optimizer(name: str, params: Iterable[Any], **hyperparameters: Any) -> torch.optim.Optimizer:
    """Build the optimizer called ``name`` over ``params``.

    ``hyperparameters`` override the entry's defaults; a wrapper takes its own keywords
    (e.g. ``k``, ``alpha`` for Lookahead) and passes the rest to the optimizer it wraps.
    ``lr`` defaults to the entry's :attr:`OptimizerSpec.lr`.
    """
    wrappers, base = parse_name(name)
    wrapper_kwargs = []
    for wrapper in wrappers:
        _, keys = WRAPPERS[wrapper]
        wrapper_kwargs.append({k: hyperparameters.pop(k) for k in keys if k in hyperparameters})
    spec = OPTIMIZERS[base]
    kwargs = {**spec.defaults, "lr": spec.lr, **hyperparameters}
    optimizer = spec.factory(params, **kwargs)
    for wrapper, own in zip(reversed(wrappers), reversed(wrapper_kwargs)):
        factory, _ = WRAPPERS[wrapper]
        optimizer = factory(optimizer, **own)
    return optimizer
