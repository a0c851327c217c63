"""The loss at many parameter points at once: ``L(center + coords @ directions)``.

Points are evaluated in chunks: for each chunk the parameter offsets are stacked into
tensors of shape ``(chunk, *param.shape)`` and the model runs once per batch of data under
``torch.func.vmap`` over ``torch.func.functional_call`` -- one model, no copies, and the
chunk size bounds the memory (activations grow with ``chunk * batch``). A model that vmap
cannot batch (data-dependent Python control flow, ``.item()``) falls back, with a warning,
to one ``functional_call`` per point. ``workers > 1`` splits the chunks over a pool of
processes (each single-threaded), which pays off for large grids of small models where
torch's own threads have too little work per operation.

The model runs in ``eval()`` mode (restored afterwards): a landscape is a deterministic
function of the parameters, so dropout is off and batch norm uses its running statistics.
"""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import torch
from torch import nn
from torch.func import functional_call, vmap

from descentlab.curvature.batches import as_batches
from descentlab.landscape.vectors import Layout, layout_of, unflatten

__all__ = ["evaluate_losses"]

# Fork where the platform has it (as torch's DataLoader does): a child starts in milliseconds
# instead of re-importing torch. Each child sets one intra-op thread before computing, so it
# never enters the parent's OpenMP pool.
_MP_CONTEXT = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def evaluate_losses(model: nn.Module, loss_fn: Callable, data, center: torch.Tensor,
                    directions: torch.Tensor, coords: torch.Tensor, *, chunk_size: int = 64,
                    workers: int = 1, progress: bool = False, desc: str = "landscape") -> torch.Tensor:
    """Mean loss over all of ``data`` at each point ``center + coords[i] @ directions``.

    Args:
        model: any ``nn.Module``; only its structure and buffers are used, its trainable
            parameters are replaced by the points' values.
        loss_fn: ``loss_fn(output, target)``, the mean over a batch.
        data: ``(X, y)`` or an iterable of ``(X, y)`` batches; batches are weighted by size.
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
    if chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
    if workers < 1:
        raise ValueError(f"workers: must be >= 1, got {workers}")
    batches = [(X.to(ref.device), y.to(ref.device)) for X, y in as_batches(data)]

    chunks = list(torch.split(coords, chunk_size))
    bar = _progress_bar(len(coords), desc) if progress else None
    try:
        if workers == 1 or len(chunks) == 1:
            results = []
            for chunk in chunks:
                results.append(_evaluate_chunk(model, loss_fn, batches, layout, center, directions, chunk))
                if bar is not None:
                    bar.update(len(chunk))
        else:
            results = _evaluate_in_pool(model, loss_fn, batches, layout, center, directions, chunks, workers, bar)
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(results).cpu()


def _progress_bar(total: int, desc: str):
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="pt", file=sys.stderr, leave=False)


def _evaluate_chunk(model, loss_fn, batches, layout: Layout, center, directions, coords) -> torch.Tensor:
    points = center + coords @ directions  # (chunk, n)
    params = unflatten(points, layout)
    buffers = dict(model.named_buffers())
    # Parameters that are frozen (requires_grad=False) keep their values at every point.
    frozen = {name: p for name, p in model.named_parameters() if not p.requires_grad}
    n_total = sum(len(X) for X, _ in batches)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            total = torch.zeros(len(points), dtype=points.dtype, device=points.device)
            for X, y in batches:
                total += _batch_losses(model, loss_fn, params, frozen, buffers, X, y) * (len(X) / n_total)
    finally:
        model.train(was_training)
    return total


def _batch_losses(model, loss_fn, params, frozen, buffers, X, y) -> torch.Tensor:
    def loss_at(point_params):
        output = functional_call(model, ({**point_params, **frozen}, buffers), (X,))
        return loss_fn(output, y)

    try:
        return vmap(loss_at)(params).reshape(-1)
    except (RuntimeError, ValueError, NotImplementedError) as error:
        warnings.warn(f"vmap could not batch this model ({error}); evaluating one point at a time",
                      RuntimeWarning, stacklevel=4)
    n_points = next(iter(params.values())).shape[0]
    return torch.stack([loss_at({k: v[i] for k, v in params.items()}).reshape(()) for i in range(n_points)])


def _worker(model, loss_fn, batches, layout, center, directions, chunk) -> torch.Tensor:
    torch.set_num_threads(1)
    return _evaluate_chunk(model, loss_fn, batches, layout, center, directions, chunk)


def _evaluate_in_pool(model, loss_fn, batches, layout, center, directions, chunks, workers, bar):
    import pickle

    try:
        pickle.dumps(loss_fn)
    except Exception as error:  # pickle raises several types for unpicklable callables
        raise ValueError(f"loss_fn: must be picklable to use workers > 1 ({error})") from error
    context = multiprocessing.get_context(_MP_CONTEXT)
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
        futures = [pool.submit(_worker, model, loss_fn, batches, layout, center, directions, chunk) for chunk in chunks]
        results = []
        for chunk, future in zip(chunks, futures):
            results.append(future.result())
            if bar is not None:
                bar.update(len(chunk))
    return results
