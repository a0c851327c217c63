"""Annealed Gaussian gradient noise (Neelakantan et al. 2015, "Adding gradient noise improves
learning for very deep networks"), as a wrapper on any optimizer.

Before each base step t = 0, 1, 2, ... every gradient gets fresh noise::

    g <- g + N(0, sigma_t^2),    sigma_t^2 = eta / (1 + t)^gamma

The wrapper's own ``torch.Generator`` decides the numbers: each step draws one flat block of
standard normals per (device, dtype) of the gradients, in the order of the parameters
(``torch.Tensor.normal_``), and adds it to all gradients with one multi-tensor kernel. A run
resumed from ``state_dict`` (which holds the generator's state and t) draws exactly the noise
the uninterrupted run would have drawn.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from descentlab.optim._checks import check_number, dense_grads
from descentlab.optim._flat import FlatScratch
from descentlab.optim.wrapper import OptimizerWrapper

__all__ = ["GradientNoise", "noise_std"]


def noise_std(t: int, eta: float, gamma: float) -> float:
    """The standard deviation at step t: ``sqrt(eta / (1 + t)^gamma)``."""
    return math.sqrt(eta / (1.0 + t) ** gamma)


class GradientNoise(OptimizerWrapper):
    """Gaussian noise, annealed over time, added to every gradient before ``base_optimizer`` steps.

    Args:
        base_optimizer: the optimizer that steps on the noisy gradients.
        eta: noise variance at t = 0 (> 0; the paper uses 0.01, 0.3 or 1.0).
        gamma: annealing exponent (>= 0; the paper uses 0.55).
        generator: the ``torch.Generator`` the noise comes from (best on the params' device;
            elsewhere the noise is drawn there and copied). Default: a new one on the first
            parameter's device, seeded with ``torch.initial_seed()``, so ``torch.manual_seed``
            makes the run reproducible.

    The noise makes the update depend on all gradients of a step together (one draw split
    over them), so the result is not element-wise across stacked models.

    Attributes:
        last_norms: the norms of the last step's gradients as the loop gave them, before the
            noise (``torch._foreach_norm``, on their device), for a watcher that reads the loop's
            gradients after the step, when ``.grad`` holds the noise too.
    """

    key = "noise"
    elementwise = False
    paper = "Neelakantan et al. 2015"

    def __init__(self, base_optimizer: torch.optim.Optimizer, eta: float = 0.3, gamma: float = 0.55,
                 generator: torch.Generator | None = None) -> None:
        self.eta = check_number("eta", eta, low_open=True)
        self.gamma = check_number("gamma", gamma)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        super().__init__(base_optimizer)
        if generator is None:
            first = next(p for g in self.param_groups for p in g["params"])
            generator = torch.Generator(device=first.device)
            generator.manual_seed(torch.initial_seed())
        self.generator = generator
        self.t = 0
        self._noise = FlatScratch()
        self.last_norms: list[torch.Tensor] = []

    @property
    def std(self) -> float:
        """The noise standard deviation the next step will use."""
        return noise_std(self.t, self.eta, self.gamma)

    def step(self, closure=None):
        """Evaluate ``closure`` (if any), add this step's noise to the gradients, step the base."""
        loss = self._evaluate(closure)
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        dense_grads("GradientNoise", grads)
        self.last_norms = list(torch._foreach_norm(grads)) if grads else []
        if grads:
            with torch.no_grad():
                torch._foreach_add_(grads, self._draw(params), alpha=self.std)
        self.t += 1
        self.base.step()
        return loss

    def _draw(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Standard normal tensors shaped like ``params``: one flat draw per (device, dtype)."""
        noise, flats = self._noise.views(params)
        for flat in flats:
            if flat.device == self.generator.device:
                flat.normal_(generator=self.generator)
            else:
                flat.copy_(torch.randn(flat.shape, dtype=flat.dtype, device=self.generator.device,
                                       generator=self.generator))
        return noise

    def _wrapper_state(self) -> dict[str, Any]:
        return {"eta": self.eta, "gamma": self.gamma, "t": self.t, "generator": self.generator.get_state()}

    def _load_wrapper_state(self, state: dict[str, Any]) -> None:
        self.eta = check_number("eta", state["eta"], low_open=True)
        self.gamma = check_number("gamma", state["gamma"])
        self.t = int(state["t"])
        self.generator.set_state(state["generator"].cpu())

    def _describe(self) -> str:
        return f"eta={self.eta}, gamma={self.gamma}"
