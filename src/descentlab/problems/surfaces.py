"""Analytic 2-D error surfaces, each with its plotting window and its known critical points.

A :class:`Surface` is a differentiable torch function of a point ``p`` of shape ``(..., 2)``
(a single 2-vector or any batch of them), returning the loss with shape ``(...)``. Each one
carries a plotting window, default starting points, suggested optimizer settings, and the
list of its critical points (from the literature or a closed form) with their kinds, so
that :func:`descentlab.critical.surface_points.find_critical_points` can be checked
against it and the report can name what it draws.

Kinds are those of :mod:`descentlab.critical.rules`: ``"local_min"``, ``"local_max"``,
``"saddle"``; ``degenerate`` marks a critical point whose Hessian has a zero eigenvalue
(the second-order test alone cannot decide; see :func:`descentlab.critical.rules.classify_eigenvalues`).

This module knows nothing of optimizers (layer rule); the learning rates below are plain
numbers that :mod:`descentlab.experiments.trajectories` hands to the registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from descentlab.errors import UserInputError

__all__ = ["KnownPoint", "KnownCurve", "Surface", "SURFACES", "get_surface"]

Tensor = torch.Tensor


@dataclass(frozen=True)
class KnownPoint:
    """An isolated critical point known in closed form or from the literature."""

    location: tuple[float, float]
    kind: str
    degenerate: bool = False


@dataclass(frozen=True)
class KnownCurve:
    """A curve of (non-isolated) critical points, given implicitly as ``residual(p) == 0``.

    ``parametric(t)`` returns points on the curve for plotting (``t`` a 1-D tensor; points
    outside the window are simply clipped by the plot).
    """

    description: str
    kind: str
    degenerate: bool
    residual: Callable[[Tensor], Tensor] = field(repr=False)
    parametric: Callable[[Tensor], Tensor] = field(repr=False)


@dataclass(frozen=True)
class Surface:
    """One analytic error surface L(x, y).

    Attributes:
        name: registry name (``"himmelblau"``).
        formula: the function in plain text.
        description: one line for ``descentlab surface --list``.
        fn: the torch function, ``(..., 2) -> (...)``; use the surface itself as a callable.
        window: ``((x_min, x_max), (y_min, y_max))``, the plotting window; every known
            critical point inside it is listed in ``critical_points``.
        starts: default starting points (the first is the one the command uses).
        critical_points: the isolated critical points inside the window.
        critical_curves: curves of critical points (the lecture model's w1*w2 = 1).
        lr: learning rate for optimizers whose step scales with the gradient (SGD, momentum,
            Nesterov), chosen to be stable on this window.
        step_size: learning rate for adaptive optimizers (Adam, RMSProp, Adagrad, ...), whose
            step is about ``lr`` in parameter units whatever the gradient's scale.
        steps: default number of steps.
        minimum: the global minimum value (``None`` if unbounded below), used to plot the
            loss gap ``L - minimum`` on a log axis.
        search_grid: points per axis of the grid of starts that
            :func:`~descentlab.critical.surface_points.find_critical_points` uses.
        basins: the surface's story is which minimum a run ends in (the double well), so
            ``descentlab surface`` maps it over starts, rates and momentum values by default.
    """

    name: str
    formula: str
    description: str
    fn: Callable[[Tensor], Tensor] = field(repr=False)
    window: tuple[tuple[float, float], tuple[float, float]]
    starts: tuple[tuple[float, float], ...]
    critical_points: tuple[KnownPoint, ...] = field(repr=False)
    critical_curves: tuple[KnownCurve, ...] = field(default=(), repr=False)
    lr: float = 1e-2
    step_size: float = 5e-2
    steps: int = 300
    minimum: float | None = 0.0
    search_grid: int = 25
    basins: bool = False

    def __call__(self, p: Tensor) -> Tensor:
        return self.fn(p)

    def gradient(self, p: Tensor) -> Tensor:
        """The exact gradient at ``p`` (shape ``(..., 2)``), by autograd."""
        return self.gradient_and_hessian(p)[0]

    def hessian(self, p: Tensor) -> Tensor:
        """The exact 2x2 Hessian at ``p`` (shape ``(..., 2, 2)``), by autograd."""
        return self.gradient_and_hessian(p)[1]

    def gradient_and_hessian(self, p: Tensor) -> tuple[Tensor, Tensor]:
        """Gradient ``(..., 2)`` and Hessian ``(..., 2, 2)`` at every point of ``p`` at once.

        The points are independent, so the gradient of the summed loss is every point's
        gradient, and the gradient of each summed gradient component is a Hessian row.
        """
        with torch.enable_grad():
            p = torch.as_tensor(p).detach().clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(self.fn(p).sum(), p, create_graph=True)
            rows = [torch.autograd.grad(gradient[..., i].sum(), p, retain_graph=True)[0] for i in range(2)]
        return gradient.detach(), torch.stack(rows, dim=-2).detach()

    def in_window(self, p: Tensor, margin: float = 0.0) -> Tensor:
        """Boolean mask of the points of ``p`` (shape ``(..., 2)``) inside the window."""
        (x0, x1), (y0, y1) = self.window
        x, y = p[..., 0], p[..., 1]
        return (x >= x0 - margin) & (x <= x1 + margin) & (y >= y0 - margin) & (y <= y1 + margin)


# -- the functions ---------------------------------------------------------------------------

def _lecture(p: Tensor) -> Tensor:
    # model y_hat = w1 * w2 * x, one datum x = 1, y = 1, squared error
    return (1 - p[..., 0] * p[..., 1]) ** 2


def _saddle(p: Tensor) -> Tensor:
    return p[..., 0] ** 2 - p[..., 1] ** 2


def _monkey(p: Tensor) -> Tensor:
    x, y = p[..., 0], p[..., 1]
    return x**3 - 3 * x * y**2


def _rosenbrock(p: Tensor) -> Tensor:
    x, y = p[..., 0], p[..., 1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _beale(p: Tensor) -> Tensor:
    x, y = p[..., 0], p[..., 1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _himmelblau(p: Tensor) -> Tensor:
    x, y = p[..., 0], p[..., 1]
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def _camel(p: Tensor) -> Tensor:
    x, y = p[..., 0], p[..., 1]
    return (4 - 2.1 * x**2 + x**4 / 3) * x**2 + x * y + (-4 + 4 * y**2) * y**2


def _rastrigin(p: Tensor) -> Tensor:
    return 20 + (p**2 - 10 * torch.cos(2 * math.pi * p)).sum(-1)


# Tilt 0.3 makes the well at x < 0 deeper (L ~ -0.31) than the one at x > 0 (L ~ +0.29);
# the bump between them is a saddle (the y^2 term curves up across it). Started high on the
# shallow side at (1.8, 0.5) with lr 0.01, plain GD settles in the shallow well while SGD
# with momentum 0.9 carries enough speed over the bump (checked in tests/test_surfaces.py).
_TILT = 0.3


def _double_well(p: Tensor) -> Tensor:
    x, y = p[..., 0], p[..., 1]
    return (x**2 - 1) ** 2 + _TILT * x + y**2


# The adaptive-learning-rate lecture's convex but elongated bowl: Hessian diag(0.4, 40),
# condition number 100. One fixed GD rate must stay below 2/40 = 0.05 for the steep y
# direction; near that limit y flips sign every step (oscillation across the valley) while x
# shrinks by only 1 - 0.4 * lr per step (a crawl along it). Per-coordinate rates (Adagrad,
# RMSProp, Adam) rescale each direction by its own gradient history.
_BOWL_CURVATURES = (0.4, 40.0)


def _elongated_bowl(p: Tensor) -> Tensor:
    return 0.5 * (_BOWL_CURVATURES[0] * p[..., 0] ** 2 + _BOWL_CURVATURES[1] * p[..., 1] ** 2)


# The same bowl turned 45 degrees: in the coordinates u = (x + y)/sqrt(2), v = (y - x)/sqrt(2) it is
# 0.5 * (0.4 u^2 + 40 v^2) = 0.1 (x + y)^2 + 10 (x - y)^2. Its steep and shallow directions are the
# diagonals, so no per-coordinate (diagonal) rescaling of x and y can undo the elongation: Adagrad's
# and RMSProp's advantage on the axis-aligned bowl goes, while gradient descent, which is rotation
# invariant, does exactly what it did there (from the start turned with the bowl).
def _rotated_bowl(p: Tensor) -> Tensor:
    x, y = p[..., 0], p[..., 1]
    return 0.25 * (_BOWL_CURVATURES[0] * (x + y) ** 2 + _BOWL_CURVATURES[1] * (x - y) ** 2)


_ROTATED_START = (-6 * math.sqrt(2.0), -4 * math.sqrt(2.0))  # (-10, 2) turned by 45 degrees


# -- closed-form critical points -------------------------------------------------------------

def _bisect(g: Callable[[float], float], lo: float, hi: float) -> float:
    """The root of ``g`` in ``[lo, hi]`` (a sign change), to machine precision."""
    g_lo = g(lo)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        g_mid = g(mid)
        if (g_mid > 0) == (g_lo > 0):
            lo, g_lo = mid, g_mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _double_well_points() -> tuple[KnownPoint, ...]:
    # dL/dx = 4x^3 - 4x + tilt = 0 has three real roots (tilt < 8/(3*sqrt(3))), y = 0
    g = lambda x: 4 * x**3 - 4 * x + _TILT
    x_deep = _bisect(g, -2.0, -1 / math.sqrt(3))
    x_bump = _bisect(g, -1 / math.sqrt(3), 1 / math.sqrt(3))
    x_shallow = _bisect(g, 1 / math.sqrt(3), 2.0)
    return (
        KnownPoint((x_deep, 0.0), "local_min"),
        KnownPoint((x_bump, 0.0), "saddle"),
        KnownPoint((x_shallow, 0.0), "local_min"),
    )


_RASTRIGIN_HALF_WIDTH = 2.25


def _rastrigin_points() -> tuple[KnownPoint, ...]:
    # L is a sum of g(x) = x^2 - 10 cos(2 pi x) + 10 per coordinate, so its critical points
    # are all pairs of roots of g'(x) = 2x + 20 pi sin(2 pi x): a minimum just inside each
    # integer k and a maximum just outside each half-integer (|x| < 31 for these brackets).
    dg = lambda x: 2 * x + 20 * math.pi * math.sin(2 * math.pi * x)
    roots: list[tuple[float, str]] = [(0.0, "min")]
    for k in range(1, 4):
        x_min = _bisect(dg, k - 0.25, k)
        x_max = _bisect(dg, k - 0.5, k - 0.25)
        for x, kind in ((x_min, "min"), (x_max, "max")):
            if x < _RASTRIGIN_HALF_WIDTH:
                roots += [(x, kind), (-x, kind)]
    roots.sort()
    points = []
    for x, kx in roots:
        for y, ky in roots:
            kind = "local_min" if kx == ky == "min" else "local_max" if kx == ky == "max" else "saddle"
            points.append(KnownPoint((x, y), kind))
    return tuple(points)


def _lecture_curve_points(t: Tensor) -> Tensor:
    # both branches of w1 * w2 = 1, parametrised by w1 = +-exp(t)
    w1 = torch.cat([torch.exp(t), -torch.exp(t)])
    return torch.stack([w1, 1 / w1], dim=-1)


_LECTURE_CURVE = KnownCurve(
    description="w1 * w2 = 1 (loss 0, Hessian eigenvalues 0 and 2(w1^2 + w2^2))",
    kind="local_min",
    degenerate=True,
    residual=lambda p: p[..., 0] * p[..., 1] - 1,
    parametric=_lecture_curve_points,
)


def _registry() -> dict[str, Surface]:
    surfaces = (
        Surface(
            name="lecture",
            formula="(1 - w1*w2)^2",
            description="the lecture's model y = w1*w2*x on one datum (x=1, y=1): a saddle and a curve of minima",
            fn=_lecture,
            window=((-2.0, 2.0), (-2.0, 2.0)),
            starts=((-0.3, 0.25), (1.8, -0.6), (-1.5, -1.5)),
            critical_points=(KnownPoint((0.0, 0.0), "saddle"),),
            critical_curves=(_LECTURE_CURVE,),
            lr=0.05, step_size=0.05, steps=100,
        ),
        Surface(
            name="saddle",
            formula="x^2 - y^2",
            description="the plain saddle: down along y, up along x (unbounded below)",
            fn=_saddle,
            window=((-1.5, 1.5), (-1.5, 1.5)),
            starts=((1.0, 1e-3), (1.0, -0.5)),
            critical_points=(KnownPoint((0.0, 0.0), "saddle"),),
            lr=0.01, step_size=0.01, steps=300, minimum=None,
        ),
        Surface(
            name="monkey",
            formula="x^3 - 3*x*y^2",
            description="the monkey saddle: three valleys, Hessian zero at the origin (degenerate)",
            fn=_monkey,
            window=((-1.5, 1.5), (-1.5, 1.5)),
            starts=((0.8, 0.05), (-0.5, 0.6)),
            critical_points=(KnownPoint((0.0, 0.0), "saddle", degenerate=True),),
            lr=0.01, step_size=0.01, steps=200, minimum=None,
        ),
        Surface(
            name="rosenbrock",
            formula="(1 - x)^2 + 100*(y - x^2)^2",
            description="Rosenbrock's banana valley: one minimum at (1, 1) at the end of a flat curved valley",
            fn=_rosenbrock,
            window=((-2.0, 2.0), (-1.0, 3.0)),
            starts=((-1.5, 2.0), (-1.2, 1.0), (0.5, -0.5)),
            critical_points=(KnownPoint((1.0, 1.0), "local_min"),),
            lr=1e-3, step_size=5e-2, steps=300,
        ),
        Surface(
            name="beale",
            formula="(1.5 - x + x*y)^2 + (2.25 - x + x*y^2)^2 + (2.625 - x + x*y^3)^2",
            description="Beale: flat plateau, sharp ridges, minimum at (3, 0.5), "
                        "saddles at (0, 1) and (0.1005, -2.6445)",
            fn=_beale,
            window=((-4.5, 4.5), (-4.5, 4.5)),
            starts=((1.0, 1.5), (-1.0, -1.0)),
            # saddles: (0, 1) closed form; the second from Newton in float64, both confirmed
            # by a resultant computation in tests/test_surface_points.py
            critical_points=(
                KnownPoint((3.0, 0.5), "local_min"),
                KnownPoint((0.0, 1.0), "saddle"),
                KnownPoint((0.1005379373, -2.6445135850), "saddle"),
            ),
            lr=1e-4, step_size=5e-2, steps=300, search_grid=41,
        ),
        Surface(
            name="himmelblau",
            formula="(x^2 + y - 11)^2 + (x + y^2 - 7)^2",
            description="Himmelblau: four minima (loss 0), one maximum, four saddles",
            fn=_himmelblau,
            window=((-5.0, 5.0), (-5.0, 5.0)),
            starts=((0.0, 0.0), (-1.0, -0.5), (0.5, 4.5)),
            # Himmelblau 1972; values as tabulated (e.g. Wikipedia, "Himmelblau's function")
            critical_points=(
                KnownPoint((3.0, 2.0), "local_min"),
                KnownPoint((-2.805118, 3.131312), "local_min"),
                KnownPoint((-3.779310, -3.283186), "local_min"),
                KnownPoint((3.584428, -1.848126), "local_min"),
                KnownPoint((-0.270845, -0.923039), "local_max"),
                KnownPoint((0.086677, 2.884254), "saddle"),
                KnownPoint((-3.073026, -0.081353), "saddle"),
                KnownPoint((3.385154, 0.073852), "saddle"),
                KnownPoint((-0.127961, -1.953715), "saddle"),
            ),
            lr=5e-3, step_size=5e-2, steps=300,
        ),
        Surface(
            name="camel",
            formula="(4 - 2.1*x^2 + x^4/3)*x^2 + x*y + (-4 + 4*y^2)*y^2",
            description="six-hump camel: six minima (two global), two maxima, seven saddles",
            fn=_camel,
            window=((-2.2, 2.2), (-1.2, 1.2)),
            starts=((-1.5, 1.0), (1.9, 0.0), (0.3, 1.0)),
            # odd symmetry L(-p) = L(p): listed in +- pairs, and the saddle at the origin
            critical_points=tuple(
                KnownPoint((s * x, s * y), kind)
                for x, y, kind in (
                    (0.0898420131, -0.7126564030, "local_min"),
                    (1.7036067, -0.7960836, "local_min"),
                    (1.6071047, 0.5686514, "local_min"),
                    (1.2302300, 0.1623350, "local_max"),
                    (1.1092034, -0.7682680, "saddle"),
                    (1.2960700, 0.6050840, "saddle"),
                    (1.6380680, 0.2286740, "saddle"),
                )
                for s in (1.0, -1.0)
            ) + (KnownPoint((0.0, 0.0), "saddle"),),
            lr=1e-2, step_size=5e-2, steps=300, minimum=-1.031628453489877,
        ),
        Surface(
            name="rastrigin",
            formula="20 + sum_i (x_i^2 - 10*cos(2*pi*x_i))",
            description=f"Rastrigin on [-{_RASTRIGIN_HALF_WIDTH}, {_RASTRIGIN_HALF_WIDTH}]^2: "
                        "25 local minima, 16 maxima, 40 saddles",
            fn=_rastrigin,
            window=((-_RASTRIGIN_HALF_WIDTH, _RASTRIGIN_HALF_WIDTH),) * 2,
            starts=((1.9, 1.6), (-1.2, 0.7)),
            critical_points=_rastrigin_points(),
            lr=2e-3, step_size=5e-2, steps=300, search_grid=37,
        ),
        Surface(
            name="double-well",
            formula=f"(x^2 - 1)^2 + {_TILT}*x + y^2",
            description="a tilted double well: plain GD stops in the shallow well, momentum rolls into the deep one",
            fn=_double_well,
            window=((-2.0, 2.2), (-1.2, 1.2)),
            starts=((1.8, 0.5),),
            critical_points=_double_well_points(),
            lr=1e-2, step_size=5e-2, steps=300,
            minimum=float(_double_well(torch.tensor(_double_well_points()[0].location, dtype=torch.float64))),
            basins=True,
        ),
        Surface(
            name="elongated-bowl",
            formula="0.2*x^2 + 20*y^2",
            description="the lecture's convex but elongated bowl (condition number 100): one fixed rate "
                        "oscillates across the valley or crawls along it",
            fn=_elongated_bowl,
            window=((-12.0, 12.0), (-3.0, 3.0)),
            starts=((-10.0, 2.0),),
            critical_points=(KnownPoint((0.0, 0.0), "local_min"),),
            lr=0.03, step_size=1.0, steps=150,
        ),
        Surface(
            name="rotated-bowl",
            formula="0.1*(x+y)^2 + 10*(x-y)^2",
            description="the elongated bowl turned 45 degrees (its start turned with it): gradient descent does "
                        "what it did, per-coordinate rates lose their advantage",
            fn=_rotated_bowl,
            window=((-10.0, 10.0), (-10.0, 10.0)),
            starts=(_ROTATED_START,),
            critical_points=(KnownPoint((0.0, 0.0), "local_min"),),
            lr=0.03, step_size=1.0, steps=150,
        ),
    )
    return {surface.name: surface for surface in surfaces}


#: Every surface by name, read-only.
SURFACES: Mapping[str, Surface] = MappingProxyType(_registry())


def get_surface(name: str) -> Surface:
    """The surface called ``name``; an unknown name raises :class:`UserInputError` listing the valid ones."""
    key = str(name).strip().lower()
    if key not in SURFACES:
        raise UserInputError(f"unknown surface {name!r}; valid: {', '.join(SURFACES)}")
    return SURFACES[key]
