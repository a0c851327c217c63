"""How GradientNoise draws its standard normal numbers: deterministic, and on CPU in parallel.

torch's CPU ``normal_`` is one serial Mersenne-Twister stream (about 4 ns a number, whatever
the thread count), so one flat draw for all gradients leaves every other core idle and then
needs one more weight-sized pass to add the noise. On CPU the noise of one step is therefore
cut into independent *blocks* of :data:`BLOCK` elements of the concatenated gradients (per
dtype, in parameter order):

* the step draws one 62-bit number ``s`` from the wrapper's generator (so its state, saved in
  ``state_dict``, still decides everything);
* block ``b`` draws from its own ``torch.Generator`` seeded with ``splitmix64(s + b)`` (its
  low 32 bits: torch's CPU generator keeps only those), one ``normal_`` call per run of
  :data:`CHUNK` consecutive elements of the block (the last run may be shorter; runs cross
  tensor boundaries), in order.

Blocks run on torch's thread count, each drawing into a cache-sized buffer and adding it to
its gradients at once, so the noise never makes a trip through memory. The numbers depend
on the seed and the gradients' shapes only, not on the thread count or on the path (the
single-tensor and multi-tensor paths draw the same streams into one flat buffer). On other
devices one flat ``normal_`` per dtype is drawn from the generator: it is parallel there.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence

import torch

from descentlab.optim._pool import run_split

__all__ = ["BLOCK", "CHUNK", "block_seed", "plan", "draw_flat", "add_noise_in_place"]

#: Elements of one independent stream.
BLOCK = 1 << 18
#: Elements drawn per ``normal_`` call inside a block: a 128 KB buffer (float32) that stays in
#: cache until it is added, and few enough that torch's add stays serial in a worker thread
#: (at most its grain size) instead of starting an OpenMP team of its own.
CHUNK = 1 << 15

_MASK64 = (1 << 64) - 1


def block_seed(step_seed: int, block: int) -> int:
    """The seed of block ``block``: splitmix64 of ``step_seed + block``, low 32 bits."""
    z = (step_seed + block * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & 0xFFFFFFFF


def _pieces(offsets: Sequence[int], lo: int, hi: int) -> list[tuple[int, int, int]]:
    """``(tensor, start, stop)`` covering elements ``[lo, hi)`` of a concatenation with ``offsets``."""
    out = []
    i = bisect.bisect_right(offsets, lo) - 1
    while lo < hi:
        while offsets[i + 1] <= lo:  # skip empty tensors
            i += 1
        stop = min(hi, offsets[i + 1])
        out.append((i, lo - offsets[i], stop - offsets[i]))
        lo = stop
    return out


def plan(sizes: Sequence[int]) -> list[list[tuple[int, list[tuple[int, int, int]]]]]:
    """Blocks of the concatenation of tensors of ``sizes``: each a list of runs ``(length, pieces)``."""
    return _plan(tuple(sizes), BLOCK, CHUNK)


@functools.lru_cache(maxsize=16)  # one model's shapes repeat every step
def _plan(sizes: tuple[int, ...], BLOCK: int, CHUNK: int):  # noqa: N803 - the module constants, as cache keys
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    total = offsets[-1]
    out = []
    for start in range(0, total, BLOCK):
        end = min(total, start + BLOCK)
        out.append([(min(end, a + CHUNK) - a, _pieces(offsets, a, min(end, a + CHUNK)))
                    for a in range(start, end, CHUNK)])
    return out


def _by_dtype(tensors: Sequence[torch.Tensor]) -> list[list[int]]:
    groups: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(t.dtype, []).append(i)
    return list(groups.values())


def _each_block(tensors: Sequence[torch.Tensor], step_seed: int, visit) -> None:
    """``visit(generator, dtype, runs)`` for every block (runs' pieces name ``tensors``), over threads."""
    work_plan = []
    for index in _by_dtype(tensors):
        for runs in plan([tensors[i].numel() for i in index]):
            runs = [(n, [(index[i], a, b) for i, a, b in pieces]) for n, pieces in runs]
            work_plan.append((tensors[index[0]].dtype, runs))

    def work(first: int, last: int) -> None:
        for b in range(first, last):
            dtype, runs = work_plan[b]
            visit(torch.Generator().manual_seed(block_seed(step_seed, b)), dtype, runs)

    run_split(work, [sum(n for n, _ in runs) for _, runs in work_plan])


def add_noise_in_place(grads: Sequence[torch.Tensor], step_seed: int, std: float) -> None:
    """``g += std * z`` for every (contiguous CPU) gradient, drawing and adding block by block."""
    flats = [g.view(-1) for g in grads]
    sizes = [f.numel() for f in flats]

    def visit(generator, dtype, runs):
        buffer = torch.empty(CHUNK, dtype=dtype)
        for n, pieces in runs:
            z = buffer[:n].normal_(generator=generator)
            if len(pieces) == 1:
                i, a, b = pieces[0]
                flats[i].narrow(0, a, b - a).add_(z, alpha=std)
                continue
            # many small tensors: one multi-tensor add per run, not one add per tensor
            targets = [flats[i] if b - a == sizes[i] else flats[i].narrow(0, a, b - a) for i, a, b in pieces]
            torch._foreach_add_(targets, z.split([b - a for _, a, b in pieces]), alpha=std)

    _each_block(grads, step_seed, visit)


def draw_flat(grads: Sequence[torch.Tensor], step_seed: int) -> list[torch.Tensor]:
    """The same standard normal numbers as :func:`add_noise_in_place` adds, as tensors shaped like ``grads``."""
    noise = [torch.empty(g.numel(), dtype=g.dtype) for g in grads]

    def visit(generator, dtype, runs):
        for n, pieces in runs:
            z = torch.empty(n, dtype=dtype).normal_(generator=generator)
            offset = 0
            for i, a, b in pieces:
                noise[i][a:b] = z[offset : offset + b - a]
                offset += b - a

    _each_block(grads, step_seed, visit)
    return [z.view_as(g) for z, g in zip(noise, grads)]
