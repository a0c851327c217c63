"""The plane to slice the loss on: its centre, two directions, and what they are.

Four ways to choose ``center + a d1 + b d2`` (``center`` the model's parameters unless said):

- ``"random"``: two Gaussian directions, filter-normalised (Li et al. 2018;
  :func:`~descentlab.landscape.directions.random_direction`), drawn with seeds ``seed`` and
  ``seed + 1``;
- ``"hessian"``: the Hessian's two top eigenvectors (Lanczos): the sharpest plane;
- ``"pca"``: the two principal directions of a training trajectory about the centre
  (:func:`~descentlab.landscape.pca.trajectory_plane`), the plane the path lies closest to;
- ``"axes"``: a two-parameter model's own coordinates, centred at the origin, so ``(a, b)``
  are the parameters themselves (the lecture's ``(w1, w2)``);
- ``"auto"``: ``"axes"`` for a two-parameter model, ``"random"`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from descentlab.checks import check_choice
from descentlab.landscape.directions import hessian_directions, random_direction
from descentlab.landscape.pca import trajectory_plane
from descentlab.params import flatten, layout_of

__all__ = ["PLANES", "PlaneDirections", "plane_directions"]

#: ``kind`` values of :func:`plane_directions`.
PLANES = ("auto", "random", "hessian", "pca", "axes")


@dataclass(frozen=True)
class PlaneDirections:
    """A plane ``center + a d1 + b d2`` and what its directions are.

    Attributes:
        kind: how it was chosen (``"random"``, ``"hessian"``, ``"pca"`` or ``"axes"``).
        center, d1, d2: flat vectors over the model's trainable parameters.
        label: the directions in words (``"the two top Hessian eigenvectors"``).
        a_label, b_label: what the coordinates ``a`` and ``b`` measure.
        eigenvalues: ``"hessian"``: the eigenvalues of ``d1`` and ``d2``.
        explained: ``"pca"``: the share of the trajectory's squared length along ``d1`` and ``d2``.
    """

    kind: str
    center: torch.Tensor
    d1: torch.Tensor
    d2: torch.Tensor
    label: str
    a_label: str
    b_label: str
    eigenvalues: tuple[float, float] | None = None
    explained: tuple[float, float] | None = None

    def __repr__(self) -> str:
        return f"PlaneDirections({self.kind!r}, {self.label!r}, n_params={len(self.d1)})"


def plane_directions(model: nn.Module, loss_fn: Callable, data, kind: str = "auto", *,
                     trajectory: torch.Tensor | None = None, seed: int = 0, filter_norm: bool = True,
                     ignore_bias: bool = True) -> PlaneDirections:
    """The plane of ``kind`` (see the module docstring) through ``model``'s current parameters.

    Args:
        model, loss_fn, data: the loss whose Hessian gives the ``"hessian"`` plane.
        kind: one of :data:`PLANES`.
        trajectory: ``(m, n)`` snapshots of the parameters, one per row (``"pca"`` only).
        seed: of the random directions, and of Lanczos.
        filter_norm, ignore_bias: of the random directions
            (:func:`~descentlab.landscape.directions.random_direction`).

    Raises:
        ValueError: ``"axes"`` for a model without exactly two parameters, ``"pca"`` without a
            trajectory, random directions that filter normalisation makes zero.
    """
    check_choice("kind", kind, PLANES)
    center = flatten(model)
    n_params = center.numel()
    if kind == "auto":
        kind = "axes" if n_params == 2 else "random"
    if kind == "axes":
        if n_params != 2:
            raise ValueError(f"kind: 'axes' needs a two-parameter model; this one has {n_params}")
        d1, d2 = torch.eye(2, dtype=center.dtype)
        a_label, b_label = layout_of(model).names
        # the plane of the model's own coordinates, through the origin
        return PlaneDirections(kind, torch.zeros_like(center), d1, d2, "the model's two parameters", a_label, b_label)
    if kind == "random":
        d1 = random_direction(model, seed=seed, filter_norm=filter_norm, ignore_bias=ignore_bias)
        d2 = random_direction(model, seed=seed + 1, filter_norm=filter_norm, ignore_bias=ignore_bias)
        if float(d1.norm()) == 0.0:
            raise ValueError("filter_norm: the filter-normalised directions are zero for this model (all its tensors "
                             "are scalars or biases, or its weights are zero); move biases too or skip the "
                             "normalisation")
        label = ("two random filter-normalised directions (Li et al. 2018)" if filter_norm
                 else "two random Gaussian directions")
        return PlaneDirections(kind, center, d1, d2, label, "a (direction 1)", "b (direction 2)")
    if kind == "hessian":
        found = hessian_directions(model, loss_fn, data, k=2, which="LA", seed=seed)
        d1, d2 = found.vectors
        top, second = (float(v) for v in found.eigenvalues)
        return PlaneDirections(kind, center, d1, d2, "the two top Hessian eigenvectors",
                               f"top eigenvector (lambda={top:.3g})", f"second eigenvector (lambda={second:.3g})",
                               eigenvalues=(top, second))
    if trajectory is None:
        raise ValueError("trajectory: the 'pca' plane needs the training trajectory's snapshots")
    found = trajectory_plane(trajectory, center)
    return PlaneDirections(kind, center, found.d1, found.d2,
                           "the two principal directions of the trajectory (Li et al. 2018, sec. 7)",
                           "1st principal direction", "2nd principal direction", explained=found.explained)
