"""How GradientNoise draws its standard normal numbers on CPU: deterministic, parallel, fused.

Each step draws one 62-bit number ``s`` from the wrapper's generator (so its state, saved in
``state_dict``, still decides everything). The noise of gradient ``i`` is then elements
``o_i .. o_i + n_i - 1`` of the counter-based stream of ``s``
(:mod:`descentlab.optim.normal_stream`), where ``o_i`` is the gradient's first element in the
concatenation of all gradients in parameter order.

Element ``j`` depends on ``s`` and ``j`` only, so the numbers do not depend on the thread
count, the kernel path, or how tensors are cut into work. With numba installed the noise is
computed and added in one pass (``add_noise_in_place``: ≈ 2x faster than torch's serial
``normal_`` alone on one core, before any second thread); without it, the same numbers come
from torch ops (slower than ``normal_``; the ``fast`` extra is what the Makefile installs).
On other devices GradientNoise draws one flat ``normal_`` per dtype from its generator instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from descentlab.optim import cpu_kernels
from descentlab.optim.normal_stream import add_normals, fill_normals, normals_torch

__all__ = ["add_noise_in_place", "draw_flat"]

#: Most stream elements one torch-ops call computes (its int64 temporaries are 8 bytes each).
_TORCH_RUN = 1 << 20


def _groups(tensors: Sequence[torch.Tensor]) -> list[tuple[list[int], list[int]]]:
    """``(indices, starts)`` per dtype: which tensors, and each one's first stream element."""
    groups: dict[torch.dtype, tuple[list[int], list[int]]] = {}
    start = 0
    for i, t in enumerate(tensors):
        index, starts = groups.setdefault(t.dtype, ([], []))
        index.append(i)
        starts.append(start)
        start += t.numel()
    return list(groups.values())


def add_noise_in_place(grads: Sequence[torch.Tensor], step_seed: int, std: float) -> None:
    """``g += std * z`` for every (contiguous CPU) gradient."""
    for index, starts in _groups(grads):
        group = [grads[i] for i in index]
        if cpu_kernels.available(group):
            add_normals(group, starts, step_seed, std)
        else:
            for g, z in zip(group, _torch_normals(group, starts, step_seed)):
                g.add_(z.to(g.dtype).mul_(std).view_as(g))  # rounded as the kernel rounds: std·z, then +


def draw_flat(grads: Sequence[torch.Tensor], step_seed: int) -> list[torch.Tensor]:
    """The same standard normal numbers as :func:`add_noise_in_place` adds, as tensors shaped like ``grads``."""
    noise: list[torch.Tensor] = [None] * len(grads)  # type: ignore[list-item]
    for index, starts in _groups(grads):
        group = [torch.empty(grads[i].shape, dtype=grads[i].dtype) for i in index]
        if cpu_kernels.available(group):
            fill_normals(group, starts, step_seed)
        else:
            group = [z.to(g.dtype).view_as(g) for z, g in zip(_torch_normals(group, starts, step_seed), group)]
        for i, z in zip(index, group):
            noise[i] = z
    return noise


def _torch_normals(group: Sequence[torch.Tensor], starts: Sequence[int], seed: int) -> list[torch.Tensor]:
    """Each tensor's stretch of the stream (float32), from torch ops: consecutive tensors share
    calls of at most ``_TORCH_RUN`` elements (bounded temporaries, few calls for small tensors)."""
    first, total = starts[0], sum(t.numel() for t in group)
    if starts[-1] + group[-1].numel() - first == total:  # no other dtype's tensors in between
        flat = torch.cat([normals_torch(seed, a, min(_TORCH_RUN, first + total - a))
                          for a in range(first, first + total, _TORCH_RUN)] or [torch.empty(0)])
        return list(torch.split(flat, [t.numel() for t in group]))
    return [_torch_normals([t], [start], seed)[0] for t, start in zip(group, starts)]

