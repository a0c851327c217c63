"""A training trajectory on a plane: where its snapshots project, their true loss, how far off they lie.

A plane ``center + a d1 + b d2`` through parameter space holds a trajectory only
approximately: each snapshot ``theta_i`` is drawn at the coordinates of its nearest point on
the plane (:func:`~descentlab.landscape.slices.project_onto_plane`, least squares, as random
directions are not orthogonal), labelled with the loss *at the snapshot itself*, not at its
projection; the distance ``||theta_i - (center + a_i d1 + b_i d2)||`` says how faithful the
picture is. :func:`covering_span` widens a grid's ranges so the whole projected path is on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from descentlab.landscape.evaluate import evaluate_losses
from descentlab.landscape.slices import project_onto_plane

__all__ = ["Trajectory", "ProjectedTrajectory", "project_trajectory", "covering_span"]

#: The grid reaches this fraction of the projected path's extent beyond it, on each side.
PATH_MARGIN = 0.15


@dataclass(frozen=True)
class Trajectory:
    """Snapshots of the parameters during training.

    Attributes:
        steps: the training step of each snapshot.
        points: ``(m, n)``, one flat parameter vector per snapshot.
    """

    steps: tuple[int, ...]
    points: torch.Tensor

    def __post_init__(self) -> None:
        if self.points.dim() != 2 or len(self.points) != len(self.steps):
            raise ValueError(f"points: expected one row per step ({len(self.steps)}), got shape "
                             f"{tuple(self.points.shape)}")

    @classmethod
    def of(cls, snapshots: Iterable[tuple[int, torch.Tensor]]) -> "Trajectory":
        """From ``[(step, flat parameters), ...]``, as a training callback records them."""
        snapshots = list(snapshots)
        if not snapshots:
            raise ValueError("snapshots: a trajectory needs at least one")
        return cls(tuple(int(step) for step, _ in snapshots), torch.stack([p.reshape(-1) for _, p in snapshots]))

    def __repr__(self) -> str:
        return f"Trajectory({len(self.steps)} snapshots, steps {self.steps[0]}..{self.steps[-1]})" if self.steps \
            else "Trajectory(empty)"


@dataclass(frozen=True)
class ProjectedTrajectory:
    """A trajectory drawn on a plane.

    Attributes:
        steps: the training step of each snapshot.
        coords: ``(m, 2)`` float64, ``(a, b)`` of each snapshot's nearest point on the plane.
        losses: ``(m,)`` the loss at each snapshot itself.
        off_plane: ``(m,)`` each snapshot's distance from the plane.
    """

    steps: tuple[int, ...]
    coords: torch.Tensor
    losses: torch.Tensor
    off_plane: torch.Tensor

    def __repr__(self) -> str:
        return (f"ProjectedTrajectory({len(self.steps)} snapshots, max distance off the plane "
                f"{float(self.off_plane.max()):.3g})")


def project_trajectory(model: nn.Module, loss_fn: Callable, data, trajectory: Trajectory, center: torch.Tensor,
                       d1: torch.Tensor, d2: torch.Tensor, *, chunk_size: int = 64) -> ProjectedTrajectory:
    """Project ``trajectory`` onto ``center + a d1 + b d2`` and measure the loss at every
    snapshot (one batched evaluation, :func:`~descentlab.landscape.evaluate.evaluate_losses`)."""
    center = torch.as_tensor(center).reshape(-1)
    points = trajectory.points.to(center)
    coords = project_onto_plane(points, center, d1, d2)
    # each snapshot is a "direction" from the origin, taken once: L(0 + e_i @ points) = L(points[i])
    losses = evaluate_losses(model, loss_fn, data, torch.zeros_like(center), points,
                             torch.eye(len(points), dtype=center.dtype), chunk_size=chunk_size)
    off_plane = (points - center - coords.to(center) @ torch.stack([d1, d2])).norm(dim=1)
    return ProjectedTrajectory(tuple(trajectory.steps), coords, losses, off_plane)


def covering_span(coords: torch.Tensor, span: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(span_a, span_b)``: ``[-span, span]`` on each axis, widened to hold every point of
    ``coords`` ``(m, 2)`` with a margin of :data:`PATH_MARGIN` of the points' extent."""
    lo, hi = coords.min(0).values, coords.max(0).values
    pad = PATH_MARGIN * (hi - lo).clamp_min(1e-12)
    return ((min(-span, float(lo[0] - pad[0])), max(span, float(hi[0] + pad[0]))),
            (min(-span, float(lo[1] - pad[1])), max(span, float(hi[1] + pad[1]))))
