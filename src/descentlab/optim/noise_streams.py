"""How GradientNoise draws its standard normal numbers: deterministic, and on CPU in parallel.

torch's CPU ``normal_`` is one serial Mersenne-Twister stream (about 4 ns a number, whatever
the thread count), so one flat draw for all gradients leaves every other core idle and then
needs one more weight-sized pass to add the noise. On CPU the noise of one step is therefore
cut into independent *blocks* of :data:`BLOCK` elements of the concatenated gradients (per
dtype, in parameter order):

* the step draws one 62-bit number ``s`` from the wrapper's generator (so its state, saved in
  ``state_dict``, still decides everything);
* block ``b`` draws from its own ``torch.Generator`` seeded with ``splitmix64(s + b)`` (its
  low 32 bits: torch's CPU generator keeps only those), one ``normal_`` call per run of at
  most :data:`CHUNK` elements inside one tensor, in order.

Blocks run on torch's thread count, each drawing into a cache-sized buffer and adding it to
its gradients at once, so the noise never makes a trip through memory. The numbers depend
on the seed and the gradients' shapes only, not on the thread count or on the path (the
single-tensor and multi-tensor paths draw the same streams into one flat buffer). On other
devices one flat ``normal_`` per dtype is drawn from the generator: it is parallel there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from descentlab.optim._pool import run_split

__all__ = ["BLOCK", "CHUNK", "block_seed", "blocks", "draw_flat", "add_noise_in_place"]

#: Elements of one independent stream.
BLOCK = 1 << 18
#: Elements drawn per ``normal_`` call inside a block: the buffer stays in cache, and torch's
#: add of this many elements stays serial inside a worker thread.
CHUNK = 1 << 14

_MASK64 = (1 << 64) - 1


def block_seed(step_seed: int, block: int) -> int:
    """The seed of block ``block``: splitmix64 of ``step_seed + block``, low 32 bits."""
    z = (step_seed + block * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & 0xFFFFFFFF


def blocks(sizes: Sequence[int]) -> list[list[tuple[int, int, int]]]:
    """Cut the concatenation of tensors of ``sizes`` into blocks: lists of ``(tensor, start, stop)``."""
    out: list[list[tuple[int, int, int]]] = [[]]
    room = BLOCK
    for index, n in enumerate(sizes):
        start = 0
        while start < n:
            if room == 0:
                out.append([])
                room = BLOCK
            stop = min(n, start + room)
            out[-1].append((index, start, stop))
            room -= stop - start
            start = stop
    return [b for b in out if b]


def _runs(piece: tuple[int, int, int]):
    index, start, stop = piece
    for a in range(start, stop, CHUNK):
        yield index, a, min(stop, a + CHUNK)


def _by_dtype(tensors: Sequence[torch.Tensor]) -> list[list[int]]:
    groups: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(t.dtype, []).append(i)
    return list(groups.values())


def _each_block(tensors: Sequence[torch.Tensor], step_seed: int, visit) -> None:
    """``visit(generator, runs of (tensor, start, stop))`` for every block, spread over threads."""
    plan = []
    for index in _by_dtype(tensors):
        for block in blocks([tensors[i].numel() for i in index]):
            plan.append([(index[i], a, b) for piece in block for i, a, b in _runs(piece)])

    def work(first: int, last: int) -> None:
        for b in range(first, last):
            visit(torch.Generator().manual_seed(block_seed(step_seed, b)), plan[b])

    run_split(work, [sum(b - a for _, a, b in runs) for runs in plan])


def add_noise_in_place(grads: Sequence[torch.Tensor], step_seed: int, std: float) -> None:
    """``g += std * z`` for every (contiguous CPU) gradient, drawing and adding block by block."""
    flats = [g.view(-1) for g in grads]

    def visit(generator, runs):
        buffer = torch.empty(CHUNK, dtype=flats[runs[0][0]].dtype)
        for i, a, b in runs:
            z = buffer[: b - a].normal_(generator=generator)
            flats[i][a:b].add_(z, alpha=std)

    _each_block(grads, step_seed, visit)


def draw_flat(grads: Sequence[torch.Tensor], step_seed: int) -> list[torch.Tensor]:
    """The same standard normal numbers as :func:`add_noise_in_place` adds, as tensors shaped like ``grads``."""
    noise = [torch.empty(g.numel(), dtype=g.dtype) for g in grads]

    def visit(generator, runs):
        for i, a, b in runs:
            noise[i][a:b].normal_(generator=generator)

    _each_block(grads, step_seed, visit)
    return [z.view_as(g) for z, g in zip(noise, grads)]
