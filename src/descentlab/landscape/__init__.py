"""Loss landscapes: 1-D and 2-D slices of the loss, the planes and directions to slice along.

Everything here takes a model, a loss ``loss_fn(output, target)`` and data (``(X, y)`` or
an iterable of batches), never a workload, so it works on any ``nn.Module``::

    d1 = random_direction(model, seed=0)          # filter-normalised (Li et al. 2018)
    d2 = random_direction(model, seed=1)
    grid = plane(model, loss_fn, (X, y), d1, d2, span=1.0, resolution=25)

or, as ``descentlab landscape`` does, one request for the whole slice::

    view = slice_landscape(model, loss_fn, (X, y), PlaneRequest("pca", trajectory=path, project_trajectory=True))

Flat vectors follow :mod:`descentlab.params` (``flatten``, ``unflatten``, ``layout_of`` are
re-exported from there).
"""

from descentlab.landscape.directions import (
    HessianDirections,
    escape_direction,
    filter_normalize,
    hessian_directions,
    random_direction,
)
from descentlab.landscape.evaluate import evaluate_losses
from descentlab.landscape.pca import TrajectoryPlane, trajectory_plane
from descentlab.landscape.planes import PLANES, PlaneDirections, plane_directions
from descentlab.landscape.quadratic import QuadraticModel, quadratic_model
from descentlab.landscape.slices import Plane2D, Slice1D, direction_slice, line_slice, plane, project_onto_plane
from descentlab.landscape.trajectory import ProjectedTrajectory, Trajectory, covering_span, project_trajectory
from descentlab.landscape.views import (
    DIRECTIONS,
    DirectionRequest,
    DirectionView,
    LineRequest,
    PlaneRequest,
    PlaneView,
    slice_landscape,
)
from descentlab.params import Layout, flatten, layout_of, unflatten

__all__ = [
    "DIRECTIONS",
    "DirectionRequest",
    "DirectionView",
    "HessianDirections",
    "Layout",
    "LineRequest",
    "PLANES",
    "Plane2D",
    "PlaneDirections",
    "PlaneRequest",
    "PlaneView",
    "ProjectedTrajectory",
    "QuadraticModel",
    "Slice1D",
    "Trajectory",
    "TrajectoryPlane",
    "covering_span",
    "direction_slice",
    "escape_direction",
    "evaluate_losses",
    "filter_normalize",
    "flatten",
    "hessian_directions",
    "layout_of",
    "line_slice",
    "plane",
    "plane_directions",
    "project_onto_plane",
    "project_trajectory",
    "quadratic_model",
    "random_direction",
    "slice_landscape",
    "trajectory_plane",
    "unflatten",
]
