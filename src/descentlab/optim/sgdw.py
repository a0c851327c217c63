"""SGDW: SGD (with momentum) and *decoupled* weight decay (Loshchilov & Hutter, ICLR 2019).

With L2 regularisation the decay term ``wd * theta`` is added to the gradient and so flows
into the momentum buffer. SGDW keeps them apart: the buffer sees the raw gradient only, and
the weights shrink directly, by the same convention as ``torch.optim.AdamW``::

    theta <- theta * (1 - lr * wd)                        # decoupled decay
    b     <- g                       (first step)
    b     <- momentum * b + (1 - dampening) * g            (later steps)
    d     <- g + momentum * b  if nesterov else  b
    theta <- theta - lr * d

With ``momentum=0`` the buffer is skipped (``d = g``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from descentlab.optim import cpu_kernels
from descentlab.optim._checks import check_number, dense_grads, fused_supported

__all__ = ["SGDW", "sgdw_single", "sgdw_foreach", "sgdw_fused"]


def sgdw_single(params, grads, bufs, *, lr, momentum, dampening, weight_decay, nesterov, first_step) -> None:
    """One SGDW step, tensor by tensor (``bufs`` filled in place on the first step)."""
    for i, (p, g) in enumerate(zip(params, grads)):
        if weight_decay != 0:
            p.mul_(1 - lr * weight_decay)
        d = g
        if momentum != 0:
            if first_step:
                bufs[i] = g.detach().clone()
            else:
                bufs[i].mul_(momentum).add_(g, alpha=1 - dampening)
            d = g.add(bufs[i], alpha=momentum) if nesterov else bufs[i]
        p.add_(d, alpha=-lr)


def sgdw_foreach(params, grads, bufs, *, lr, momentum, dampening, weight_decay, nesterov, first_step) -> None:
    """The same step with multi-tensor (``torch._foreach_*``) kernels."""
    if weight_decay != 0:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    d = grads
    if momentum != 0:
        if first_step:
            bufs[:] = torch._foreach_mul(grads, 1.0)  # a copy: the buffer must not alias the gradient
        else:
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads, alpha=1 - dampening)
        d = torch._foreach_add(grads, bufs, alpha=momentum) if nesterov else bufs
    torch._foreach_add_(params, d, alpha=-lr)


def sgdw_fused(params, grads, bufs, *, lr, momentum, dampening, weight_decay, nesterov, first_step) -> None:
    """The same step fused: one pass on CPU with numba (:mod:`descentlab.optim.cpu_kernels`), else
    one decay pass, then torch's fused SGD kernel with its weight decay off."""
    hp = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
    if cpu_kernels.available([*params, *grads, *(bufs if momentum != 0 and not first_step else [])]):
        cpu_kernels.sgdw_step(params, grads, bufs, first_step=first_step, **hp)
        return
    if weight_decay != 0:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    if momentum != 0 and first_step:
        bufs[:] = [torch.empty_like(g) for g in grads]  # the kernel copies g into them
    torch._fused_sgd_(params, grads, bufs if momentum != 0 else [], weight_decay=0.0, momentum=momentum,
                      lr=lr, dampening=dampening, nesterov=nesterov, maximize=False,
                      is_first_step=first_step and momentum != 0, grad_scale=None, found_inf=None)


class SGDW(torch.optim.Optimizer):
    """SGD with momentum and decoupled weight decay (Loshchilov & Hutter 2019); see the module docstring.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (>= 0).
        momentum: momentum factor in [0, 1).
        dampening: dampening of the gradient added to the buffer, in [0, 1].
        weight_decay: decoupled decay rate; weights shrink by ``1 - lr * weight_decay`` a step.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        foreach: use the multi-tensor path (default: when fused is not used).
        fused: the fused path (default: where torch has a fused SGD kernel for the params'
            device and dtype): one numba pass on CPU where numba is installed, else torch's
            fused SGD after one decay pass.
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
        for group in self.param_groups:
            if group["fused"] and not fused_supported(group["params"]):
                raise ValueError("fused=True needs floating-point params on a device with fused kernels")

    def _path(self, group, params) -> Callable[..., None]:
        fused, foreach = group["fused"], group["foreach"]
        if fused is None and foreach is None:
            fused = fused_supported(params)
        if fused:
            return sgdw_fused
        return sgdw_single if foreach is False else sgdw_foreach

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
            path = self._path(group, params)
            hp = dict(lr=group["lr"], momentum=group["momentum"], dampening=group["dampening"],
                      weight_decay=group["weight_decay"], nesterov=group["nesterov"])
            states = [self.state[p] for p in params]
            if group["momentum"] == 0:
                path(params, grads, [None] * len(params), first_step=False, **hp)
                continue
            # Params seen before continue their buffer; new ones (first step, or a grad that was None) start one.
            for first_step in (False, True):
                index = [i for i, s in enumerate(states) if ("momentum_buffer" in s) != first_step]
                if not index:
                    continue
                bufs = [None if first_step else states[i]["momentum_buffer"] for i in index]
                path([params[i] for i in index], [grads[i] for i in index], bufs, first_step=first_step, **hp)
                for i, b in zip(index, bufs):
                    states[i]["momentum_buffer"] = b
        return loss
