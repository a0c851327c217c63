"""Choose torch's fastest correct kernel path for a torch.optim class, per set of params.

torch.optim's own default on CPU is the for-loop path; its fused kernels (SGD, Adam, AdamW,
Adagrad) run several times faster there and sit near the memory-bandwidth bound. For the
classes without fused kernels, the multi-tensor (foreach) path beats the for-loop one on
CPU only when the tensors are small (see :data:`CPU_FOREACH_MAX_MEAN_NUMEL`; measured with
``bench/optim_step.py --registry``), and everywhere on accelerators. The registry asks :func:`fast_path_kwargs` which
flags to pass, unless the caller chose ``fused`` / ``foreach`` / ``differentiable`` itself.

SGD and Adagrad accept sparse gradients only on the for-loop path, and a sparse gradient
is only seen at step time, so :func:`sparse_fallback` (a step pre-hook) moves a group with a
sparse gradient back to that path before torch's fused kernel would refuse it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

__all__ = ["fast_path_kwargs", "sparse_fallback", "torch_fuses", "SPARSE_CAPABLE"]

#: On CPU torch's foreach ops are a C++ loop over per-tensor kernels that materialise every
#: intermediate list: faster than the Python for-loop for many small tensors, slower for few
#: large ones (``bench/optim_step.py --registry`` times both; the measurements behind the
#: threshold are in ``bench/RESULTS.md``). Above this mean tensor size the registry keeps
#: torch's for-loop path on CPU.
CPU_FOREACH_MAX_MEAN_NUMEL = 100_000

#: torch classes whose for-loop path takes sparse gradients (and so need the fallback hook).
SPARSE_CAPABLE = (torch.optim.SGD, torch.optim.Adagrad)


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def fast_path_kwargs(factory: Callable[..., Any], params: Sequence[torch.Tensor],
                     hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """``{"fused": True}``, ``{"foreach": True}``, ``{"foreach": False}`` or ``{}`` for ``factory`` over ``params``."""
    if any(hyperparameters.get(k) is not None for k in ("fused", "foreach")) or hyperparameters.get("differentiable"):
        return {}
    plain = all(type(p) in (torch.Tensor, torch.nn.Parameter) for p in params)
    if _accepts(factory, "fused") and torch_fuses(factory, params):
        return {"fused": True}
    if not (_accepts(factory, "foreach") and plain and params):
        return {}
    on_cpu = all(p.device.type == "cpu" for p in params)
    if on_cpu and sum(p.numel() for p in params) / len(params) > CPU_FOREACH_MAX_MEAN_NUMEL:
        return {"foreach": False}
    return {"foreach": True}


def torch_fuses(cls: Callable[..., Any], tensors: Iterable[torch.Tensor]) -> bool:
    """Whether torch's optimizer class ``cls`` takes ``fused=True`` for all of ``tensors``.

    Asked of torch itself: once per process and (device, dtype) pair, a ``cls(..., fused=True)``
    takes one step on a one-element tensor (torch checks the device and dtype on the first step).
    Tensor subclasses (e.g. distributed tensors) are left to torch's other paths.
    """
    kinds = set()
    for t in tensors:
        if type(t) not in (torch.Tensor, torch.nn.Parameter):
            return False
        kinds.add((t.device, t.dtype))
    return bool(kinds) and all(_fuses(cls, device, dtype) for device, dtype in kinds)


@functools.cache
def _fuses(cls: Callable[..., Any], device: torch.device, dtype: torch.dtype) -> bool:
    probe = torch.zeros(1, device=device, dtype=dtype, requires_grad=True)
    probe.grad = torch.zeros_like(probe)
    try:
        cls([probe], fused=True).step()
    except (RuntimeError, ValueError, TypeError):  # NotImplementedError is a RuntimeError
        return False
    return True


def sparse_fallback(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Step pre-hook: groups on a fused/foreach path with a sparse gradient go to the for-loop path."""
    for group in optimizer.param_groups:
        if (group.get("fused") or group.get("foreach")) and any(
                p.grad is not None and p.grad.is_sparse for p in group["params"]):
            group["fused"] = False
            group["foreach"] = False
