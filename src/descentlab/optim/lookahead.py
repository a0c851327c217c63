"""Lookahead (Zhang, Lucas, Hinton & Ba, NeurIPS 2019): k fast steps forward, one step back.

Any optimizer takes the *fast* steps. Slow weights phi start at the initial weights theta_0;
after every k fast steps::

    phi   <- phi + alpha * (theta - phi)
    theta <- phi

The sync reads and writes both weight sets every k steps: about 4 / k weight-sized memory
streams per step on top of the base optimizer's (0.8 at k = 5, beside fused Adam's 7). It
runs on cache-sized chunks of tensors, so that the copy reads slow weights the lerp has
just written to the cache rather than from memory.
"""

from __future__ import annotations

from typing import Any

import torch

from descentlab.optim._checks import check_int, check_number
from descentlab.optim.wrapper import OptimizerWrapper

__all__ = ["Lookahead", "lookahead_sync"]

#: Bytes of slow weights per chunk of the sync: one core's L2 cache on the machine it was tuned
#: on (1 MiB), so the copy reads the slow weights the lerp has just written from the cache;
#: chunks made the sync cheaper than one call over all tensors (the timings are in
#: ``bench/RESULTS.md``).
SYNC_CHUNK_BYTES = 1 << 20


def lookahead_sync(slow: list[torch.Tensor], fast: list[torch.Tensor], alpha: float) -> None:
    """``slow <- slow + alpha (fast - slow); fast <- slow``, with multi-tensor kernels on chunks of tensors."""
    start = 0
    while start < len(slow):
        stop, size = start + 1, slow[start].nbytes
        while stop < len(slow) and size + slow[stop].nbytes <= SYNC_CHUNK_BYTES:
            size += slow[stop].nbytes
            stop += 1
        torch._foreach_lerp_(slow[start:stop], fast[start:stop], alpha)
        torch._foreach_copy_(fast[start:stop], slow[start:stop])
        start = stop


class Lookahead(OptimizerWrapper):
    """Lookahead around ``base_optimizer`` (Zhang et al. 2019); see the module docstring.

    Args:
        base_optimizer: the optimizer that takes the fast steps; this wrapper shares its
            ``param_groups``, so a scheduler attached to either changes the same learning rate.
        k: fast steps between two syncs (>= 1).
        alpha: slow step size, in [0, 1].

    ``state_dict()`` holds the base's state, the slow weights and the step counter.
    """

    key = "lookahead"
    elementwise = True
    paper = "Zhang, Lucas, Hinton & Ba 2019"

    def __init__(self, base_optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        self.k = check_int("k", k)
        self.alpha = check_number("alpha", alpha, high=1.0, high_open=False)
        super().__init__(base_optimizer)
        self.fast_steps = 0
        self.slow: dict[torch.Tensor, torch.Tensor] = {}

    def _ensure_slow(self) -> list[torch.Tensor]:
        params = self._params()
        if len(self.slow) != len(params):
            for p in params:
                if p not in self.slow:
                    self.slow[p] = p.detach().clone()
        return params

    def step(self, closure=None):
        """One fast step of the base optimizer, then the slow-weight sync every ``k`` steps."""
        params = self._ensure_slow()  # before the first fast step: phi_0 = theta_0
        loss = self.base.step(closure)
        self.fast_steps += 1
        if self.fast_steps % self.k == 0:
            with torch.no_grad():
                lookahead_sync([self.slow[p] for p in params], params, self.alpha)
        return loss

    def _wrapper_state(self) -> dict[str, Any]:
        index = {p: i for i, p in enumerate(self._params())}
        return {"k": self.k, "alpha": self.alpha, "fast_steps": self.fast_steps,
                "slow": {index[p]: s.clone() for p, s in self.slow.items() if p in index}}

    def _load_wrapper_state(self, state: dict[str, Any]) -> None:
        params = self._params()
        self.k, self.alpha = check_int("k", state["k"]), check_number("alpha", state["alpha"], high=1.0, high_open=False)
        self.fast_steps = int(state["fast_steps"])
        self.slow = {params[int(i)]: s.to(device=params[int(i)].device, dtype=params[int(i)].dtype).clone()
                     for i, s in state["slow"].items()}

    def _clear_wrapper_state(self) -> None:
        self.slow.clear()  # the next step takes the weights as they are then for the slow ones
        self.fast_steps = 0

    def _describe(self) -> str:
        return f"k={self.k}, alpha={self.alpha}"
