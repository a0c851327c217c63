"""The base of optimizer *wrappers* (Lookahead, GradientNoise): an optimizer around another one.

A wrapper is a real :class:`torch.optim.Optimizer` whose ``param_groups``, ``state`` and
``defaults`` *are* its base optimizer's (not copies), so a learning-rate scheduler attached
to the wrapper changes the base's learning rate, and ``optimizer.state[p]`` shows the base's
moments. The wrapper's own state (slow weights, a step counter, a random generator) is kept
apart and saved under one extra key of :meth:`state_dict`, next to the base's
``"state"`` and ``"param_groups"``, so wrappers nest (``lookahead:noisy:adam``).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["OptimizerWrapper", "clear_state"]


class OptimizerWrapper(torch.optim.Optimizer):
    """Shares everything with ``base_optimizer``; subclasses add their own work around ``base.step``.

    Subclasses set :attr:`key` (the name of their section in ``state_dict``) and implement
    ``step``, ``_wrapper_state() -> dict`` and ``_load_wrapper_state(dict)``.
    """

    key = "wrapper"
    paper = ""

    def __init__(self, base_optimizer: torch.optim.Optimizer) -> None:
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise ValueError(f"base_optimizer must be a torch.optim.Optimizer, got {type(base_optimizer).__name__}")
        self.base = base_optimizer
        state = base_optimizer.state
        # torch's own constructor sets up the hooks and the step profiling. Through the properties
        # below it empties the base's group list and adds the base's own group dicts back, in order,
        # with the base's add_param_group; it also replaces ``state``, which is put back here.
        super().__init__(base_optimizer.param_groups, base_optimizer.defaults)
        base_optimizer.state = state

    # The base's load_state_dict rebinds its param_groups list, so these must be looked up each time.
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.base.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.base.param_groups = value

    @property
    def state(self):  # type: ignore[override]
        return self.base.state

    @state.setter
    def state(self, value) -> None:
        self.base.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.base.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.base.defaults = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer (the wrapper picks it up lazily on its next step)."""
        self.base.add_param_group(param_group)

    @staticmethod
    def _evaluate(closure) -> Any:
        """``closure()`` with gradients on (torch.optim's convention for ``step(closure)``), or
        ``None`` without one: a wrapper that changes the gradients evaluates it before it does."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def _params(self) -> list[torch.Tensor]:
        """Every parameter, in the order ``state_dict`` numbers them (group by group)."""
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        """The base's state dict plus this wrapper's own section under :attr:`key`."""
        out = dict(self.base.state_dict())
        out[self.key] = self._wrapper_state()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the base (everything but :attr:`key`), then this wrapper's own section."""
        if self.key not in state_dict:
            raise ValueError(f"state_dict has no {self.key!r} section: it was not saved by {type(self).__name__}")
        rest = {name: value for name, value in state_dict.items() if name != self.key}
        self.base.load_state_dict(rest)
        self._load_wrapper_state(state_dict[self.key])

    def _wrapper_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _clear_wrapper_state(self) -> None:
        """Forget what this wrapper accumulated from past steps (:func:`clear_state`); nothing by default."""

    def _load_wrapper_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()}, base={self.base!r})"

    def _describe(self) -> str:
        return ""


def clear_state(optimizer: torch.optim.Optimizer) -> None:
    """Forget everything ``optimizer`` accumulated from past steps (moments, velocities, step
    counts, a wrapper's slow weights), keeping its parameter groups and their rates: it then
    steps as if new. For a run rolled back to earlier weights, whose state came from the steps
    that diverged. Through the optimizer's own ``load_state_dict`` with no state, so an
    optimizer that rebuilds scratch space there (SWATS) does so."""
    if isinstance(optimizer, OptimizerWrapper):
        optimizer._clear_wrapper_state()
        clear_state(optimizer.base)
        return
    empty = optimizer.state_dict()
    empty["state"] = {}
    optimizer.load_state_dict(empty)
