"""SGDW: SGD (with momentum) and *decoupled* weight decay (Loshchilov & Hutter, ICLR 2019).

With L2 regularisation the decay term ``wd * theta`` is added to the gradient and so flows
into the momentum buffer. SGDW keeps them apart: the buffer sees the raw gradient only, and
the weights shrink directly, by the same convention as ``torch.optim.AdamW``::

    theta <- theta * (1 - lr * wd)                        # decoupled decay
    b     <- g                       (first step)
    b     <- momentum * b + (1 - dampening) * g            (later steps)
    d     <- g + momentum * b  if nesterov else  b
    theta <- theta - lr * d

With ``momentum=0`` the buffer is skipped (``d = g``). The momentum step is torch's own
(:func:`torch.optim.sgd.sgd`, with its fused, multi-tensor and for-loop kernels); the decay
is one multi-tensor multiply per group before it.
"""

from __future__ import annotations

import torch
from torch.optim.sgd import sgd

from descentlab.optim._checks import check_number, dense_grads
from descentlab.optim.fastpath import torch_fuses

__all__ = ["SGDW", "sgd_momentum_step"]


def sgd_momentum_step(state, params: list[torch.Tensor], grads: list[torch.Tensor], *, lr: float, momentum: float,
                      dampening: float, nesterov: bool, foreach: bool | None, fused: bool | None) -> None:
    """torch's SGD step (no weight decay) on ``params``, its momentum buffers kept in ``state[p]``.

    ``b <- g`` on a parameter's first step, ``b <- momentum b + (1 - dampening) g`` after;
    ``theta <- theta - lr d`` with ``d = g + momentum b`` (Nesterov) or ``b``.
    """
    hp = dict(weight_decay=0.0, momentum=momentum, lr=lr, dampening=dampening, nesterov=nesterov, maximize=False,
              foreach=foreach, fused=fused)
    if momentum == 0:
        sgd(params, grads, [None] * len(params), **hp)
        return
    states = [state[p] for p in params]
    # torch's fused kernel starts all buffers of a call or none, so params that have one and
    # params on their first step (new, or whose gradient was None until now) go in two calls.
    for first in (False, True):
        index = [i for i, s in enumerate(states) if ("momentum_buffer" in s) != first]
        if index:
            bufs = [None if first else states[i]["momentum_buffer"] for i in index]
            sgd([params[i] for i in index], [grads[i] for i in index], bufs, **hp)
            for i, b in zip(index, bufs):
                states[i]["momentum_buffer"] = b


class SGDW(torch.optim.Optimizer):
    """SGD with momentum and decoupled weight decay (Loshchilov & Hutter 2019); see the module docstring.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (>= 0).
        momentum: momentum factor in [0, 1).
        dampening: dampening of the gradient added to the buffer, in [0, 1].
        weight_decay: decoupled decay rate; weights shrink by ``1 - lr * weight_decay`` a step.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        foreach / fused: torch's kernel path for the momentum step, as in ``torch.optim.SGD``.
            Default: fused where torch has a fused SGD for the params' device and dtype (decided
            per group when it is added, and shown in ``param_groups``), else torch's default.
    """

    paper = "Loshchilov & Hutter 2019"

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, foreach: bool | None = None,
                 fused: bool | None = None) -> None:
        check_number("lr", lr)
        check_number("momentum", momentum, high=1.0)
        check_number("dampening", dampening, high=1.0, high_open=False)
        check_number("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov requires momentum > 0 and dampening == 0")
        if fused and foreach:
            raise ValueError("fused and foreach cannot both be True")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=bool(nesterov), foreach=foreach, fused=fused)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        """torch.optim's ``add_param_group``; a group left on the default path gets torch's fused kernel where it has one."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["fused"] is None and group["foreach"] is None:
            group["fused"] = torch_fuses(torch.optim.SGD, group["params"]) or None
        elif group["fused"] and not torch_fuses(torch.optim.SGD, group["params"]):
            self.param_groups.pop()
            raise ValueError("fused=True needs floating-point params on a device where torch has a fused SGD")

    @torch.no_grad()
    def step(self, closure=None):
        """One step; ``closure`` (re-evaluates the loss) is optional, as in torch.optim."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            dense_grads("SGDW", grads)
            if group["weight_decay"] != 0:
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            sgd_momentum_step(self.state, params, grads, lr=group["lr"], momentum=group["momentum"],
                              dampening=group["dampening"], nesterov=group["nesterov"], foreach=group["foreach"],
                              fused=group["fused"])
        return loss
