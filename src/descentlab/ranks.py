"""The ranks of a ``torch.distributed`` job, for code that must decide the same thing on every rank.

Under ``torchrun`` each rank measures on its own share of the data, and a decision made from a
local measurement or from the clock (a budget) could differ between ranks: the ranks would then
take different paths (one diagnoses, another trains on) and deadlock on the next collective. So
every such decision is agreed on: :func:`all_agree` (every rank says yes), :func:`largest`,
:func:`smallest`, :func:`total` over the ranks; without a process group each returns its input.
"""

from __future__ import annotations

import torch

__all__ = ["distributed", "rank", "world_size", "all_agree", "largest", "smallest", "total", "summed", "largest_each",
           "unwrap"]


def distributed() -> bool:
    """A ``torch.distributed`` process group is initialised."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return torch.distributed.get_rank() if distributed() else 0


def world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return torch.distributed.get_world_size() if distributed() else 1


def _reduce(value: float, op) -> float:
    if not distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    backend = torch.distributed.get_backend()
    if backend == "nccl":
        t = t.cuda()
    torch.distributed.all_reduce(t, op=op)
    return float(t.item())


def all_agree(flag: bool) -> bool:
    """``True`` on every rank when it is ``True`` on every rank."""
    return _reduce(1.0 if flag else 0.0, torch.distributed.ReduceOp.MIN if distributed() else None) > 0.5


def largest(value: float) -> float:
    """The largest ``value`` over the ranks."""
    return _reduce(value, torch.distributed.ReduceOp.MAX if distributed() else None)


def smallest(value: float) -> float:
    """The smallest ``value`` over the ranks."""
    return _reduce(value, torch.distributed.ReduceOp.MIN if distributed() else None)


def total(value: float) -> float:
    """The sum of ``value`` over the ranks."""
    return _reduce(value, torch.distributed.ReduceOp.SUM if distributed() else None)


def largest_each(t: torch.Tensor) -> torch.Tensor:
    """The largest value of each element of ``t`` over the ranks (a new tensor; ``t`` itself
    without a process group)."""
    return _reduced(t, "MAX")


def summed(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the ranks (a new tensor; ``t`` itself without a process group)."""
    return _reduced(t, "SUM")


def _reduced(t: torch.Tensor, op: str) -> torch.Tensor:
    if not distributed():
        return t
    out = t.detach().clone().contiguous()
    if torch.distributed.get_backend() == "nccl" and not out.is_cuda:
        out = out.cuda()
    torch.distributed.all_reduce(out, op=getattr(torch.distributed.ReduceOp, op))
    return out.to(t.device)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module a ``DistributedDataParallel`` (or ``DataParallel``) wrapper holds; other models as
    they are. Measurements run on it (the wrapper's forward synchronises buffers and hooks
    gradients for the training step)."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    return model.module if isinstance(model, (DistributedDataParallel, DataParallel)) else model
