"""The optimizer registry: every optimizer the field teaches, by name.

Where torch.optim has the algorithm, the entry *is* torch's class (configured, e.g.
``momentum`` is ``torch.optim.SGD(momentum=0.9)``); descentlab writes only what torch lacks.
Wrappers are written as a prefix: ``lookahead:adam``, ``noisy:sgd``, ``lookahead:noisy:adam``.

Every torch entry is handed out on torch's fastest correct kernel path for the params it
gets (fused where torch has it for their device and dtype, else multi-tensor; see
:mod:`descentlab.optim.fastpath`); pass ``fused=`` / ``foreach=`` to choose yourself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from descentlab.errors import UserInputError
from descentlab.optim.clipping import GradientClipping
from descentlab.optim.fastpath import SPARSE_CAPABLE, fast_path_kwargs, sparse_fallback
from descentlab.optim.lookahead import Lookahead
from descentlab.optim.noise import GradientNoise
from descentlab.optim.sgdw import SGDW
from descentlab.optim.swats import SWATS

__all__ = ["OptimizerSpec", "OPTIMIZERS", "WRAPPERS", "make_optimizer", "parse_name", "is_elementwise"]


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
        OptimizerSpec("sgdw", "decoupled", "descentlab", SGDW.paper, SGDW,
                      MappingProxyType({"momentum": 0.9, "weight_decay": 1e-2}), 1e-2),
        # SWATS switches a whole group at once on dot products over it: stacked models would switch together.
        OptimizerSpec("swats", "hybrid", "descentlab", SWATS.paper, SWATS, MappingProxyType({}), 1e-3,
                      elementwise=False),
    )
}

#: Every plain (non-wrapper) optimizer by name, read-only.
OPTIMIZERS: Mapping[str, OptimizerSpec] = MappingProxyType(_ENTRIES)

#: Wrappers usable as a ``prefix:`` on any entry: name -> (factory(base, **kw), its own keyword names).
WRAPPERS: dict[str, tuple[Callable[..., torch.optim.Optimizer], tuple[str, ...]]] = {
    "lookahead": (Lookahead, ("k", "alpha")),
    # One noise draw is split over all gradients of a step: stacking models changes each one's noise.
    "noisy": (GradientNoise, ("eta", "gamma", "generator")),
    # The global norm reduces over every parameter: not element-wise across stacked models either.
    "clipped": (GradientClipping, ("max_norm",)),
}


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
    hyperparameters = dict(hyperparameters)
    wrapper_kwargs = []
    for wrapper in wrappers:
        _, keys = WRAPPERS[wrapper]
        wrapper_kwargs.append({k: hyperparameters.pop(k) for k in keys if k in hyperparameters})
    spec = OPTIMIZERS[base]
    _check_names(spec, hyperparameters, wrappers)
    kwargs = {**spec.defaults, "lr": spec.lr, **hyperparameters}
    params = _materialize(params)
    if spec.source == "torch":
        flat = [p for group in params for p in group["params"]] if params and isinstance(params[0], dict) else params
        # named parameters, (name, tensor), are accepted by torch.optim too
        flat = [p[1] if isinstance(p, tuple) else p for p in flat]
        kwargs.update(fast_path_kwargs(spec.factory, flat, kwargs))
    optimizer = spec.factory(params, **kwargs)
    if spec.source == "torch" and issubclass(spec.factory, SPARSE_CAPABLE):
        optimizer.register_step_pre_hook(sparse_fallback)
    for wrapper, own in zip(reversed(wrappers), reversed(wrapper_kwargs)):
        factory, _ = WRAPPERS[wrapper]
        optimizer = factory(optimizer, **own)
    return optimizer


def is_elementwise(name: str) -> bool:
    """Whether ``name`` (wrappers included) updates every scalar from its own history only."""
    wrappers, base = parse_name(name)
    return OPTIMIZERS[base].elementwise and all(getattr(WRAPPERS[w][0], "elementwise", True) for w in wrappers)


def _materialize(params: Iterable[Any]) -> list[Any]:
    """A list of tensors or of param-group dicts (generators are read once, here)."""
    if isinstance(params, torch.Tensor):
        raise ValueError("params must be an iterable of tensors or dicts, not a single tensor")
    items = list(params)
    if items and isinstance(items[0], dict):
        groups = []
        for group in items:
            group = dict(group)
            group["params"] = [group["params"]] if isinstance(group["params"], torch.Tensor) else list(group["params"])
            groups.append(group)
        return groups
    return items


def _check_names(spec: OptimizerSpec, hyperparameters: Mapping[str, Any], wrappers: list[str]) -> None:
    import inspect

    try:
        accepted = inspect.signature(spec.factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return
    unknown = sorted(set(hyperparameters) - set(accepted) - {"params"})
    if unknown:
        valid = sorted(set(accepted) - {"params"}) + [k for w in wrappers for k in WRAPPERS[w][1]]
        raise UserInputError(f"unknown hyperparameter {unknown[0]!r} for {spec.name}; valid: {', '.join(valid)}")
