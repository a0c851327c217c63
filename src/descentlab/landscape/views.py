"""One call for a whole slice of the landscape: choose the directions, evaluate, and measure around it.

What ``descentlab landscape`` computes, for any model, loss and data, as
:func:`slice_landscape` with one of three requests:

- :class:`LineRequest`: ``L((1 - t) theta_a + t theta_b)`` (:func:`~descentlab.landscape.slices.line_slice`);
- :class:`DirectionRequest`: ``L(theta + t d)`` along a random, Hessian (top, bottom), escape or
  given direction, with the second-order model of the loss along it
  (:func:`~descentlab.landscape.quadratic.quadratic_model`);
- :class:`PlaneRequest`: ``L(theta + a d1 + b d2)`` on a grid over a random, Hessian, trajectory
  (PCA) or axes plane (:func:`~descentlab.landscape.planes.plane_directions`), with the training
  trajectory projected onto it and the grid widened to hold it
  (:mod:`~descentlab.landscape.trajectory`).

``theta`` is the model's current parameters. The requests check their own arguments when
built (``ValueError`` naming the argument); what depends on the model is checked by
:func:`slice_landscape`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from descentlab.checks import check_choice, check_int, check_number
from descentlab.landscape.directions import escape_direction, hessian_directions, random_direction
from descentlab.landscape.planes import PLANES, PlaneDirections, plane_directions
from descentlab.landscape.quadratic import QuadraticModel, quadratic_model
from descentlab.landscape.slices import Plane2D, Slice1D, direction_slice, line_slice, plane
from descentlab.landscape.trajectory import ProjectedTrajectory, Trajectory, covering_span, project_trajectory
from descentlab.params import flatten

__all__ = [
    "DIRECTIONS",
    "LineRequest",
    "DirectionRequest",
    "PlaneRequest",
    "DirectionView",
    "PlaneView",
    "slice_landscape",
]

#: The named directions of a :class:`DirectionRequest` (or give a flat tensor).
DIRECTIONS = ("random", "top", "bottom", "escape")


@dataclass(frozen=True)
class LineRequest:
    """The line from ``start`` (``t = 0``) to ``end`` (``t = 1``), ``t`` over ``[-margin, 1 + margin]``
    in ``n_points`` steps (flat parameter vectors; see :func:`~descentlab.landscape.slices.line_slice`)."""

    start: torch.Tensor
    end: torch.Tensor
    n_points: int = 51
    margin: float = 0.25

    def __post_init__(self) -> None:
        check_int("n_points", self.n_points, low=2)
        check_number("margin", self.margin)
        if self.start.shape != self.end.shape:
            raise ValueError(f"end: shape {tuple(self.end.shape)}, start has {tuple(self.start.shape)}")
        if float((self.end - self.start.to(self.end)).norm()) == 0.0:
            raise ValueError("end: the same point as start, nothing to slice")


@dataclass(frozen=True)
class DirectionRequest:
    """The loss along ``direction``, ``t`` over ``[-span, span]`` in ``n_points`` steps.

    ``direction``: ``"random"`` (filter-normalised unless ``filter_norm=False``; biases move only
    with ``ignore_bias=False``), ``"top"`` / ``"bottom"`` (the Hessian eigenvector of the
    largest / smallest eigenvalue), ``"escape"`` (the bottom one signed downhill), or a flat
    tensor over the trainable parameters, described by ``label``. ``seed`` seeds the random
    direction and Lanczos.
    """

    direction: str | torch.Tensor = "top"
    span: float = 1.0
    n_points: int = 51
    filter_norm: bool = True
    ignore_bias: bool = True
    seed: int = 0
    label: str = "given direction"

    def __post_init__(self) -> None:
        if not isinstance(self.direction, torch.Tensor):
            check_choice("direction", self.direction, DIRECTIONS)
        elif not self.direction.is_floating_point():
            raise ValueError(f"direction: holds {self.direction.dtype} values, not floating-point ones")
        check_number("span", self.span, low_open=True)
        check_int("n_points", self.n_points, low=2)
        check_int("seed", self.seed, low=0)


@dataclass(frozen=True)
class PlaneRequest:
    """A ``resolution x resolution`` grid over ``[-span, span]^2`` of a plane
    (:func:`~descentlab.landscape.planes.plane_directions`: ``directions`` is its ``kind``).

    ``trajectory`` (snapshots of training) is needed by the ``"pca"`` plane and drawn when
    ``project_trajectory``: the grid then widens to hold the whole projected path. On an
    ``"axes"`` plane ``start`` (the initial parameters, when they differ from the model's) is
    marked beside the model.
    """

    directions: str = "auto"
    span: float = 1.0
    resolution: int = 25
    trajectory: Trajectory | None = None
    project_trajectory: bool = False
    start: torch.Tensor | None = None
    filter_norm: bool = True
    ignore_bias: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("directions", self.directions, PLANES)
        check_number("span", self.span, low_open=True)
        check_int("resolution", self.resolution, low=2)
        check_int("seed", self.seed, low=0)
        if self.trajectory is None and (self.project_trajectory or self.directions == "pca"):
            raise ValueError("trajectory: needed to draw the path or to take its principal directions")


@dataclass(frozen=True)
class DirectionView:
    """The loss along one direction.

    Attributes:
        slice: the loss at each ``t`` (its ``label`` names the direction).
        eigenvalue: the Hessian eigenvalue of a ``"top"``, ``"bottom"`` or ``"escape"`` direction.
        quadratic: the second-order model of the loss along the direction at ``t = 0``.
    """

    slice: Slice1D
    eigenvalue: float | None
    quadratic: QuadraticModel

    def __repr__(self) -> str:
        return f"DirectionView({self.slice!r}, eigenvalue={self.eigenvalue}, curvature={self.quadratic.curvature:.4g})"


@dataclass(frozen=True)
class PlaneView:
    """The loss on a plane.

    Attributes:
        grid: the losses on the grid (its ``label`` names the directions).
        plane: the centre, the directions and what they are.
        marks: ``(label, a, b)`` of points to mark (the model and its initial point on an axes plane).
        trajectory: the training path on the plane, when asked for.
    """

    grid: Plane2D
    plane: PlaneDirections
    marks: tuple[tuple[str, float, float], ...] = ()
    trajectory: ProjectedTrajectory | None = None

    def __repr__(self) -> str:
        return f"PlaneView({self.grid!r})"


def slice_landscape(model: nn.Module, loss_fn: Callable, data, request: LineRequest | DirectionRequest | PlaneRequest,
                    *, chunk_size: int = 64, workers: int = 1, progress: bool = False) -> Slice1D | DirectionView | PlaneView:
    """The slice ``request`` asks for through ``model``'s current parameters.

    Args:
        model: any ``nn.Module`` (its trainable parameters are the space sliced; it is not changed).
        loss_fn: ``loss_fn(output, target)``, the mean (or sum) over a batch.
        data: ``(X, y)`` or an iterable of batches.
        request: a :class:`LineRequest`, :class:`DirectionRequest` or :class:`PlaneRequest`.
        chunk_size, workers, progress: how the points are evaluated
            (:func:`~descentlab.landscape.evaluate.evaluate_losses`).

    Returns:
        :class:`~descentlab.landscape.slices.Slice1D` for a line, :class:`DirectionView` or
        :class:`PlaneView`.

    Raises:
        ValueError: a given direction of another length than the model's parameters, a zero
            direction, a plane the model cannot have (see
            :func:`~descentlab.landscape.planes.plane_directions`).
    """
    evaluate = {"chunk_size": chunk_size, "workers": workers, "progress": progress}
    if isinstance(request, LineRequest):
        return line_slice(model, loss_fn, data, request.start, request.end, n_points=request.n_points,
                          margin=request.margin, **evaluate)
    if isinstance(request, DirectionRequest):
        return _direction(model, loss_fn, data, request, evaluate)
    if isinstance(request, PlaneRequest):
        return _plane(model, loss_fn, data, request, evaluate)
    raise ValueError(f"request: expected a LineRequest, DirectionRequest or PlaneRequest, got {type(request).__name__}")


def _direction(model: nn.Module, loss_fn: Callable, data, request: DirectionRequest, evaluate: dict) -> DirectionView:
    center = flatten(model)
    kind, eigenvalue = request.direction, None
    if isinstance(kind, torch.Tensor):
        direction, label = kind, request.label
    elif kind == "random":
        direction = random_direction(model, seed=request.seed, filter_norm=request.filter_norm,
                                     ignore_bias=request.ignore_bias)
        label = "random filter-normalised direction" if request.filter_norm else "random direction"
    elif kind in ("top", "bottom"):
        found = hessian_directions(model, loss_fn, data, k=1, which="LA" if kind == "top" else "SA",
                                   seed=request.seed)
        direction, eigenvalue = found.vectors[0], float(found.eigenvalues[0])
        label = f"{kind} Hessian eigenvector"
    else:
        direction, eigenvalue = escape_direction(model, loss_fn, data, seed=request.seed)
        label = "escape direction (most negative curvature, downhill sign)"
    direction = direction.reshape(-1).to(center)
    if direction.numel() != center.numel():
        raise ValueError(f"direction: {direction.numel()} values, the model has {center.numel()} parameters")
    if float(direction.norm()) == 0.0:
        raise ValueError("direction: it is zero (filter normalisation zeroes scalars and biases unless they move "
                         "too, and filters whose weights are zero)")
    line = direction_slice(model, loss_fn, data, direction, span=request.span, n_points=request.n_points,
                           label=label, **evaluate)
    return DirectionView(line, eigenvalue, quadratic_model(model, loss_fn, data, direction))


def _plane(model: nn.Module, loss_fn: Callable, data, request: PlaneRequest, evaluate: dict) -> PlaneView:
    points = request.trajectory.points if request.trajectory is not None else None
    found = plane_directions(model, loss_fn, data, request.directions, trajectory=points, seed=request.seed,
                             filter_norm=request.filter_norm, ignore_bias=request.ignore_bias)
    marks: tuple[tuple[str, float, float], ...] = ()
    if found.kind == "axes":  # the coordinates are the parameters themselves
        final = flatten(model)
        marks = (("model", float(final[0]), float(final[1])),)
        if request.start is not None and float((request.start.to(final) - final).norm()) > 0:
            marks = (("init", float(request.start[0]), float(request.start[1])),) + marks
    span_a = span_b = (-request.span, request.span)
    projected = None
    if request.project_trajectory:
        projected = project_trajectory(model, loss_fn, data, request.trajectory, found.center, found.d1, found.d2,
                                       chunk_size=evaluate["chunk_size"])
        span_a, span_b = covering_span(projected.coords, request.span)
    grid = plane(model, loss_fn, data, found.d1, found.d2, center=found.center, span=span_a, span_b=span_b,
                 resolution=request.resolution, label=found.label, **evaluate)
    return PlaneView(grid, found, marks, projected)
