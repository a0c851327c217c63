"""Gradient clipping by the global norm, as a wrapper on any optimizer.

Before each base step every gradient is scaled by ``min(1, max_norm / (||g|| + 1e-6))``, ``||g||`` the
norm of all gradients together (Pascanu, Mikolov & Bengio 2013, "On the difficulty of training
recurrent neural networks"): a step never moves along a gradient longer than ``max_norm``, which
keeps an exploding gradient from throwing the parameters far in one step, and leaves every
shorter gradient as it is. The scaling is ``torch.nn.utils.clip_grad_norm_``'s own.
"""

from __future__ import annotations

from typing import Any

import torch

from descentlab.optim._checks import check_number
from descentlab.optim.wrapper import OptimizerWrapper

__all__ = ["GradientClipping"]


class GradientClipping(OptimizerWrapper):
    """``base_optimizer`` stepping on gradients clipped to a global norm of at most ``max_norm``.

    Args:
        base_optimizer: the optimizer that steps on the clipped gradients.
        max_norm: the largest norm of all gradients together (> 0).

    Attributes:
        last_norm: the gradients' norm before clipping at the last step (``None`` before one).

    The norm is over all parameters together, so the update of one parameter depends on the
    others: not element-wise across stacked models.
    """

    key = "clipping"
    elementwise = False
    paper = "Pascanu et al. 2013"

    def __init__(self, base_optimizer: torch.optim.Optimizer, max_norm: float = 1.0) -> None:
        self.max_norm = check_number("max_norm", max_norm, low_open=True)
        super().__init__(base_optimizer)
        self.last_norm: float | None = None

    def step(self, closure=None):
        """Evaluate ``closure`` (if any), clip the gradients' global norm, step the base."""
        loss = self._evaluate(closure)
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if params:
            self.last_norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_norm))
        self.base.step()
        return loss

    def _wrapper_state(self) -> dict[str, Any]:
        return {"max_norm": self.max_norm, "last_norm": self.last_norm}

    def _load_wrapper_state(self, state: dict[str, Any]) -> None:
        self.max_norm = check_number("max_norm", state["max_norm"], low_open=True)
        self.last_norm = state.get("last_norm")

    def _describe(self) -> str:
        return f"max_norm={self.max_norm}"
