"""1-D and 2-D slices of the loss through parameter space.

- :func:`line_slice`: ``L((1 - t) theta_a + t theta_b)``, the straight line between two
  parameter vectors (initial and final weights; or two runs' solutions), with ``t`` a bit
  beyond ``[0, 1]`` on both sides (Goodfellow, Vinyals & Saxe 2015).
- :func:`direction_slice`: ``L(theta + t d)`` along one direction (a Hessian eigenvector:
  a parabola of curvature ``lambda = d^T H d`` near ``theta`` when ``||d|| = 1``).
- :func:`plane`: ``L(theta + a d1 + b d2)`` on a grid (Li et al. 2018).
- :func:`project_onto_plane`: coordinates ``(a, b)`` of a trajectory's points in the plane.

Each takes a model, a loss and data -- never a workload -- so it works on any ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from descentlab.landscape.evaluate import evaluate_losses
from descentlab.params import flatten

__all__ = ["Slice1D", "Plane2D", "line_slice", "direction_slice", "plane", "project_onto_plane"]


@dataclass(frozen=True)
class Slice1D:
    """The loss along a line ``origin + t * direction``.

    Attributes:
        t: ``(m,)`` positions along the line.
        losses: ``(m,)`` the loss at each position.
        origin: flat parameters at ``t = 0``.
        direction: the flat direction (``theta_b - theta_a`` for a line between two points).
        label: what the direction is (``"line"``, ``"top eigenvector"``, ...).
    """

    t: torch.Tensor
    losses: torch.Tensor
    origin: torch.Tensor
    direction: torch.Tensor
    label: str = ""

    def __repr__(self) -> str:
        i = int(torch.argmin(self.losses))
        return (f"Slice1D({self.label!r}, {len(self.t)} points, t in [{float(self.t[0]):.3g}, "
                f"{float(self.t[-1]):.3g}], min loss {float(self.losses[i]):.4g} at t={float(self.t[i]):.3g})")


@dataclass(frozen=True)
class Plane2D:
    """The loss on a grid ``center + a * d1 + b * d2``.

    Attributes:
        a: ``(na,)`` coordinates along ``d1``.
        b: ``(nb,)`` coordinates along ``d2``.
        losses: ``(nb, na)``; ``losses[j, i]`` is the loss at ``(a[i], b[j])`` (rows follow
            ``b``, as ``matplotlib.contour(a, b, losses)`` expects).
        center: flat parameters at ``(0, 0)``.
        d1, d2: the two flat directions.
        label: how the directions were chosen.
    """

    a: torch.Tensor
    b: torch.Tensor
    losses: torch.Tensor
    center: torch.Tensor
    d1: torch.Tensor
    d2: torch.Tensor
    label: str = ""

    def __repr__(self) -> str:
        return (f"Plane2D({self.label!r}, {len(self.a)}x{len(self.b)} grid, loss at centre "
                f"{self.loss_at_center():.4g}, min {float(self.losses.min()):.4g}, max {float(self.losses.max()):.4g})")

    def loss_at_center(self) -> float:
        """The grid value nearest to ``(0, 0)``."""
        i = int(torch.argmin(self.a.abs()))
        j = int(torch.argmin(self.b.abs()))
        return float(self.losses[j, i])


def _check_points(n_points: int, name: str = "n_points") -> None:
    if int(n_points) < 2:
        raise ValueError(f"{name}: must be >= 2, got {n_points}")


def _span(span: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(span, (int, float)):
        if span <= 0:
            raise ValueError(f"{name}: must be > 0, got {span}")
        return -float(span), float(span)
    low, high = (float(s) for s in span)
    if not low < high:
        raise ValueError(f"{name}: expected (low, high) with low < high, got {span}")
    return low, high


def line_slice(model: nn.Module, loss_fn: Callable, data, start: torch.Tensor, end: torch.Tensor, *,
               n_points: int = 51, margin: float = 0.25, **evaluate) -> Slice1D:
    """The loss on the straight line from ``start`` (``t = 0``) to ``end`` (``t = 1``).

    ``t`` runs over ``[-margin, 1 + margin]`` in ``n_points`` even steps, plus ``t = 0`` and
    ``t = 1`` exactly where the steps miss them (so the loss at both ends is measured, not the
    nearest grid point's). ``evaluate`` goes to
    :func:`~descentlab.landscape.evaluate.evaluate_losses` (``chunk_size``, ``workers``, ``progress``).
    """
    _check_points(n_points)
    if margin < 0:
        raise ValueError(f"margin: must be >= 0, got {margin}")
    start = torch.as_tensor(start).reshape(-1)
    direction = torch.as_tensor(end).reshape(-1).to(start) - start
    t = _with_points(torch.linspace(-margin, 1.0 + margin, int(n_points), dtype=torch.float64), (0.0, 1.0))
    losses = evaluate_losses(model, loss_fn, data, start, direction, t, **evaluate)
    return Slice1D(t, losses, start.detach().cpu(), direction.detach().cpu(), "line")


def _with_points(t: torch.Tensor, points: Sequence[float]) -> torch.Tensor:
    """``t`` (sorted) with each of ``points`` inside its range exactly: a grid value within
    rounding of it (``linspace`` lands 1e-17 off a round value) is set to it, else it is added."""
    t, extra = t.clone(), []
    for p in points:
        near = (t - p).abs() <= 1e-12
        if near.any():
            t[near] = p
        elif t[0] <= p <= t[-1]:
            extra.append(p)
    if not extra:
        return t
    return torch.sort(torch.cat([t, torch.tensor(extra, dtype=t.dtype)])).values


def direction_slice(model: nn.Module, loss_fn: Callable, data, direction: torch.Tensor, *,
                    center: torch.Tensor | None = None, span: float | Sequence[float] = 1.0,
                    n_points: int = 51, label: str = "direction", **evaluate) -> Slice1D:
    """The loss at ``center + t * direction`` for ``t`` evenly spaced over ``span``.

    ``center`` defaults to the model's current parameters; ``span`` is ``s`` (meaning
    ``[-s, s]``) or ``(low, high)``. ``t = 0`` (the centre itself) is always one of the points.
    """
    _check_points(n_points)
    low, high = _span(span, "span")
    if center is None:
        center = flatten(model)
    center = torch.as_tensor(center).reshape(-1)
    direction = torch.as_tensor(direction).reshape(-1).to(center)
    t = _with_points(torch.linspace(low, high, int(n_points), dtype=torch.float64), (0.0,))
    losses = evaluate_losses(model, loss_fn, data, center, direction, t, **evaluate)
    return Slice1D(t, losses, center.detach().cpu(), direction.detach().cpu(), label)


def plane(model: nn.Module, loss_fn: Callable, data, d1: torch.Tensor, d2: torch.Tensor, *,
          center: torch.Tensor | None = None, span: float | Sequence[float] = 1.0,
          span_b: float | Sequence[float] | None = None, resolution: int = 25,
          label: str = "plane", **evaluate) -> Plane2D:
    """The loss on a ``resolution x resolution`` grid of ``center + a * d1 + b * d2``.

    ``span`` bounds ``a`` (and ``b`` unless ``span_b`` is given): ``s`` for ``[-s, s]`` or
    ``(low, high)``. All grid points go through one batched evaluation.
    """
    _check_points(resolution, "resolution")
    a_low, a_high = _span(span, "span")
    b_low, b_high = _span(span if span_b is None else span_b, "span_b")
    if center is None:
        center = flatten(model)
    center = torch.as_tensor(center).reshape(-1)
    directions = torch.stack([torch.as_tensor(d).reshape(-1).to(center) for d in (d1, d2)])
    a = torch.linspace(a_low, a_high, int(resolution), dtype=torch.float64)
    b = torch.linspace(b_low, b_high, int(resolution), dtype=torch.float64)
    bb, aa = torch.meshgrid(b, a, indexing="ij")
    coords = torch.stack([aa.reshape(-1), bb.reshape(-1)], dim=1)
    losses = evaluate_losses(model, loss_fn, data, center, directions, coords, **evaluate)
    return Plane2D(a, b, losses.reshape(len(b), len(a)), center.detach().cpu(),
                   directions[0].detach().cpu(), directions[1].detach().cpu(), label)


def project_onto_plane(points: torch.Tensor, center: torch.Tensor, d1: torch.Tensor,
                       d2: torch.Tensor) -> torch.Tensor:
    """Coordinates ``(a, b)`` minimising ``||p - (center + a d1 + b d2)||`` for each point ``p``.

    ``points`` is ``(m, n)``; returns ``(m, 2)``. Least squares rather than two dot
    products, because filter-normalised random directions are not orthogonal.
    """
    points = torch.as_tensor(points, dtype=torch.float64)
    if points.dim() == 1:
        points = points.unsqueeze(0)
    basis = torch.stack([torch.as_tensor(d, dtype=torch.float64).reshape(-1) for d in (d1, d2)], dim=1)
    offsets = points - torch.as_tensor(center, dtype=torch.float64).reshape(1, -1)
    if offsets.shape[1] != basis.shape[0]:
        raise ValueError(f"points: {offsets.shape[1]} parameters, the directions have {basis.shape[0]}")
    return torch.linalg.lstsq(basis, offsets.T).solution.T

