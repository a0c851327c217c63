"""The plane a training trajectory lies closest to: its two principal directions.

Li, Xu, Taylor, Studer & Goldstein, *Visualizing the Loss Landscape of Neural Nets* (NeurIPS
2018, sec. 7): random directions are almost orthogonal to the path an optimizer takes in a
space of many parameters, so a trajectory projected onto a random plane looks like a point.
They instead stack the offsets of the snapshots from the final point,
``M = [theta_0 - theta_n; ...; theta_{n-1} - theta_n]``, and take the first two right singular
vectors of ``M`` (PCA about the final point, not about the mean) as the plane's directions;
``s_i^2 / sum_j s_j^2`` is the share of the path's squared length each one explains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TrajectoryPlane", "trajectory_plane"]


@dataclass(frozen=True)
class TrajectoryPlane:
    """The two principal directions of a trajectory about a centre.

    Attributes:
        d1, d2: orthonormal flat directions, ``d1`` the one along which the path moves most.
        explained: the share of ``sum_i ||theta_i - center||^2`` that ``d1`` and ``d2`` explain.
    """

    d1: torch.Tensor
    d2: torch.Tensor
    explained: tuple[float, float]

    def __repr__(self) -> str:
        return f"TrajectoryPlane(explained={self.explained[0]:.3f}, {self.explained[1]:.3f}, n_params={len(self.d1)})"


def trajectory_plane(points: torch.Tensor, center: torch.Tensor) -> TrajectoryPlane:
    """The first two right singular vectors of ``points - center`` (``points``: ``(m, n)``, one
    snapshot per row; ``center``: ``(n,)``, usually the final point), in ``center``'s dtype."""
    center = torch.as_tensor(center).reshape(-1)
    points = torch.as_tensor(points).to(center)
    if points.dim() != 2 or points.shape[1] != center.numel():
        raise ValueError(f"points: expected shape (m, {center.numel()}), got {tuple(points.shape)}")
    if len(points) < 2:
        raise ValueError(f"points: a plane needs at least two snapshots, got {len(points)}")
    _, s, vh = torch.linalg.svd(points - center, full_matrices=False)
    explained = (s[:2] ** 2 / (s**2).sum()).tolist()
    return TrajectoryPlane(vh[0], vh[1], (explained[0], explained[1]))
