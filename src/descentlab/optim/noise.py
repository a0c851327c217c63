"""Annealed Gaussian gradient noise (Neelakantan et al. 2015, "Adding gradient noise improves
learning for very deep networks"), as a wrapper on any optimizer.

Before each base step t = 0, 1, 2, ... every gradient gets fresh noise::

    g <- g + N(0, sigma_t^2),    sigma_t^2 = eta / (1 + t)^gamma

The wrapper's own ``torch.Generator`` decides the numbers (see
:mod:`descentlab.optim.noise_streams`: on CPU, a counter-based stream seeded by one draw of
the generator per step, computed and added in one parallel pass; elsewhere one flat draw per
dtype), so the draw, not the addition, decides the random stream: every kernel path adds
the same numbers, and a run resumed from ``state_dict`` (which holds the generator's state
and t) draws exactly the noise the uninterrupted run would have drawn.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from descentlab.optim._checks import check_number, dense_grads
from descentlab.optim.noise_streams import add_noise_in_place, draw_flat
from descentlab.optim.wrapper import OptimizerWrapper

__all__ = ["GradientNoise", "noise_std", "add_noise_single", "add_noise_foreach"]


def noise_std(t: int, eta: float, gamma: float) -> float:
    """The standard deviation at step t: ``sqrt(eta / (1 + t)^gamma)``."""
    return math.sqrt(eta / (1.0 + t) ** gamma)


def add_noise_single(grads: list[torch.Tensor], noise: list[torch.Tensor], std: float) -> None:
    """``g += std * z`` tensor by tensor (``z`` standard normal, same shapes as ``grads``)."""
    for g, z in zip(grads, noise):
        g.add_(z, alpha=std)


def add_noise_foreach(grads: list[torch.Tensor], noise: list[torch.Tensor], std: float) -> None:
    """The same with one multi-tensor kernel."""
    torch._foreach_add_(grads, noise, alpha=std)


def draw_noise(grads: list[torch.Tensor], generator: torch.Generator,
               buffers: dict[tuple[torch.device, torch.dtype], torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Standard normal tensors shaped like ``grads``: one flat draw per (device, dtype), in order
    (the stream off CPU, where ``normal_`` is parallel).

    ``buffers`` (kept by the caller between steps) are refilled in place instead of allocating
    a fresh weight-sized tensor each step, which on CPU costs as much as a third of the draw.
    """
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, g in enumerate(grads):
        buckets.setdefault((g.device, g.dtype), []).append(i)
    buffers = {} if buffers is None else buffers
    noise: list[torch.Tensor] = [None] * len(grads)  # type: ignore[list-item]
    for (device, dtype), index in buckets.items():
        total = sum(grads[i].numel() for i in index)
        flat = buffers.get((device, dtype))
        if flat is None or flat.numel() != total:
            flat = buffers[(device, dtype)] = torch.empty(total, device=generator.device, dtype=dtype)
        flat.normal_(generator=generator)
        flat = flat.to(device)
        offset = 0
        for i in index:
            n = grads[i].numel()
            noise[i] = flat[offset:offset + n].view_as(grads[i])
            offset += n
    return noise


class GradientNoise(OptimizerWrapper):
    """Gaussian noise, annealed over time, added to every gradient before ``base_optimizer`` steps.

    Args:
        base_optimizer: the optimizer that steps on the noisy gradients.
        eta: noise variance at t = 0 (> 0; the paper uses 0.01, 0.3 or 1.0).
        gamma: annealing exponent (>= 0; the paper uses 0.55).
        generator: the ``torch.Generator`` the noise comes from (on the params' device).
            Default: a new one seeded with ``torch.initial_seed()``, so ``torch.manual_seed``
            makes the run reproducible.
        foreach / fused: how the noise is added: tensor by tensor (``foreach=False``), with
            multi-tensor kernels (``foreach=True``), or drawn and added block by block in
            parallel (``fused=True``; the default where the generator and the gradients are
            on CPU and contiguous, else multi-tensor). All paths add the same numbers.

    The noise makes the update depend on all gradients of a step together (one draw split
    over them), so the result is not element-wise across stacked models.
    """

    key = "noise"
    elementwise = False
    paper = "Neelakantan et al. 2015"

    def __init__(self, base_optimizer: torch.optim.Optimizer, eta: float = 0.3, gamma: float = 0.55,
                 generator: torch.Generator | None = None, *, foreach: bool | None = None,
                 fused: bool | None = None) -> None:
        self.eta = check_number("eta", eta, low_open=True)
        self.gamma = check_number("gamma", gamma)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        super().__init__(base_optimizer)
        if generator is None:
            first = next(p for g in self.param_groups for p in g["params"])
            generator = torch.Generator(device=first.device)
            generator.manual_seed(torch.initial_seed())
        if fused and foreach:
            raise ValueError("fused and foreach cannot both be True")
        if fused and generator.device.type != "cpu":
            raise ValueError("fused=True draws on CPU; pass a CPU generator or leave fused unset")
        self.generator = generator
        self.foreach = foreach
        self.fused = fused
        self.t = 0
        self._buffers: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @property
    def std(self) -> float:
        """The noise standard deviation the next step will use."""
        return noise_std(self.t, self.eta, self.gamma)

    def step(self, closure=None):
        """Evaluate ``closure`` (if any), add this step's noise to the gradients, step the base."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        dense_grads("GradientNoise", grads)
        if grads:
            with torch.no_grad():
                self._add_noise(grads, self.std)
        self.t += 1
        self.base.step()
        return loss

    def _add_noise(self, grads: list[torch.Tensor], std: float) -> None:
        add = add_noise_single if self.foreach is False else add_noise_foreach
        if self.generator.device.type != "cpu" or not all(g.is_cpu for g in grads):
            add(grads, draw_noise(grads, self.generator, self._buffers), std)
            return
        step_seed = int(torch.randint(0, 1 << 62, (), generator=self.generator))
        in_place = self.fused or (self.fused is None and self.foreach is None)
        if in_place and all(g.is_contiguous() for g in grads):
            add_noise_in_place(grads, step_seed, std)
        else:
            add(grads, draw_flat(grads, step_seed), std)

    def _wrapper_state(self) -> dict[str, Any]:
        return {"eta": self.eta, "gamma": self.gamma, "t": self.t, "generator": self.generator.get_state()}

    def _load_wrapper_state(self, state: dict[str, Any]) -> None:
        self.eta = check_number("eta", state["eta"], low_open=True)
        self.gamma = check_number("gamma", state["gamma"])
        self.t = int(state["t"])
        self.generator.set_state(state["generator"].cpu())

    def _describe(self) -> str:
        return f"eta={self.eta}, gamma={self.gamma}"
