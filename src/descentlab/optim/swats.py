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

The Adam phase is torch's Adam (:func:`torch.optim.adam.adam`, with its fused, multi-tensor
and for-loop kernels), run on a zeroed scratch copy of the weights so that it leaves the step
p_k it took there; torch divides by ``sqrt(a_k / (1 - beta2^k)) + eps'``, which is the paper's
``sqrt(a_k) + eps`` for ``eps' = eps / sqrt(1 - beta2^k)``. The step is then added to the
weights, and the two dot products reach the host as one pair of numbers per group and step.
The SGD phase is torch's SGD with momentum ``beta1`` and rate ``(1 - beta1) * Lambda``. A
scheduler keeps working after the switch: the SGD rate is ``Lambda * lr / lr_at_switch`` (just
Lambda when lr is constant). ``weight_decay`` (not in the paper) adds ``weight_decay * w`` to
the gradient, as torch's Adam does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.adam import adam

from descentlab.optim._checks import check_betas, check_number, dense_grads
from descentlab.optim._flat import FlatScratch
from descentlab.optim.fastpath import torch_fuses
from descentlab.optim.sgdw import sgd_momentum_step

__all__ = ["SWATS", "SwatsPhase", "swats_projection"]


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
        foreach / fused: torch's kernel path for both phases, as in ``torch.optim.Adam``.
            Default: fused where torch has fused Adam and SGD for the params' device and dtype
            (decided per group when it is added, and shown in ``param_groups``), else torch's
            default.

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
        self._scratch: dict[int, _AdamScratch] = {}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        """torch.optim's ``add_param_group``; a group left on the default path gets torch's fused kernels where it has them."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        fuses = torch_fuses(torch.optim.Adam, group["params"]) and torch_fuses(torch.optim.SGD, group["params"])
        if group["fused"] is None and group["foreach"] is None:
            group["fused"] = fuses or None
        elif group["fused"] and not fuses:
            self.param_groups.pop()
            raise ValueError("fused=True needs floating-point params on a device where torch has fused Adam and SGD")

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._scratch = {}  # torch.optim pickles defaults, state and groups only; scratch is rebuilt

    def phases(self) -> list[SwatsPhase]:
        """One :class:`SwatsPhase` per parameter group."""
        out = []
        for group in self.param_groups:
            k = group["step"]
            estimate = group["lambda"] / (1 - group["betas"][1] ** k) if k else None
            out.append(SwatsPhase(group["phase"], k, group["switch_step"], group["sgd_lr"], estimate))
        return out

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
            if group["phase"] == "sgd":
                self._sgd_step(group, params, grads)
            else:
                self._adam_step(index, group, params, grads)
        return loss

    def _adam_step(self, index, group, params, grads) -> None:
        beta1, beta2 = group["betas"]
        k = group["step"]
        states = [self.state[p] for p in params]
        for p, s in zip(params, states):
            if "exp_avg" not in s:
                s["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                s["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        scratch = self._scratch.setdefault(index, _AdamScratch())
        steps_taken, flats = scratch.views(params)
        for flat in flats:
            flat.zero_()
        adam(steps_taken, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
             scratch.step_counts(params, k - 1, on_device=bool(group["fused"])), foreach=group["foreach"],
             fused=group["fused"], amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=0.0,
             eps=group["eps"] / math.sqrt(1 - beta2 ** k), maximize=False)
        torch._foreach_add_(params, steps_taken)
        pg, pp = _dots(steps_taken, flats, grads)
        group["lambda"], _, sgd_lr = swats_projection(group["lambda"], k, pg, pp, beta2, group["eps"])
        if sgd_lr is not None:
            group.update(phase="sgd", switch_step=k, sgd_lr=sgd_lr, switch_lr=group["lr"])
            self._scratch.pop(index, None)
            for s in states:  # SGD never reads Adam's moments again
                del s["exp_avg"], s["exp_avg_sq"]

    def _sgd_step(self, group, params, grads) -> None:
        beta1 = group["betas"][0]
        rate = (1 - beta1) * group["sgd_lr"] * (group["lr"] / group["switch_lr"] if group["switch_lr"] else 1.0)
        sgd_momentum_step(self.state, params, grads, lr=rate, momentum=beta1, dampening=0.0, nesterov=False,
                          foreach=group["foreach"], fused=group["fused"])


#: Above this mean tensor size p.g is one dot product per tensor (p and g read once, one Python
#: call each); below it, p * g in place over the scratch and one sum (two calls for all tensors,
#: two more weight-sized passes): with few large tensors the passes cost more than the calls,
#: with many small ones the calls cost more than the passes (measured on bench/optim_step.py's
#: two layouts; the numbers are in ``bench/RESULTS.md``).
DOTS_MIN_MEAN_NUMEL = 100_000


def _dots(steps_taken: list[torch.Tensor], flats: list[torch.Tensor], grads: list[torch.Tensor]) -> tuple[float, float]:
    """``(p . g, p . p)`` as floats, one host transfer per flat buffer (per device and dtype)."""
    pp = [torch.dot(flat, flat) for flat in flats]
    if sum(flat.numel() for flat in flats) >= DOTS_MIN_MEAN_NUMEL * len(steps_taken):
        pg = [torch.stack([torch.dot(p.reshape(-1), g.reshape(-1)) for p, g in zip(steps_taken, grads)
                           if p.device == flat.device and p.dtype == flat.dtype]).sum() for flat in flats]
    else:  # the scratch is not read again this step: overwrite it with p * g
        torch._foreach_mul_(steps_taken, grads)
        pg = [flat.sum() for flat in flats]
    pairs = [torch.stack(pair).tolist() for pair in zip(pg, pp)]
    return sum(pair[0] for pair in pairs), sum(pair[1] for pair in pairs)


class _AdamScratch(FlatScratch):
    """Where SWATS's Adam phase writes its steps, and the step counters torch's Adam reads.

    torch's Adam takes one step-count tensor per parameter and adds 1 to each before it uses
    them; the group's count k is kept in ``param_groups``, so these are set to k - 1 whenever
    they do not already hold it (first use, new parameters, a loaded state dict).
    """

    def __init__(self) -> None:
        super().__init__()
        self._steps: list[torch.Tensor] = []
        self._holds: tuple = ()  # (number of counts, the value they hold, on the params' devices)

    def step_counts(self, params: list[torch.Tensor], before: int, *, on_device: bool) -> list[torch.Tensor]:
        """One tensor per parameter holding ``before`` (torch's Adam adds 1 to each as it steps)."""
        if self._holds != (len(params), before, on_device):
            # torch's fused kernels read the counts on the params' device, its other paths on the CPU
            self._steps = [torch.tensor(float(before), dtype=torch.float32, device=p.device if on_device else "cpu")
                           for p in params]
        self._holds = (len(params), before + 1, on_device)
        return self._steps

    def _build(self, params: list[torch.Tensor]) -> None:
        super()._build(params)
        self._holds = ()
