"""The one place where Hessian eigenvalues become a kind of critical point.

Second-order test (Taylor at a critical point, g = 0): L(θ + v) ≈ L(θ) + ½ vᵀHv, so

- every eigenvalue > 0  → ``"local_min"``;
- every eigenvalue < 0  → ``"local_max"``;
- eigenvalues of both signs → ``"saddle"``;
- some eigenvalue ≈ 0 → the point is **degenerate**: second order cannot decide along the
  flat directions. Then the loss itself is probed along them (:func:`probe_directions`):
  if it falls along some flat direction the point is a saddle (the monkey saddle), if it only
  rises or stays flat the point keeps the kind the non-zero eigenvalues give (the lecture
  model's curve w1*w2 = 1: minima, degenerate).

Tolerance semantics (``eig_tol``): an eigenvalue λ counts as zero when
``|λ| <= eig_tol * max(1, max_i |λ_i|)`` — absolute for Hessians of order one or smaller,
relative to the spectral radius for larger ones, so that rescaling the loss by 1000 does not
turn a flat direction into curvature.

Both :func:`descentlab.critical.surface_points.find_critical_points` (2-D surfaces) and the
network classifier (``descentlab.critical.classify``) decide kinds with
:func:`classify_eigenvalues`, so a point is named the same way everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "KINDS",
    "EIG_TOL",
    "Verdict",
    "Probe",
    "zero_mask",
    "probe_directions",
    "classify_eigenvalues",
]

#: The kinds a critical point can have. ``"flat"``: every eigenvalue is zero and the loss
#: neither rises nor falls along any probed direction (or no loss was given to probe).
KINDS = ("local_min", "local_max", "saddle", "flat")

#: Default eigenvalue tolerance (see the module docstring for its meaning).
EIG_TOL = 1e-6


@dataclass(frozen=True)
class Probe:
    """What the loss does along flat (near-zero-curvature) directions around a point.

    Attributes:
        rises: number of probed directions along which the loss goes up.
        falls: number along which it goes down.
        flat: number along which it changes by less than the tolerance at every radius.
        radius: the largest radius probed.
    """

    rises: int
    falls: int
    flat: int
    radius: float


@dataclass(frozen=True)
class Verdict:
    """The kind of a critical point, and how it was decided.

    Attributes:
        kind: one of :data:`KINDS`.
        degenerate: some eigenvalue is zero within ``eig_tol``.
        n_positive, n_negative, n_zero: eigenvalue counts (zeros by ``eig_tol``).
        minimum_ratio: fraction of positive eigenvalues, n_positive / n (zeros count as
            not positive, as in the lecture's definition).
        decided_by: ``"second-order"`` (no zero eigenvalue, or eigenvalues of both signs,
            which make a saddle whatever the flat directions do), ``"probe"`` (flat directions
            probed), or ``"eigenvalues only"`` (degenerate but nothing to probe with).
        probe: the probe's result when one was made.
    """

    kind: str
    degenerate: bool
    n_positive: int
    n_negative: int
    n_zero: int
    minimum_ratio: float
    decided_by: str
    probe: Probe | None = None


def zero_mask(eigenvalues: torch.Tensor | Sequence[float], eig_tol: float = EIG_TOL) -> torch.Tensor:
    """Which eigenvalues count as zero: ``|λ| <= eig_tol * max(1, max|λ|)``."""
    if eig_tol < 0 or not math.isfinite(eig_tol):
        raise ValueError(f"eig_tol must be a finite number >= 0, got {eig_tol}")
    values = torch.as_tensor(eigenvalues, dtype=torch.float64).reshape(-1)
    if values.numel() == 0:
        raise ValueError("eigenvalues must not be empty")
    if not torch.isfinite(values).all():
        raise ValueError("eigenvalues must be finite")
    scale = max(1.0, float(values.abs().max()))
    return values.abs() <= eig_tol * scale


def probe_directions(
    loss: Callable[[torch.Tensor], torch.Tensor],
    point: torch.Tensor,
    directions: torch.Tensor,
    *,
    radii: Sequence[float] = (1e-3, 1e-2, 1e-1),
    n_random: int = 8,
    tol: float = 1e-12,
    seed: int = 0,
    max_directions: int | None = None,
) -> Probe:
    """Probe ``loss`` (a function of a flat parameter vector) along flat directions at ``point``.

    ``directions`` (shape ``(n, k)``, columns spanning the flat subspace, e.g. the eigenvectors
    of near-zero eigenvalues) are probed both ways: ±each column, and, when ``k > 1``, ±
    ``n_random`` seeded random unit combinations of them (a monkey saddle falls only between
    the axes). Along each direction d the radii are tried from small to large; the first
    change ``L(point + r d) - L(point)`` larger than ``tol * max(1, |L(point)|)`` in magnitude
    decides whether the loss rises or falls along d; none means flat. Radii are scaled by
    ``max(1, ||point||)`` so large parameter vectors get comparable relative moves.
    ``max_directions`` caps the columns probed one by one (the first ones; the random
    combinations still mix all of them), so a flat subspace of hundreds of dimensions costs a
    bounded number of loss evaluations.
    """
    if max_directions is not None and max_directions < 1:
        raise ValueError(f"max_directions must be >= 1 or None, got {max_directions}")
    if not radii or any(r <= 0 for r in radii):
        raise ValueError(f"radii must be positive, got {tuple(radii)}")
    if n_random < 0:
        raise ValueError(f"n_random must be >= 0, got {n_random}")
    point = torch.as_tensor(point)
    directions = torch.as_tensor(directions, dtype=point.dtype, device=point.device)
    if directions.ndim == 1:
        directions = directions.unsqueeze(-1)
    if directions.shape[0] != point.numel():
        raise ValueError(f"directions must have {point.numel()} rows, got shape {tuple(directions.shape)}")
    basis = directions / directions.norm(dim=0, keepdim=True)
    candidates = [basis[:, i] for i in range(basis.shape[1])][:max_directions]
    if basis.shape[1] > 1 and n_random:
        generator = torch.Generator().manual_seed(seed)
        mix = torch.randn(basis.shape[1], n_random, generator=generator, dtype=torch.float64)
        combos = basis @ mix.to(basis)
        candidates += list((combos / combos.norm(dim=0, keepdim=True)).T)
    scale = max(1.0, float(point.norm()))
    with torch.no_grad():
        base = float(loss(point))
        threshold = tol * max(1.0, abs(base))
        rises = falls = flat = 0
        for direction in candidates:
            for sign in (1.0, -1.0):
                change = 0.0
                for radius in sorted(radii):
                    change = float(loss(point + sign * radius * scale * direction)) - base
                    if abs(change) > threshold:
                        break
                if change > threshold:
                    rises += 1
                elif change < -threshold:
                    falls += 1
                else:
                    flat += 1
    return Probe(rises=rises, falls=falls, flat=flat, radius=max(radii) * scale)


def classify_eigenvalues(
    eigenvalues: torch.Tensor | Sequence[float],
    eig_tol: float = EIG_TOL,
    *,
    eigenvectors: torch.Tensor | None = None,
    loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    point: torch.Tensor | None = None,
    **probe_options,
) -> Verdict:
    """Name a critical point from its Hessian eigenvalues (the module docstring gives the rule).

    Args:
        eigenvalues: the Hessian's eigenvalues (all of them, or the extreme ones a
            Lanczos run found: the kind is decided by the signs present).
        eig_tol: zero tolerance, ``|λ| <= eig_tol * max(1, max|λ|)``.
        eigenvectors: columns matching ``eigenvalues``; with ``loss`` and ``point``, the
            flat directions of a degenerate point are probed (:func:`probe_directions`).
        loss: the loss as a function of a flat parameter vector.
        point: the flat parameter vector of the critical point.
        probe_options: passed to :func:`probe_directions` (``radii``, ``n_random``, ``tol``, ``seed``).
    """
    values = torch.as_tensor(eigenvalues, dtype=torch.float64).reshape(-1)
    zero = zero_mask(values, eig_tol)
    n_zero = int(zero.sum())
    n_positive = int(((values > 0) & ~zero).sum())
    n_negative = int(((values < 0) & ~zero).sum())
    ratio = n_positive / values.numel()
    probe = None
    rises, falls = n_positive > 0, n_negative > 0
    decided_by = "second-order"
    if n_zero and not (rises and falls):  # mixed signs already decide: no probe needed
        decided_by = "eigenvalues only"
        if eigenvectors is not None and loss is not None and point is not None:
            vectors = torch.as_tensor(eigenvectors)
            probe = probe_directions(loss, point, vectors[:, zero.to(vectors.device)], **probe_options)
            rises, falls = rises or probe.rises > 0, falls or probe.falls > 0
            decided_by = "probe"
    if rises and falls:
        kind = "saddle"
    elif rises:
        kind = "local_min"
    elif falls:
        kind = "local_max"
    else:
        kind = "flat"
    return Verdict(kind, n_zero > 0, n_positive, n_negative, n_zero, ratio, decided_by, probe)
