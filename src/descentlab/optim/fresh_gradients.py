"""Each step's gradients forgotten after it: the wrapper for a loop that never zeroes them.

``loss.backward()`` *adds* into ``.grad``. A loop that calls it every step without
``optimizer.zero_grad()`` steps with the sum of every gradient since the start, an undamped
heavy ball whose steps grow however the loss falls. :class:`FreshGradients` sets each gradient
to ``None`` right after the base optimizer's step (``zero_grad(set_to_none=True)``, torch's
default), so the loop's next ``backward`` writes that step's gradient alone: the
``accumulating_gradient`` remedy, applied to a running loop without touching its code.
"""

from __future__ import annotations

from typing import Any

import torch

from descentlab.optim.wrapper import OptimizerWrapper

__all__ = ["FreshGradients"]


class FreshGradients(OptimizerWrapper):
    """``base_optimizer``, its gradients set to ``None`` after each of its steps (and at once).

    Args:
        base_optimizer: the optimizer that steps (its state and groups are shared, as for every
            wrapper).

    Attributes:
        last_norms: the norms of the gradients of the last step as the loop gave them (before a
            wrapper inside changed them), one tensor per parameter that had one
            (``torch._foreach_norm``: on their device, nothing waits for it), kept for a watcher
            that reads the loop's gradients after the step, when they are gone.
    """

    key = "fresh_gradients"
    paper = ""

    def __init__(self, base_optimizer: torch.optim.Optimizer) -> None:
        super().__init__(base_optimizer)
        self.last_norms: list[torch.Tensor] = []
        base_optimizer.zero_grad(set_to_none=True)  # the sum so far must not reach the next step either

    def step(self, closure=None):
        """Evaluate ``closure`` (if any), step the base, then forget the gradients."""
        loss = self._evaluate(closure)
        grads = [p.grad for p in self._params() if p.grad is not None]
        self.last_norms = list(torch._foreach_norm(grads)) if grads else []
        self.base.step()
        self.base.zero_grad(set_to_none=True)
        return loss

    def _wrapper_state(self) -> dict[str, Any]:
        return {}

    def _load_wrapper_state(self, state: dict[str, Any]) -> None:
        """Nothing of its own to restore."""
