"""Every critical point of a 2-D surface: Newton on the gradient from a grid of starts.

``find_critical_points(surface)`` solves ∇L(p) = 0 from every point of a grid over the
surface's window with Newton's method on the gradient, p ← p − H⁺∇L (pseudo-inverse, so a
singular Hessian — the monkey saddle, the lecture model's curve of minima — still gives a
step; the step is capped so no start jumps across the window), keeps the converged points
inside the window, merges duplicates, and names each one from its exact 2×2 Hessian with
:func:`descentlab.critical.rules.classify_eigenvalues` (the same rule the network classifier
uses; degenerate points are probed along their flat directions).

A degenerate point is **not isolated** when critical points continue along its flat
direction: Newton restarted a small step along that direction converges to a different
critical point nearby (every point of w1*w2 = 1 does this; the monkey saddle does not).
Non-isolated points are thinned to a spacing of about 1/40 of the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from descentlab.critical.rules import EIG_TOL, classify_eigenvalues
from descentlab.problems.surfaces import Surface

__all__ = ["SurfacePoint", "find_critical_points", "newton_on_gradient", "Agreement", "compare_with_known"]


@dataclass(frozen=True)
class SurfacePoint:
    """A critical point found on a surface.

    Attributes:
        location: (x, y).
        kind: ``"local_min"``, ``"local_max"``, ``"saddle"`` (or ``"flat"``), from
            :func:`~descentlab.critical.rules.classify_eigenvalues`.
        degenerate: the Hessian has a zero eigenvalue.
        isolated: no other critical point continues along a flat direction.
        loss: L at the point.
        grad_norm: ||∇L|| at the point (Newton's residual).
        eigenvalues: the Hessian's eigenvalues, ascending.
        decided_by: how the kind was decided (``"second-order"`` or ``"probe"``).
    """

    location: tuple[float, float]
    kind: str
    degenerate: bool
    isolated: bool
    loss: float
    grad_norm: float
    eigenvalues: tuple[float, float]
    decided_by: str

    def as_dict(self) -> dict:
        """A JSON-ready dict (what the command writes to ``critical_points.json``)."""
        return {
            "x": self.location[0], "y": self.location[1], "kind": self.kind,
            "degenerate": self.degenerate, "isolated": self.isolated, "loss": self.loss,
            "grad_norm": self.grad_norm, "eigenvalues": list(self.eigenvalues),
            "decided_by": self.decided_by,
        }


def newton_on_gradient(surface: Surface, starts: torch.Tensor, *, iterations: int = 100,
                       max_step: float | None = None) -> torch.Tensor:
    """Run Newton's method on ∇L = 0 from every row of ``starts`` (shape ``(n, 2)``) at once.

    Each step is p ← p − H⁺ g with the pseudo-inverse H⁺ (relative cut-off 1e-12), its
    length capped at ``max_step`` (default: a tenth of the window's smaller side). Stops early
    once no point moves by more than 1e-14 of the window.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    (x0, x1), (y0, y1) = surface.window
    cap = max_step if max_step is not None else 0.1 * min(x1 - x0, y1 - y0)
    points = torch.as_tensor(starts, dtype=torch.float64).reshape(-1, 2).clone()
    for _ in range(iterations):
        gradient, hessian = surface.gradient_and_hessian(points)
        step = (torch.linalg.pinv(hessian, rtol=1e-12) @ gradient.unsqueeze(-1)).squeeze(-1)
        step = torch.nan_to_num(step, nan=0.0, posinf=0.0, neginf=0.0)
        length = step.norm(dim=-1, keepdim=True)
        step = torch.where(length > cap, step * cap / length, step)
        points = points - step
        if float(length.max()) <= 1e-14 * cap:
            break
    return points


def find_critical_points(
    surface: Surface,
    *,
    grid: int | None = None,
    grad_tol: float = 1e-8,
    eig_tol: float = EIG_TOL,
    merge_tol: float | None = None,
    iterations: int = 100,
) -> tuple[SurfacePoint, ...]:
    """All critical points of ``surface`` inside its window, sorted by (x, y).

    Args:
        grid: starts per axis (default ``surface.search_grid``).
        grad_tol: a point is critical when ||∇L|| <= grad_tol * max(1, ||H||).
        eig_tol: zero tolerance of the classification rule (see :mod:`descentlab.critical.rules`).
        merge_tol: points closer than this are one point (default 1e-5 × window size).
        iterations: Newton iterations per start.
    """
    grid = surface.search_grid if grid is None else grid
    if grid < 2:
        raise ValueError(f"grid must be >= 2, got {grid}")
    if grad_tol <= 0:
        raise ValueError(f"grad_tol must be > 0, got {grad_tol}")
    (x0, x1), (y0, y1) = surface.window
    size = max(x1 - x0, y1 - y0)
    merge_tol = 1e-5 * size if merge_tol is None else merge_tol
    if merge_tol <= 0:
        raise ValueError(f"merge_tol must be > 0, got {merge_tol}")
    starts = torch.cartesian_prod(
        torch.linspace(x0, x1, grid, dtype=torch.float64), torch.linspace(y0, y1, grid, dtype=torch.float64)
    )
    points = newton_on_gradient(surface, starts, iterations=iterations)
    points = _merge(_critical_inside(surface, points, grad_tol), merge_tol)
    isolated = _isolated(surface, points, eig_tol, grad_tol, merge_tol, iterations)
    # a curve of critical points yields one point per start: keep one every 1/40 of the window
    keep = torch.cat([torch.nonzero(isolated).reshape(-1),
                      torch.nonzero(~isolated).reshape(-1)[_merge_index(points[~isolated], size / 40)]])
    found = [_describe(surface, points[i], bool(isolated[i]), eig_tol) for i in keep.tolist()]
    return tuple(sorted(found, key=lambda p: p.location))


def _critical_inside(surface: Surface, points: torch.Tensor, grad_tol: float) -> torch.Tensor:
    points = points[torch.isfinite(points).all(-1)]
    gradient, hessian = surface.gradient_and_hessian(points)
    scale = torch.linalg.matrix_norm(hessian, ord=2).clamp(min=1.0)
    keep = (gradient.norm(dim=-1) <= grad_tol * scale) & surface.in_window(points)
    return points[keep]


def _merge_index(points: torch.Tensor, tol: float) -> torch.Tensor:
    """Indices of a greedy subset of ``points`` with no two closer than ``tol`` (first wins)."""
    if len(points) == 0:
        return torch.zeros(0, dtype=torch.long)
    close = (torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist") <= tol).tolist()
    taken = [False] * len(points)
    kept = []
    for i in range(len(points)):
        if not taken[i]:
            kept.append(i)
            taken = [t or c for t, c in zip(taken, close[i])]
    return torch.tensor(kept, dtype=torch.long)


def _merge(points: torch.Tensor, tol: float) -> torch.Tensor:
    return points[_merge_index(points, tol)]


def _isolated(surface: Surface, points: torch.Tensor, eig_tol: float, grad_tol: float,
              merge_tol: float, iterations: int) -> torch.Tensor:
    """For each point: False when Newton, restarted a nudge along a flat direction, lands elsewhere.

    On a curve of critical points the restart lands on a different critical point; at an
    isolated degenerate point (the monkey saddle) it comes back. Non-degenerate points are
    isolated by the inverse function theorem.
    """
    isolated = torch.ones(len(points), dtype=torch.bool)
    if len(points) == 0:
        return isolated
    values, vectors = torch.linalg.eigh(surface.hessian(points))
    scale = values.abs().amax(-1, keepdim=True).clamp(min=1.0)
    flat = values.abs() <= eig_tol * scale  # the rule of descentlab.critical.rules.zero_mask
    owners, starts = [], []
    (x0, x1), (y0, y1) = surface.window
    nudge = 1e-2 * max(x1 - x0, y1 - y0)
    for i, j in torch.nonzero(flat).tolist():
        for sign in (1.0, -1.0):
            owners.append(i)
            starts.append(points[i] + sign * nudge * vectors[i, :, j])
    if not starts:
        return isolated
    landed = newton_on_gradient(surface, torch.stack(starts), iterations=iterations)
    gradient, hessian = surface.gradient_and_hessian(landed)
    critical = gradient.norm(dim=-1) <= grad_tol * torch.linalg.matrix_norm(hessian, ord=2).clamp(min=1.0)
    moved = (landed - points[owners]).norm(dim=-1) > 10 * merge_tol
    for owner, elsewhere in zip(owners, (critical & moved).tolist()):
        if elsewhere:
            isolated[owner] = False
    return isolated


def _describe(surface: Surface, point: torch.Tensor, isolated: bool, eig_tol: float) -> SurfacePoint:
    gradient, hessian = surface.gradient_and_hessian(point)
    values, vectors = torch.linalg.eigh(hessian)
    verdict = classify_eigenvalues(values, eig_tol, eigenvectors=vectors, loss=surface.fn, point=point)
    return SurfacePoint(
        location=(float(point[0]), float(point[1])),
        kind=verdict.kind,
        degenerate=verdict.degenerate,
        isolated=isolated,
        loss=float(surface(point)),
        grad_norm=float(gradient.norm()),
        eigenvalues=(float(values[0]), float(values[1])),
        decided_by=verdict.decided_by,
    )


def _distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    return ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5


@dataclass(frozen=True)
class Agreement:
    """How found critical points compare with a surface's known list.

    Attributes:
        matched: known isolated points found with the right kind and degeneracy.
        missing: known isolated points not found.
        misclassified: (known, found) pairs at the same place with a different kind.
        extra: found points that are neither a known point nor on a known curve.
        on_curves: found points lying on a known curve with its kind.
    """

    matched: tuple
    missing: tuple
    misclassified: tuple
    extra: tuple
    on_curves: tuple

    @property
    def exact(self) -> bool:
        """Every known point found and named right, and nothing else found."""
        return not (self.missing or self.misclassified or self.extra)


def compare_with_known(surface: Surface, found: Sequence[SurfacePoint], tol: float = 1e-4) -> Agreement:
    """Match ``found`` against ``surface.critical_points`` and ``surface.critical_curves``.

    A known point matches a found one within ``tol`` times the window size (the tabulated
    values of the literature have about six decimals).
    """
    (x0, x1), (y0, y1) = surface.window
    radius = tol * max(x1 - x0, y1 - y0, 1.0)
    matched, missing, misclassified = [], [], []
    used: set[int] = set()
    for known in surface.critical_points:
        near = [i for i, p in enumerate(found) if _distance(known.location, p.location) <= radius]
        if not near:
            missing.append(known)
            continue
        used.update(near)
        point = found[near[0]]
        if point.kind == known.kind and point.degenerate == known.degenerate:
            matched.append(known)
        else:
            misclassified.append((known, point))
    on_curves, extra = [], []
    for i, point in enumerate(found):
        if i in used:
            continue
        location = torch.tensor(point.location, dtype=torch.float64)
        curve = next((c for c in surface.critical_curves if abs(float(c.residual(location))) <= 1e-6), None)
        if curve is not None and point.kind == curve.kind and point.degenerate == curve.degenerate:
            on_curves.append(point)
        else:
            extra.append(point)
    return Agreement(tuple(matched), tuple(missing), tuple(misclassified), tuple(extra), tuple(on_curves))
