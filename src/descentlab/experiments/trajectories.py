"""Every optimizer's path across a 2-D surface, with the real registry optimizers.

:func:`run_trajectories` puts the point (x, y) in one ``nn.Parameter`` and hands it to
``descentlab.optim.make_optimizer`` (torch.optim's own classes where torch has the
algorithm, the registry's wrappers such as ``lookahead:adam`` otherwise), then records the
point and the loss after every step. Nothing is re-implemented here.

:func:`tune_learning_rates` is the fair comparison: each optimizer gets the same budget
(the same steps from the same start) at every learning rate of one log grid, widened a grid
step at a time while the best rate sits at its edge
(:mod:`descentlab.experiments.tuning`), and keeps the rate with the lowest final loss.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from descentlab.engine.callbacks import LoopState
from descentlab.engine.steps import StepInfo, run_steps
from descentlab.problems.surfaces import Surface

__all__ = ["Trajectory", "Trajectories", "Tuning", "ValleyMotion", "Valley", "default_lr", "run_trajectories",
           "tune_learning_rates", "valley_motion", "DEFAULT_OPTIMIZERS"]

#: The six classic optimizers of the course's closing comparison.
DEFAULT_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")


@dataclass(frozen=True)
class Trajectory:
    """One optimizer's path.

    Attributes:
        optimizer: registry name.
        lr: the learning rate used.
        path: points, shape ``(steps + 1, 2)``; row 0 is the start.
        losses: L at each row of ``path``, shape ``(steps + 1,)``.
    """

    optimizer: str
    lr: float
    path: torch.Tensor
    losses: torch.Tensor

    @property
    def final_point(self) -> tuple[float, float]:
        return (float(self.path[-1, 0]), float(self.path[-1, 1]))

    @property
    def final_loss(self) -> float:
        return float(self.losses[-1])

    def __repr__(self) -> str:
        x, y = self.final_point
        return (f"Trajectory(optimizer={self.optimizer!r}, lr={self.lr:g}, steps={len(self.path) - 1}, "
                f"final_point=({x:.4g}, {y:.4g}), final_loss={self.final_loss:.4g})")


@dataclass(frozen=True)
class Trajectories:
    """The paths of several optimizers from one start on one surface."""

    surface: str
    start: tuple[float, float]
    steps: int
    paths: tuple[Trajectory, ...]

    def __getitem__(self, optimizer: str) -> Trajectory:
        for trajectory in self.paths:
            if trajectory.optimizer == optimizer:
                return trajectory
        raise KeyError(optimizer)

    @property
    def optimizers(self) -> tuple[str, ...]:
        return tuple(t.optimizer for t in self.paths)


@dataclass(frozen=True)
class Tuning:
    """Learning rates picked on a log grid by final loss, same budget for every optimizer.

    Attributes:
        grid: the grid every optimizer started from.
        final_losses: optimizer -> final loss at each of its ``rates`` (inf where it diverged).
        chosen: optimizer -> the rate with the lowest final loss (ties: the smaller rate).
        rates: optimizer -> the rates it tried, ascending: the grid and any added beyond its edges.
        edges: optimizer -> ``None`` when the chosen rate has a tried rate on both sides, else the
            edge (``"high"``, ``"low"``) it was left at when the widenings ran out.
    """

    grid: tuple[float, ...]
    final_losses: Mapping[str, tuple[float, ...]]
    chosen: Mapping[str, float]
    rates: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    edges: Mapping[str, str | None] = field(default_factory=dict)


def default_lr(surface: Surface, optimizer: str) -> float:
    """The surface's suggested learning rate for ``optimizer``.

    Optimizers whose step is the gradient times ``lr`` (the registry's ``"sgd"`` family and
    SGDW) get ``surface.lr``; Adadelta's ``lr`` is a unitless multiplier, so it keeps the
    registry's default; every other (adaptive) optimizer takes steps of about ``lr`` in
    parameter units and gets ``surface.step_size``.
    """
    from descentlab.optim.registry import OPTIMIZERS, parse_name

    _, base = parse_name(optimizer)
    spec = OPTIMIZERS[base]
    if spec.family == "sgd" or base.startswith("sgd"):
        return surface.lr
    if base == "adadelta":
        return spec.lr
    return surface.step_size


def run_trajectories(
    surface: Surface,
    optimizers: Sequence[str] = DEFAULT_OPTIMIZERS,
    start: Sequence[float] | None = None,
    steps: int | None = None,
    *,
    lr: float | Mapping[str, float] | None = None,
    schedule: str | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Trajectories:
    """Run each optimizer from ``start`` for ``steps`` steps on ``surface``.

    Args:
        optimizers: registry names (``"adam"``, ``"lookahead:adam"``, ...).
        start: the starting point (default ``surface.starts[0]``).
        steps: the number of optimizer steps (default ``surface.steps``).
        lr: one rate for all, a dict per optimizer, or ``None`` for :func:`default_lr`.
        schedule: a schedule for ``descentlab.schedules.make_scheduler``, stepped after each step.
        seed: ``torch.manual_seed`` before each optimizer (only noisy optimizers use it).
        dtype: of the point (float64: paths stay exact enough to compare across runs).

    A path that reaches a non-finite loss stops there; its remaining rows repeat the last
    point with loss ``inf`` so every path has ``steps + 1`` rows.
    """
    from descentlab.optim.registry import make_optimizer, parse_name

    optimizers = list(optimizers)
    if not optimizers:
        raise ValueError("optimizers must name at least one optimizer")
    for name in optimizers:
        parse_name(name)  # fail on a bad name before any work
    steps = surface.steps if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    start = tuple(float(v) for v in (surface.starts[0] if start is None else start))
    if len(start) != 2 or not all(math.isfinite(v) for v in start):
        raise ValueError(f"start must be two finite numbers, got {start}")
    paths = []
    for name in optimizers:
        rate = _rate(surface, name, lr)
        torch.manual_seed(seed)
        paths.append(_run_one(surface, name, rate, start, steps, schedule, dtype, make_optimizer))
    return Trajectories(surface=surface.name, start=start, steps=steps, paths=tuple(paths))


def _rate(surface: Surface, name: str, lr: float | Mapping[str, float] | None) -> float:
    if isinstance(lr, Mapping):
        rate = lr[name] if name in lr else default_lr(surface, name)
    else:
        rate = default_lr(surface, name) if lr is None else lr
    rate = float(rate)
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"lr must be a positive number, got {rate} for {name}")
    return rate


def _run_one(surface, name, lr, start, steps, schedule, dtype, make_optimizer) -> Trajectory:
    return _run_group(surface, name, [lr], start, steps, schedule, dtype, make_optimizer)[0]


def _run_group(surface, name, lrs, start, steps, schedule, dtype, make_optimizer) -> list[Trajectory]:
    """One point per learning rate, each in its own parameter group of ONE optimizer.

    With a single rate this is the plain run. With several it is only used for optimizers
    the registry marks element-wise: each point's update then depends on its own gradient
    history and its group's lr alone, so k points in one optimizer are k independent runs,
    stepped in one Python loop instead of k.
    """
    points = [torch.nn.Parameter(torch.tensor(start, dtype=dtype)) for _ in lrs]
    groups = [{"params": [point], "lr": rate} for point, rate in zip(points, lrs)]
    optimizer = make_optimizer(name, groups, lr=lrs[0])
    scheduler = None
    if schedule is not None:
        from descentlab.schedules import make_scheduler

        scheduler = make_scheduler(optimizer, schedule)

    path = torch.empty(len(points), steps + 1, 2, dtype=dtype)
    path[:, 0] = torch.stack([point.detach() for point in points])

    def record(loop: LoopState, info: StepInfo) -> None:
        path[:, info.step] = torch.stack([point.detach() for point in points])

    # the points are independent: the gradient of the sum at each point is that of its own term
    run_steps(LoopState(nn.ParameterList(points), optimizer, scheduler),
              lambda _: sum(surface(point) for point in points), itertools.repeat(None), steps=steps,
              after_step=record)
    with torch.no_grad():
        losses = surface(path)  # one batched evaluation instead of one per step
    trajectories = []
    for i, rate in enumerate(lrs):
        one_path, one_losses = path[i].clone(), losses[i].clone()
        bad = ~(torch.isfinite(one_losses) & torch.isfinite(one_path).all(-1))
        if bad.any():
            first = int(torch.nonzero(bad)[0])
            one_path[first:] = one_path[first - 1]
            one_losses[first:] = math.inf
        trajectories.append(Trajectory(optimizer=name, lr=rate, path=one_path, losses=one_losses))
    return trajectories


def tune_learning_rates(
    surface: Surface,
    optimizers: Sequence[str] = DEFAULT_OPTIMIZERS,
    start: Sequence[float] | None = None,
    steps: int | None = None,
    *,
    grid: Sequence[float] | None = None,
    schedule: str | None = None,
    seed: int = 0,
    max_widenings: int | None = None,
) -> Tuning:
    """Pick each optimizer's learning rate on a log grid, by final loss, same budget for all.

    The default grid is 13 rates from 1e-4 to 1, three per decade (10^(-4 + k/3), k = 0..12).
    A path that diverges counts as an infinite final loss. While an optimizer's best rate is the
    largest (smallest) it tried, one rate a grid step above (below) it is run too, at most
    ``max_widenings`` times (default :data:`~descentlab.experiments.tuning.MAX_WIDENINGS`; 0: the
    grid alone); :attr:`Tuning.edges` says where a choice was left at an edge.
    """
    from descentlab.experiments.tuning import MAX_WIDENINGS, grid_ratio, widen

    grid = tuple(float(v) for v in (grid if grid is not None else [10 ** (-4 + k / 3) for k in range(13)]))
    if not grid or any(not (v > 0 and math.isfinite(v)) for v in grid):
        raise ValueError(f"grid must be positive learning rates, got {grid}")
    from descentlab.optim.registry import OPTIMIZERS, make_optimizer, parse_name

    steps = surface.steps if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    start = tuple(float(v) for v in (surface.starts[0] if start is None else start))

    def final_losses(name: str, rates: Sequence[float]) -> list[float]:
        wrappers, base = parse_name(name)
        torch.manual_seed(seed)
        if OPTIMIZERS[base].elementwise and not wrappers:
            runs = _run_group(surface, name, list(rates), start, steps, schedule, torch.float64, make_optimizer)
        else:
            runs = [run_trajectories(surface, [name], start, steps, lr=rate, schedule=schedule, seed=seed).paths[0]
                    for rate in rates]
        return [run.final_loss if math.isfinite(run.final_loss) else math.inf for run in runs]

    def trials(name: str, rates: Sequence[float]) -> list[dict[str, float]]:
        # the widening rule reads a validation loss; here the final loss on the surface is the criterion
        return [{"lr": rate, "final_val_loss": loss} for rate, loss in zip(rates, final_losses(name, rates))]

    names = list(optimizers)
    outcome = widen({name: trials(name, grid) for name in names}, {name: grid_ratio(grid) for name in names},
                    lambda wanted, _: {name: trials(name, [rate]) for name, rate in wanted.items()},
                    MAX_WIDENINGS if max_widenings is None else max_widenings)
    finals, chosen, rates, edges = {}, {}, {}, {}
    for name in names:
        ordered = sorted(outcome[name].trials, key=lambda t: t["lr"])
        rates[name] = tuple(t["lr"] for t in ordered)
        finals[name] = tuple(t["final_val_loss"] for t in ordered)
        edges[name] = outcome[name].edge
        # ties: the smaller rate; every rate diverged: the smallest (its path is drawn up to where it left)
        chosen[name] = outcome[name].chosen if math.isfinite(outcome[name].chosen) else rates[name][0]
    return Tuning(grid=grid, final_losses=finals, chosen=chosen, rates=rates, edges=edges)


@dataclass(frozen=True)
class ValleyMotion:
    """How one path moved across and along the valley around a minimum.

    Attributes:
        optimizer: registry name.
        sign_changes: how often the offset from the minimum along the *steep* eigenvector of
            the Hessian changed sign (each change is one swing across the valley).
        shallow_left: ``|offset along the shallow eigenvector|`` at the end over at the start.
        distance_left: ``||p_T - p*||`` over ``||p_0 - p*||``.
        reached: ``distance_left <= reach`` (and the path did not diverge).
    """

    optimizer: str
    sign_changes: int
    shallow_left: float
    distance_left: float
    reached: bool


@dataclass(frozen=True)
class Valley:
    """The Hessian's eigen-directions at a minimum and every path's motion relative to them.

    Attributes:
        minimum: the point ``p*``.
        eigenvalues: ``(shallow, steep)`` curvatures; ``condition``: steep / shallow.
        shallow, steep: the unit eigenvectors.
        reach: a path "reached" the minimum when it ends within ``reach`` of its start distance.
        motions: one :class:`ValleyMotion` per path.
    """

    minimum: tuple[float, float]
    eigenvalues: tuple[float, float]
    condition: float
    shallow: tuple[float, float]
    steep: tuple[float, float]
    reach: float
    motions: tuple[ValleyMotion, ...]


def valley_motion(surface: Surface, trajectories: Trajectories, minimum: Sequence[float], *,
                  reach: float = 0.01) -> Valley:
    """Project every path's offset from ``minimum`` onto the Hessian's eigenvectors there.

    On an elongated bowl, gradient descent with one fixed rate swings across the steep
    direction (its offset there changes sign when ``lr * lambda_steep > 1``) while it crawls
    along the shallow one (the offset shrinks by ``|1 - lr * lambda_shallow|`` per step, and
    stability caps ``lr`` below ``2 / lambda_steep``).
    """
    if not (0 < reach < 1):
        raise ValueError(f"reach must be in (0, 1), got {reach}")
    point = torch.tensor([float(v) for v in minimum], dtype=torch.float64)
    values, vectors = torch.linalg.eigh(surface.hessian(point))
    if not float(values[0]) > 0:
        raise ValueError(f"minimum: the Hessian at {tuple(point.tolist())} is not positive definite")
    shallow, steep = vectors[:, 0], vectors[:, 1]
    motions = []
    for trajectory in trajectories.paths:
        offset = trajectory.path.to(torch.float64) - point
        across = offset @ steep
        along = offset @ shallow
        finite = math.isfinite(trajectory.final_loss)
        signs = torch.sign(across)
        changes = int(((signs[1:] * signs[:-1]) < 0).sum())
        start = float(offset[0].norm())
        distance = float(offset[-1].norm()) / start if start > 0 else 0.0
        shallow_left = abs(float(along[-1])) / abs(float(along[0])) if float(along[0]) != 0 else 0.0
        motions.append(ValleyMotion(optimizer=trajectory.optimizer, sign_changes=changes,
                                    shallow_left=shallow_left if finite else math.inf,
                                    distance_left=distance if finite else math.inf,
                                    reached=finite and distance <= reach))
    low, high = float(values[0]), float(values[1])
    return Valley(minimum=tuple(point.tolist()), eigenvalues=(low, high), condition=high / low,
                  shallow=tuple(shallow.tolist()), steep=tuple(steep.tolist()), reach=reach,
                  motions=tuple(motions))
