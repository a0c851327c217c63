"""Lookahead's sync folded into torch's fused CPU Adam step, bit for bit, in one pass.

Every k-th step, Lookahead around Adam runs Adam's step and then the sync
``phi <- lerp(phi, theta, alpha); theta <- phi``. On CPU both are memory-bound: torch's
fused Adam moves 7 weight-sized streams (reads theta, g, m, v; writes theta, m, v) and the
sync 4 more (reads and writes theta and phi). Done in Adam's pass, while theta is in a
register, the sync adds only phi's read and write: a sync step measured 1.15-1.26x a fused
Adam step instead of 1.36-1.56x (``bench/optim_step.py`` times both ways).

The folded step is *torch's* Adam: :func:`folded_step` reads torch's own state (``step``,
``exp_avg``, ``exp_avg_sq``) and writes what ``torch._fused_adam_`` then ``Tensor.lerp_`` would,
bit for bit. That takes torch's kernel as compiled, not as written: its vector body and its
last ``n % W`` elements per tensor (``W`` = one SIMD register of elements) place their fused
multiply-adds differently, and the kernel here places them the same way. Since that depends
on how torch was built, each formula variant (dtype, weight-decay mode, ``maximize``, ...) is
first run on a probe beside torch's own kernel; any differing bit sends that variant back to
``base.step()`` plus the separate sync for the rest of the process.

Only plain configurations fold: ``torch.optim.Adam`` / ``AdamW`` (not subclasses that change
``step``) with ``fused=True``, no AMSGrad, no step hooks, no gradient scaler, number
hyperparameters, float32/float64 contiguous CPU tensors, and numba installed. Anything else
takes the two-pass path, which computes the same numbers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.optim.optimizer as torch_optimizer

from descentlab.optim import cpu_kernels
from descentlab.optim._pool import run_split

__all__ = ["plain", "folded_step", "simd_width"]

_PROBE_SIZES = (*range(1, 34), 1000, 4099)
_verified: dict[tuple, bool] = {}


@functools.cache
def simd_width(dtype: torch.dtype) -> int:
    """Elements of ``dtype`` in one of torch's CPU vector registers (its ``Vectorized::size()``)."""
    register_bytes = 64 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 32
    return register_bytes // torch.empty((), dtype=dtype).element_size()


@functools.cache
def _kernel(np_dtype):
    """The compiled Adam + sync kernel for one dtype (compiled on first use, cached on disk)."""
    numba = cpu_kernels._numba()
    as_pointer, fma = cpu_kernels._as_pointer(np_dtype), cpu_kernels._fma()

    # No fastmath: every rounding is written out, fused multiply-adds only where torch's are.
    @numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")
    def element(p, g, m, v, s, i, c, tail):
        (c1, c1_minus_1, small1, b2, c2, bc2_sqrt, eps, neg_step, wd, coupled, shrink, maximize,
         alpha, alpha_minus_1, small_alpha) = c
        gi = -g[i] if maximize else g[i]
        if coupled:  # Adam's L2 term; torch skips it when weight_decay is 0, and so must this
            gi = fma(p[i], wd, gi)
        mi = fma(c1, gi - m[i], m[i]) if small1 else fma(c1_minus_1, gi - m[i], gi)
        # torch's compiled vector body and scalar tail fuse this sum's two products differently
        vi = fma(v[i], b2, c2 * gi * gi) if tail else fma(c2 * gi, gi, v[i] * b2)
        pi = p[i] * shrink + neg_step * mi / (math.sqrt(vi) / bc2_sqrt + eps)  # shrink: AdamW's decay, else 1
        si = fma(alpha, pi - s[i], s[i]) if small_alpha else fma(alpha_minus_1, pi - s[i], pi)
        m[i] = mi
        v[i] = vi
        s[i] = si
        p[i] = si

    @numba.njit(nogil=True, cache=True, error_model="numpy")
    def kernel(items, first, last, c):
        for item in range(first, last):
            n = items[item, 5]
            body = min(n, max(0, -items[item, 6]))  # elements before the tensor's last n % W
            p = numba.carray(as_pointer(items[item, 0]), n)
            g = numba.carray(as_pointer(items[item, 1]), n)
            m = numba.carray(as_pointer(items[item, 2]), n)
            v = numba.carray(as_pointer(items[item, 3]), n)
            s = numba.carray(as_pointer(items[item, 4]), n)
            for i in range(body):
                element(p, g, m, v, s, i, c, False)
            for i in range(body, n):
                element(p, g, m, v, s, i, c, True)

    return kernel


def _items(lists: Sequence[Sequence[torch.Tensor]], width: int) -> np.ndarray:
    # the last column is (chunk start - start of the tensor's tail), so the kernel knows which
    # elements torch's kernel leaves to its scalar loop: those past numel - numel % width
    vector_ends = [t.numel() - t.numel() % width for t in lists[0]]
    return cpu_kernels._work_items(lists, starts=-np.asarray(vector_ends, dtype=np.int64))


