"""Lookahead (Zhang, Lucas, Hinton & Ba, NeurIPS 2019): k fast steps forward, one step back.

Any optimizer takes the *fast* steps. Slow weights phi start at the initial weights theta_0;
after every k fast steps::

    phi   <- phi + alpha * (theta - phi)
    theta <- phi

The sync reads and writes both weight sets every k steps: about 4 / k weight-sized memory
streams per step on top of the base optimizer's. Around torch's fused CPU Adam or AdamW the
sync runs inside the Adam pass of every k-th step instead (:mod:`descentlab.optim.adam_lookahead`),
which adds only the slow weights' read and write: 2 / k streams.
"""

from __future__ import annotations

from typing import Any

import torch

from descentlab.optim import adam_lookahead, cpu_kernels
from descentlab.optim._checks import check_int, check_number
from descentlab.optim.wrapper import OptimizerWrapper

__all__ = ["Lookahead", "lookahead_sync_single", "lookahead_sync_foreach"]

# Sync chunk size: lerp then copy one chunk at a time, so the copy reads weights still in cache.
_CHUNK_BYTES = 1 << 20


def lookahead_sync_single(slow: list[torch.Tensor], fast: list[torch.Tensor], alpha: float) -> None:
    """``slow <- slow + alpha (fast - slow); fast <- slow``, tensor by tensor."""
    for s, f in zip(slow, fast):
        s.lerp_(f, alpha)
        f.copy_(s)


def lookahead_sync_foreach(slow: list[torch.Tensor], fast: list[torch.Tensor], alpha: float) -> None:
    """The same sync with multi-tensor kernels, in cache-sized chunks of tensors."""
    start = 0
    while start < len(slow):
        stop, size = start, 0
        while stop < len(slow) and (stop == start or size + slow[stop].nbytes <= _CHUNK_BYTES):
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
        foreach: sync with multi-tensor kernels (``True``) or tensor by tensor (``False``).
            Default (``None``): on CPU with numba installed, the sync folded into the step
            of a plain fused ``torch.optim.Adam``/``AdamW`` (same bits), else one numba pass
            over all tensors (``cpu_kernels.lookahead_sync``); without numba, tensor by tensor
            (measured faster there than multi-tensor: each tensor's copy reads weights its lerp
            just left in cache); multi-tensor elsewhere.

    ``state_dict()`` holds the base's state, the slow weights and the step counter. Setting
    :attr:`fold` to False keeps the sync a pass of its own (the benchmark compares the two).
    """

    key = "lookahead"
    elementwise = True
    paper = "Zhang, Lucas, Hinton & Ba 2019"

    def __init__(self, base_optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5,
                 *, foreach: bool | None = None) -> None:
        self.k = check_int("k", k)
        self.alpha = check_number("alpha", alpha, high=1.0, high_open=False)
        super().__init__(base_optimizer)
        self.fused = foreach is None
        #: Fold the sync into a plain fused Adam's step where it can (see ``foreach``).
        self.fold = self.fused
        if foreach is None:
            foreach = any(p.device.type != "cpu" for g in self.param_groups for p in g["params"])
        self.foreach = bool(foreach)
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
        if self.fold and (self.fast_steps + 1) % self.k == 0 and adam_lookahead.plain(self.base):
            loss = None
            if closure is not None:  # what Adam.step does first
                with torch.enable_grad():
                    loss = closure()
            if adam_lookahead.folded_step(self.base, self.slow, self.alpha):
                self._sync([p for p in params if p.grad is None])
            else:
                self.base.step()
                self._sync(params)
            self.fast_steps += 1
            return loss
        loss = self.base.step(closure)
        self.fast_steps += 1
        if self.fast_steps % self.k == 0:
            self._sync(params)
        return loss

    def _sync(self, params: list[torch.Tensor]) -> None:
        if not params:
            return
        slow, fast = [self.slow[p] for p in params], [p.detach() for p in params]
        with torch.no_grad():
            if self.fused and cpu_kernels.available([*slow, *fast]):
                cpu_kernels.lookahead_sync(slow, fast, self.alpha)
            else:
                sync = lookahead_sync_foreach if self.foreach else lookahead_sync_single
                sync(slow, fast, self.alpha)

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

    def _describe(self) -> str:
        return f"k={self.k}, alpha={self.alpha}"
