"""Which minimum does each start end in? A map over starts x learning rates x momentum values.

One path from one start says little about a surface with several minima (the tilted double
well: plain gradient descent stops in the shallow well, momentum *may* carry the ball over the
bump). :func:`basin_map` runs heavy-ball SGD (torch.optim.SGD through the registry, β as each
parameter group's ``momentum``) from every point of a grid of starts over the window, for every
pair of a learning rate and a β, all to the end, and records which minimum each run ended in:
within ``radius`` of it, or :data:`UNSETTLED` (still moving when the steps ran out) or
:data:`DIVERGED` (a non-finite point, or far outside the window). Every (rate, β) pair is one
parameter group holding all the starts as one ``(n, 2)`` tensor: the surface's value at a point
depends on that point alone, so the gradient of the summed loss is every start's own gradient,
and SGD updates element-wise, so each row moves exactly as a lone run would.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from descentlab.engine.callbacks import LoopState
from descentlab.engine.steps import run_steps
from descentlab.problems.surfaces import Surface

__all__ = ["BasinMap", "basin_map", "UNSETTLED", "DIVERGED", "DEFAULT_RATES", "DEFAULT_MOMENTA"]

#: Codes in :attr:`BasinMap.ends` besides the index of a minimum.
UNSETTLED, DIVERGED = -1, -2
#: The default grid of the map: learning rates and heavy-ball β values.
DEFAULT_RATES = (0.003, 0.01, 0.03, 0.1)
DEFAULT_MOMENTA = (0.0, 0.5, 0.9, 0.95)


@dataclass(frozen=True)
class BasinMap:
    """Where every run ended.

    Attributes:
        xs, ys: the start grid's coordinates (``nx`` and ``ny`` values).
        lrs, momenta: the learning rates and β values.
        minima: the minima ``(x, y)`` the runs are matched to; ``losses``: their values.
        ends: ``[len(momenta), len(lrs), ny, nx]`` int tensor: the index into ``minima`` of the
            minimum each run ended within ``radius`` of, or :data:`UNSETTLED` / :data:`DIVERGED`.
        steps: steps of every run; ``radius``: the matching distance.
    """

    xs: tuple[float, ...]
    ys: tuple[float, ...]
    lrs: tuple[float, ...]
    momenta: tuple[float, ...]
    minima: tuple[tuple[float, float], ...]
    losses: tuple[float, ...]
    ends: torch.Tensor
    steps: int
    radius: float

    def shares(self) -> list[dict[str, float]]:
        """Per (β, lr): the fraction of starts that ended in each minimum, unsettled and diverged."""
        rows = []
        for i, beta in enumerate(self.momenta):
            for j, lr in enumerate(self.lrs):
                ends = self.ends[i, j]
                total = ends.numel()
                row = {"momentum": beta, "lr": lr}
                for k in range(len(self.minima)):
                    row[f"minimum {k}"] = float((ends == k).sum()) / total
                row["unsettled"] = float((ends == UNSETTLED).sum()) / total
                row["diverged"] = float((ends == DIVERGED).sum()) / total
                rows.append(row)
        return rows

    def _cell(self, start: Sequence[float]) -> tuple[int, int]:
        column = min(range(len(self.xs)), key=lambda c: abs(self.xs[c] - start[0]))
        row = min(range(len(self.ys)), key=lambda r: abs(self.ys[r] - start[1]))
        return row, column

    def nearest_start(self, start: Sequence[float]) -> tuple[float, float]:
        """The start of the grid nearest ``start``."""
        row, column = self._cell(start)
        return (self.xs[column], self.ys[row])

    def end_of(self, start: Sequence[float], lr: float, momentum: float) -> int:
        """The code where the run from :meth:`nearest_start` ended, at a rate and β of the map."""
        i, j = self.momenta.index(momentum), self.lrs.index(lr)
        row, column = self._cell(start)
        return int(self.ends[i, j, row, column])


def basin_map(surface: Surface, minima: Sequence[Sequence[float]], *, lrs: Sequence[float] = DEFAULT_RATES,
              momenta: Sequence[float] = DEFAULT_MOMENTA, points: tuple[int, int] = (43, 25), steps: int = 1000,
              radius: float | None = None) -> BasinMap:
    """Run heavy-ball SGD from a ``points`` grid of starts over ``surface``'s window at every rate and β.

    Args:
        minima: the local minima to match the ends to (e.g. the surface's known ones).
        lrs: learning rates (> 0); momenta: heavy-ball β values in [0, 1).
        points: starts per axis, ``(nx, ny)``, spread evenly over the window, edges included.
        steps: steps of every run.
        radius: a run ended in a minimum when it stops within this distance of it (default 1 % of
            the window's larger side).
    """
    from descentlab.optim.registry import make_optimizer

    if not minima:
        raise ValueError("minima must name at least one minimum")
    lrs = tuple(float(v) for v in lrs)
    momenta = tuple(float(v) for v in momenta)
    if not lrs or any(not (math.isfinite(v) and v > 0) for v in lrs):
        raise ValueError(f"lrs must be positive numbers, got {lrs}")
    if not momenta or any(not (0 <= v < 1) for v in momenta):
        raise ValueError(f"momenta must be in [0, 1), got {momenta}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    nx, ny = (int(v) for v in points)
    if nx < 2 or ny < 2:
        raise ValueError(f"points must be at least 2 per axis, got {points}")
    (x0, x1), (y0, y1) = surface.window
    size = max(x1 - x0, y1 - y0)
    radius = 1e-2 * size if radius is None else float(radius)
    xs = torch.linspace(x0, x1, nx, dtype=torch.float64)
    ys = torch.linspace(y0, y1, ny, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    starts = torch.stack([gx, gy], dim=-1).reshape(-1, 2)

    pairs = list(itertools.product(momenta, lrs))
    params = [nn.Parameter(starts.clone()) for _ in pairs]
    groups = [{"params": [p], "lr": lr, "momentum": beta} for p, (beta, lr) in zip(params, pairs)]
    optimizer = make_optimizer("sgd", groups, lr=lrs[0])
    # the starts are independent: the gradient of the sum at each row is that row's own gradient
    run_steps(LoopState(nn.ParameterList(params), optimizer), lambda _: sum(surface(p).sum() for p in params),
              itertools.repeat(None), steps=steps)

    places = torch.tensor([[float(v) for v in m] for m in minima], dtype=torch.float64)
    with torch.no_grad():
        ends = []
        for p in params:
            final = p.detach()
            finite = torch.isfinite(final).all(-1) & (final.abs() < 1e3 * size).all(-1)
            distance = torch.cdist(torch.where(finite[:, None], final, torch.zeros_like(final)), places)
            nearest = distance.min(dim=1)
            code = torch.where(nearest.values <= radius, nearest.indices, torch.full_like(nearest.indices, UNSETTLED))
            ends.append(torch.where(finite, code, torch.full_like(code, DIVERGED)).reshape(ny, nx))
        values = surface(places).tolist()
    return BasinMap(xs=tuple(xs.tolist()), ys=tuple(ys.tolist()), lrs=lrs, momenta=momenta,
                    minima=tuple((float(a), float(b)) for a, b in places.tolist()), losses=tuple(values),
                    ends=torch.stack(ends).reshape(len(momenta), len(lrs), ny, nx), steps=steps, radius=radius)
