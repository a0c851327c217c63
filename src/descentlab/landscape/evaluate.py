"""The loss at many parameter points at once: ``L(center + coords @ directions)``.

The loss over the data is the curvature layer's
:class:`~descentlab.curvature.EmpiricalLoss` (its batch loop, weighting, data check, eval-mode
policy and all-reduce); this module chunks the points: for each chunk the parameter offsets
are stacked into tensors of shape ``(chunk, *param.shape)`` and the model runs once per batch
of data under ``torch.func.vmap`` -- one model, no copies, and the chunk size bounds the
memory (activations grow with ``chunk * batch``). A model that vmap cannot batch
(data-dependent Python control flow, ``.item()``) falls back, with a warning, to one call per
point. ``workers > 1`` splits the chunks over a pool of processes (each single-threaded),
which pays off for large grids of small models where torch's own threads have too little work
per operation.

A landscape is a deterministic function of the parameters, so dropout and batch norm are
evaluated in eval mode (only those modules are switched, each restored to its own mode).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable

import torch
from torch import nn

from descentlab.checks import check_int
from descentlab.curvature import EmpiricalLoss
from descentlab.curvature.losses import read_batches
from descentlab.params import layout_of
from descentlab.worker_pool import worker_pool

__all__ = ["evaluate_losses"]

# Fork where the platform has it (as torch's DataLoader does): a child starts in milliseconds
# instead of re-importing torch. Each child sets one intra-op thread before computing, so it
# never enters the parent's OpenMP pool.
_MP_CONTEXT = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def evaluate_losses(model: nn.Module, loss_fn: Callable, data, center: torch.Tensor,
                    directions: torch.Tensor, coords: torch.Tensor, *, chunk_size: int = 64,
                    workers: int = 1, progress: bool = False, desc: str = "landscape") -> torch.Tensor:
    """The loss over all of ``data`` at each point ``center + coords[i] @ directions``.

    Args:
        model: any ``nn.Module``; only its structure and buffers are used, its trainable
            parameters are replaced by the points' values.
        loss_fn: ``loss_fn(output, target)``, the mean (or sum) over a batch.
        data: ``(X, y)`` or an iterable of ``(X, y)`` batches, read once into memory and
            weighted as :class:`~descentlab.curvature.EmpiricalLoss` weights them (by size for a mean).
        center: flat parameter vector ``(n,)``.
        directions: ``(k, n)``, one flat direction per row.
        coords: ``(m, k)``, the points' coordinates along the directions.
        chunk_size: points evaluated together in one vmapped call (memory grows with
            ``chunk_size * batch size``; see ``bench/landscape.py`` for the speed trade-off).
        workers: processes to spread the chunks over (``loss_fn`` must then be picklable:
            a module-level function or an ``nn.Module`` loss, not a lambda).
        progress: show a tqdm bar on stderr.

    Returns:
        ``(m,)`` losses, in the dtype of the model's parameters, on the CPU.
    """
    layout = layout_of(model)
    ref = next(p for p in model.parameters() if p.requires_grad)
    center = torch.as_tensor(center).to(device=ref.device, dtype=ref.dtype).reshape(-1)
    directions = torch.as_tensor(directions).to(device=ref.device, dtype=ref.dtype)
    coords = torch.as_tensor(coords).to(device=ref.device, dtype=ref.dtype)
    if directions.dim() == 1:
        directions = directions.unsqueeze(0)
    if coords.dim() == 1:
        coords = coords.unsqueeze(1)
    if center.numel() != layout.n_params:
        raise ValueError(f"center: {center.numel()} values, the model has {layout.n_params} parameters")
    if directions.dim() != 2 or directions.shape[1] != layout.n_params:
        raise ValueError(f"directions: expected shape (k, {layout.n_params}), got {tuple(directions.shape)}")
    if coords.dim() != 2 or coords.shape[1] != directions.shape[0]:
        raise ValueError(f"coords: expected shape (m, {directions.shape[0]}), got {tuple(coords.shape)}")
    check_int("chunk_size", chunk_size)
    check_int("workers", workers)
    # read once: every chunk passes over the same batches
    risk = EmpiricalLoss(model, loss_fn, read_batches(loss_fn, data), params=list(layout.names),
                         eval_mode=True)

    chunks = list(torch.split(coords, chunk_size))
    bar = _progress_bar(len(coords), desc) if progress else None
    try:
        if workers == 1 or len(chunks) == 1:
            results = []
            for chunk in chunks:
                results.append(risk.local_losses(center + chunk @ directions))
                if bar is not None:
                    bar.update(len(chunk))
        else:
            results = _evaluate_in_pool(risk, center, directions, chunks, workers, bar)
    finally:
        if bar is not None:
            bar.close()
    return risk.allreduce(torch.cat(results)).cpu()


def _progress_bar(total: int, desc: str):
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="pt", file=sys.stderr, leave=False)


def _worker(risk: EmpiricalLoss, center, directions, chunk) -> torch.Tensor:
    torch.set_num_threads(1)
    return risk.local_losses(center + chunk @ directions)


def _evaluate_in_pool(risk: EmpiricalLoss, center, directions, chunks, workers, bar):
    import pickle

    try:
        pickle.dumps(risk.loss_fn)
    except Exception as error:  # pickle raises several types for unpicklable callables
        raise ValueError(f"loss_fn: must be picklable to use workers > 1 ({error})") from error
    # An interrupt (or a failed chunk) terminates the workers instead of waiting for every chunk.
    with worker_pool(min(workers, len(chunks)), start_method=_MP_CONTEXT) as pool:
        futures = [pool.submit(_worker, risk, center, directions, chunk) for chunk in chunks]
        results = []
        for chunk, future in zip(chunks, futures):
            results.append(future.result())
            if bar is not None:
                bar.update(len(chunk))
    return results
