"""SWATS: start with Adam, switch to SGD (Keskar & Socher 2017, "Improving generalization
performance by switching from Adam to SGD"), Algorithm 1 as the paper writes it.

Per parameter group, with step k = 1, 2, ... and g_k the gradient::

    Adam phase:
        m_k = beta1 m + (1 - beta1) g_k
        a_k = beta2 a + (1 - beta2) g_k^2
        p_k = -lr * sqrt(1 - beta2^k) / (1 - beta1^k) * m_k / (sqrt(a_k) + eps)
        w_k = w + p_k
        if p_k . g_k != 0:                                   (dot products over the group)
            gamma_k  = (p_k . p_k) / (-p_k . g_k)             (the projected SGD rate)
            lambda_k = beta2 lambda + (1 - beta2) gamma_k
            if k > 1 and |lambda_k / (1 - beta2^k) - gamma_k| < eps:
                switch to SGD with Lambda = lambda_k / (1 - beta2^k)
    SGD phase:
        v_k = beta1 v + g_k             (v starts at 0)
        w_k = w - (1 - beta1) * Lambda * v_k

The switch test needs the two dot products on the host: one transfer of two numbers per
group per Adam-phase step, never one per tensor. On CPU the fused path is one numba pass that
updates and reduces together (:mod:`descentlab.optim.cpu_kernels`); elsewhere, or without
numba, it is torch's fused Adam plus the reductions. A scheduler keeps working after the
switch: the SGD rate is ``Lambda * lr / lr_at_switch`` (just Lambda when lr is constant).
``weight_decay`` (not in the paper) adds ``weight_decay * w`` to the gradient, as torch's Adam does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from descentlab.optim import cpu_kernels
from descentlab.optim._checks import check_betas, check_number, dense_grads, fused_supported
from descentlab.optim.sgdw import sgdw_foreach, sgdw_fused, sgdw_single

__all__ = ["SWATS", "SwatsPhase", "swats_adam_single", "swats_adam_foreach", "swats_adam_fused",
           "swats_projection"]


def _dots(directions: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """``[p . g, p . p]`` over all tensors, as one 2-vector (no host transfer)."""
    pg = torch.stack([torch.dot(d.reshape(-1), g.reshape(-1)) for d, g in zip(directions, grads)]).sum()
    pp = torch.stack([torch.dot(d.reshape(-1), d.reshape(-1)) for d in directions]).sum()
    return torch.stack([pg, pp])


def swats_adam_single(params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, eps, step) -> torch.Tensor:
    """One Adam-phase step tensor by tensor; returns ``[p_k . g_k, p_k . p_k]``."""
    scale = -lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    directions = []
    for p, g, m, a in zip(params, grads, exp_avgs, exp_avg_sqs):
        m.lerp_(g, 1 - beta1)
        a.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        d = m.div(a.sqrt().add_(eps)).mul_(scale)
        p.add_(d)
        directions.append(d)
    return _dots(directions, grads)


def swats_adam_foreach(params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, eps, step) -> torch.Tensor:
    """The same step with multi-tensor kernels."""
    scale = -lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denom, eps)
    directions = torch._foreach_div(exp_avgs, denom)
    torch._foreach_mul_(directions, scale)
    torch._foreach_add_(params, directions)
    return _dots(directions, grads)


def swats_adam_fused(params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, eps, step,
                     scratch: tuple[torch.Tensor, list[torch.Tensor]]) -> torch.Tensor:
    """The same step on torch's fused Adam kernel.

    The kernel runs on a zeroed scratch copy of the weights, so it leaves p_k there; with
    eps / sqrt(1 - beta2^k) in place of eps, its ``lr / (1 - beta1^k) * m / (sqrt(a / (1 -
    beta2^k)) + eps')`` is exactly the paper's p_k.
    """
    flat, directions = scratch
    flat.zero_()
    steps = [torch.full((), float(step), dtype=torch.float32, device=flat.device)] * len(params)
    torch._fused_adam_(directions, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=lr,
                       beta1=beta1, beta2=beta2, weight_decay=0.0, eps=eps / math.sqrt(1 - beta2 ** step),
                       maximize=False, grad_scale=None, found_inf=None)
    torch._foreach_add_(params, directions)
    pg = torch.stack([torch.dot(d.reshape(-1), g.reshape(-1)) for d, g in zip(directions, grads)]).sum()
    return torch.stack([pg, torch.dot(flat, flat)])


def swats_projection(lam: float, step: int, pg: float, pp: float, beta2: float, eps: float
                     ) -> tuple[float, float | None, float | None]:
    """The paper's switch test: ``(lambda_k, gamma_k or None, Lambda if switching else None)``."""
    if pg == 0:
        return lam, None, None
    gamma = pp / -pg
    lam = beta2 * lam + (1 - beta2) * gamma
    estimate = lam / (1 - beta2 ** step)
    switch = step > 1 and abs(estimate - gamma) < eps
    return lam, gamma, (estimate if switch else None)


@dataclass(frozen=True)
class SwatsPhase:
    """Where one parameter group of SWATS stands.

    Attributes:
        phase: ``"adam"`` or ``"sgd"``.
        step: steps taken by the group.
        switch_step: the step at which it switched to SGD (None while in Adam).
        sgd_lr: the learned SGD rate Lambda (None while in Adam).
        estimate: the current bias-corrected estimate lambda_k / (1 - beta2^k).
    """

    phase: str
    step: int
    switch_step: int | None
    sgd_lr: float | None
    estimate: float | None


class SWATS(torch.optim.Optimizer):
    """Adam that switches to SGD with momentum per parameter group (Keskar & Socher 2017).

    See the module docstring for the update. The state of the switch lives in each
    ``param_group`` (``phase``, ``step``, ``switch_step``, ``sgd_lr``, ``lambda``), so it is
    saved by ``state_dict`` and read with :meth:`phases`.

    Args:
        params: parameters or parameter groups.
        lr: Adam's learning rate alpha.
        betas: (beta1, beta2); beta1 is also the SGD phase's momentum.
        eps: Adam's epsilon and the switch test's tolerance (the paper uses 1e-9 for both).
        weight_decay: L2 penalty added to the gradient.
        foreach / fused: the kernel path (default: fused where torch has fused kernels for the
            params' device and dtype, else multi-tensor). Fused on CPU with numba installed is
            one pass that updates and reduces; otherwise torch's fused Adam/SGD kernels.

    Not element-wise: the switch depends on dot products over the whole group.
    """

    paper = "Keskar & Socher 2017"

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-9,
                 weight_decay: float = 0.0, *, foreach: bool | None = None, fused: bool | None = None) -> None:
        check_number("lr", lr)
        betas = check_betas(betas)
        check_number("eps", eps)
        check_number("weight_decay", weight_decay)
        if fused and foreach:
            raise ValueError("fused and foreach cannot both be True")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach, fused=fused,
                        phase="adam", step=0, switch_step=None, sgd_lr=None, switch_lr=None, **{"lambda": 0.0})
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["fused"] and not fused_supported(group["params"]):
                raise ValueError("fused=True needs floating-point params on a device with fused kernels")
        self._scratch: dict[int, tuple[tuple[int, ...], torch.Tensor, list[torch.Tensor]]] = {}

    def phases(self) -> list[SwatsPhase]:
        """One :class:`SwatsPhase` per parameter group."""
        out = []
        for group in self.param_groups:
            k = group["step"]
            estimate = group["lambda"] / (1 - group["betas"][1] ** k) if k else None
            out.append(SwatsPhase(group["phase"], k, group["switch_step"], group["sgd_lr"], estimate))
        return out

    def _fused(self, group, params) -> bool:
        if group["fused"] is None and group["foreach"] is None:
            return fused_supported(params)
        return bool(group["fused"])

    def _scratch_for(self, index: int, params: list[torch.Tensor]):
        key = tuple(id(p) for p in params)
        cached = self._scratch.get(index)
        if cached is None or cached[0] != key:
            flat = torch.empty(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
            views, offset = [], 0
            for p in params:
                views.append(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
            cached = self._scratch[index] = (key, flat, views)
        return cached[1], cached[2]

    @torch.no_grad()
    def step(self, closure=None):
        """One step of every group, in its own phase."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            dense_grads("SWATS", grads)
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            group["step"] += 1
            fused = self._fused(group, params)
            if group["phase"] == "sgd":
                self._sgd_step(group, params, grads, fused)
            else:
                self._adam_step(index, group, params, grads, fused)
        return loss

    def _adam_step(self, index, group, params, grads, fused) -> None:
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        for p, s in zip(params, states):
            if "exp_avg" not in s:
                s["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                s["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        hp = dict(lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], step=group["step"])
        m, a = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        if fused and cpu_kernels.available([*params, *grads, *m, *a]):
            pg, pp = cpu_kernels.swats_adam_step(params, grads, m, a, **hp)
        else:
            if fused:
                dots = swats_adam_fused(params, grads, m, a, scratch=self._scratch_for(index, params), **hp)
            elif group["foreach"] is False:
                dots = swats_adam_single(params, grads, m, a, **hp)
            else:
                dots = swats_adam_foreach(params, grads, m, a, **hp)
            pg, pp = dots.double().tolist()  # the one host transfer of this group's step
        group["lambda"], _, sgd_lr = swats_projection(group["lambda"], group["step"], pg, pp, beta2, group["eps"])
        if sgd_lr is not None:
            group.update(phase="sgd", switch_step=group["step"], sgd_lr=sgd_lr, switch_lr=group["lr"])
            self._scratch.pop(index, None)
            for s in states:  # SGD never reads Adam's moments again
                del s["exp_avg"], s["exp_avg_sq"]

    def _sgd_step(self, group, params, grads, fused) -> None:
        beta1 = group["betas"][0]
        rate = (1 - beta1) * group["sgd_lr"] * (group["lr"] / group["switch_lr"] if group["switch_lr"] else 1.0)
        path = sgdw_fused if fused else (sgdw_single if group["foreach"] is False else sgdw_foreach)
        states = [self.state[p] for p in params]
        for first_step in (False, True):
            index = [i for i, s in enumerate(states) if ("momentum_buffer" in s) != first_step]
            if not index:
                continue
            bufs = [None if first_step else states[i]["momentum_buffer"] for i in index]
            path([params[i] for i in index], [grads[i] for i in index], bufs, lr=rate, momentum=beta1,
                 dampening=0.0, weight_decay=0.0, nesterov=False, first_step=first_step)
            for i, b in zip(index, bufs):
                states[i]["momentum_buffer"] = b