def _run(lists, group: dict[str, Any], step: float, alpha: float) -> None:
    params = lists[0]
    np_dtype = cpu_kernels._DTYPES[params[0].dtype]
    cast = np_dtype  # numpy scalars keep their dtype through the arithmetic below
    beta1, beta2 = group["betas"]
    lr, wd, decoupled = group["lr"], group["weight_decay"], group["decoupled_weight_decay"]
    # as torch's kernel: coefficients computed in double, cast to the element type, and the
    # lerps' ``weight - 1`` computed in the element type
    c1, one, a = cast(1 - beta1), cast(1), cast(alpha)
    decoupled_decay = wd != 0 and decoupled
    scalars = (c1, c1 - one, bool(abs(c1) < 0.5), cast(beta2), cast(1 - beta2),
               cast(math.sqrt(1 - beta2 ** step)), cast(group["eps"]), cast(-(lr / (1 - beta1 ** step))),
               cast(wd), wd != 0 and not decoupled, cast(1 - lr * wd) if decoupled_decay else one,
               bool(group["maximize"]), a, a - one, bool(abs(a) < 0.5))
    items = _items(lists, simd_width(params[0].dtype))
    kernel = _kernel(np_dtype)
    run_split(lambda first, last: kernel(items, first, last, scalars), items[:, 5].tolist())
    cpu_kernels._written([*params, *lists[2], *lists[3], *lists[4]])


def _variant(group: dict[str, Any], dtype: torch.dtype, alpha: float) -> tuple:
    """What selects a formula (not the values): each such variant is checked against torch once."""
    beta1 = group["betas"][0]
    return (dtype, simd_width(dtype), group["weight_decay"] != 0, bool(group["decoupled_weight_decay"]),
            bool(group["maximize"]), abs(1 - beta1) < 0.5, abs(alpha) < 0.5)


def _matches_torch(group: dict[str, Any], dtype: torch.dtype, alpha: float) -> bool:
    """Run torch's fused Adam + lerp and the folded kernel on a probe; True if every bit agrees."""
    key = _variant(group, dtype, alpha)
    if key not in _verified:
        generator = torch.Generator().manual_seed(0)

        def draw(scale: float, positive: bool = False) -> list[torch.Tensor]:
            out = [torch.randn(n, generator=generator, dtype=dtype) * scale for n in _PROBE_SIZES]
            return [t.abs() for t in out] if positive else out

        theirs = [draw(1.0), draw(1.0), draw(0.1), draw(0.01, positive=True), draw(1.0)]
        ours = [[t.clone() for t in tensors] for tensors in theirs]
        step = 3.0
        fused = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
        p, g, m, v, s = theirs
        fused(p, g, m, v, [], [torch.tensor(step) for _ in p], amsgrad=False, lr=group["lr"],
              beta1=group["betas"][0], beta2=group["betas"][1], weight_decay=group["weight_decay"],
              eps=group["eps"], maximize=group["maximize"])
        for slow, fast in zip(s, p):
            slow.lerp_(fast, alpha)
            fast.copy_(slow)
        _run(ours, group, step, alpha)
        _verified[key] = all(torch.equal(a, b) for x, y in zip(theirs, ours) for a, b in zip(x, y))
    return _verified[key]


def plain(base: torch.optim.Optimizer) -> bool:
    """True when ``base.step()`` would be exactly torch's fused CPU Adam with nothing around it."""
    if not isinstance(base, torch.optim.Adam) or type(base).step is not torch.optim.Adam.step:
        return False
    if (base._optimizer_step_pre_hooks or base._optimizer_step_post_hooks
            or torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks):
        return False
    if getattr(base, "grad_scale", None) is not None or getattr(base, "found_inf", None) is not None:
        return False
    numbers = (int, float)
    return all(group.get("fused") and not group["amsgrad"] and not group["differentiable"]
               and not group["capturable"] and isinstance(group["lr"], numbers)
               and all(isinstance(group[name], numbers) for name in ("eps", "weight_decay"))
               and all(isinstance(beta, numbers) for beta in group["betas"])
               for group in base.param_groups)


def folded_step(base: torch.optim.Optimizer, slow: dict[torch.Tensor, torch.Tensor], alpha: float) -> bool:
    """``base.step()`` then Lookahead's sync of each parameter with a gradient, in one pass; False when it cannot.

    ``base`` must satisfy :func:`plain`; ``slow`` maps each parameter to its slow weights.
    Parameters without a gradient (Adam skips them) are left for the caller to sync. When
    this returns False nothing has changed: a first step (Adam's lazy
    state), mixed step counts, tensors the kernel cannot take, or a formula variant whose
    probe differed from torch.
    """
    groups = []
    for group in base.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        states = [base.state.get(p) for p in params]
        if not all(states) or any(len(state) != 3 for state in states):
            return False
        lists = [params, [p.grad for p in params], [st["exp_avg"] for st in states],
                 [st["exp_avg_sq"] for st in states], [slow[p] for p in params]]
        steps = [st["step"] for st in states]
        if params and not (cpu_kernels.available([t for tensors in lists for t in tensors])
                           and len({float(t) for t in steps}) == 1
                           and _matches_torch(group, params[0].dtype, alpha)):
            return False
        groups.append((group, lists, steps))
    with torch.no_grad():
        for group, lists, steps in groups:
            if lists[0]:
                torch._foreach_add_(steps, 1)  # as torch's Adam, before its kernel reads them
                _run(lists, group, float(steps[0]), alpha)
    return True
