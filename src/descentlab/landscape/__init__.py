"""Loss landscapes: 1-D and 2-D slices of the loss, and sharpness.

Everything here takes a model, a loss ``loss_fn(output, target)`` and data (``(X, y)`` or
an iterable of batches), never a workload, so it works on any ``nn.Module``::

    d1 = random_direction(model, seed=0)          # filter-normalised (Li et al. 2018)
    d2 = random_direction(model, seed=1)
    grid = plane(model, loss_fn, (X, y), d1, d2, span=1.0, resolution=25)
"""

from descentlab.landscape.directions import (
    HessianDirections,
    escape_direction,
    filter_normalize,
    hessian_directions,
    random_direction,
)
from descentlab.landscape.evaluate import evaluate_losses
from descentlab.landscape.slices import Plane2D, Slice1D, direction_slice, line_slice, plane, project_onto_plane
from descentlab.landscape.vectors import Layout, flatten, layout_of, unflatten

__all__ = [
    "HessianDirections",
    "Layout",
    "Plane2D",
    "Slice1D",
    "direction_slice",
    "escape_direction",
    "evaluate_losses",
    "filter_normalize",
    "flatten",
    "hessian_directions",
    "layout_of",
    "line_slice",
    "plane",
    "project_onto_plane",
    "random_direction",
    "unflatten",
]
