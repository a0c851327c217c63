"""The minimum-ratio study: where training stalls, what is the Hessian of the training loss? (Dauphin et al. 2014)

The lecture's experiment. Train many small networks (one vmapped ensemble per width), then read
the exact Hessian of the *training loss itself*, ``L`` (never a regularised one), where each
training stopped:

1. *Trained points, as they are.* At each network's final weights: ``||grad L||``, the exact
   Hessian of ``L`` and all its eigenvalues (one batched ``eigh``). A point is called
   ``critical`` when ``||grad L|| <= grad_tol`` (training stalled there), ``not critical``
   otherwise (left out of the findings, and counted), ``diverged`` when training left the
   finite numbers. Its kind comes from the eigenvalue signs alone
   (:func:`descentlab.critical.rules.classify_eigenvalues`); the *minimum ratio* is the
   fraction of positive eigenvalues (zeros, within ``eig_tol``, count as not positive, as the
   lecture defines it).
2. *Newton-refined points, a separate variant.* From each trained point, Newton-type
   iterations on ``grad L = 0`` with the exact Hessian
   (:func:`descentlab.critical.newton.newton_to_critical`: a trust-region Levenberg-Marquardt
   method whose step is the Newton step ``-H^+ g`` whenever it fits) drive it to a nearby
   critical point of *any* kind (Newton has no preference for minima). These are ``critical``
   only at ``||grad L|| <= newton_tol``; ``gradient-flat`` where ``g`` lies in directions of
   almost no curvature (``||H g|| / ||g|| <= flat_tol * max|lambda|``: a minimum of
   ``||g||^2`` that is not a critical point, Frye et al. 2021); ``not converged`` otherwise.
   Every refined point says how far it moved from the trained one.
3. *Distinct points.* Permuting a network's hidden units, or flipping the signs of a tanh
   unit's weights, gives the same function: the critical points of each variant and width
   are merged up to these symmetries (:mod:`descentlab.experiments.symmetries`), and each
   distinct point says how many raw points it stands for. Statistics are over distinct points.
4. *A range of losses.* Networks of several widths (``widths``) stall at losses a decade or
   more apart, so the minimum ratio can be set against the loss (the report: Spearman's rho
   with a bootstrap interval, pooled and within each width).

Training may use an L2 ``weight_decay`` (off by default); the Hessian, the gradient test and
the Newton search are always those of ``L`` without it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from descentlab.checks import check_number
from descentlab.critical.newton import L2Objective, newton_to_critical
from descentlab.critical.rules import classify_eigenvalues
from descentlab.curvature import EmpiricalLoss
from descentlab.experiments.symmetries import HiddenUnits, hidden_units_of, merge_duplicates
from descentlab.openmp import threads_for
from descentlab.params import flatten, layout_of

__all__ = [
    "PointReport",
    "MinimumRatioStudy",
    "STATUSES",
    "TRAINED_STATUSES",
    "VARIANTS",
    "measure_points",
    "find_critical_points",
    "merge_points",
    "analyse_point",
    "study_workload",
    "minimum_ratio_study",
]

#: What a Newton-refined point turned out to be.
STATUSES = ("critical", "gradient-flat", "not converged", "diverged")
#: What a trained point (measured where training stopped) is.
TRAINED_STATUSES = ("critical", "not critical", "diverged")
#: The two variants of every network's point: where training stopped, and Newton-refined from there.
VARIANTS = ("trained", "refined")


@dataclass(frozen=True)
class PointReport:
    """One network's point (trained or refined) and the exact Hessian spectrum of ``L`` there.

    Attributes:
        index: the network's position in its width's ensemble.
        loss: the training loss ``L`` at the point.
        start_loss: the training loss where training stopped (the refined search's start).
        grad_norm: ``||grad L||`` at the point.
        gradient_flat: ``||H g|| / ||g||`` (0 when ``g = 0``): small means ``||g||^2`` is
            stationary even if ``g`` is not zero.
        status: one of :data:`TRAINED_STATUSES` (``variant == "trained"``) or :data:`STATUSES`.
        kind: the second-order kind from :mod:`descentlab.critical.rules` (``"local_min"``,
            ``"local_max"``, ``"saddle"``, ``"flat"``); flat directions are probed with the loss
            only at refined critical points; elsewhere it names the eigenvalue signs present.
        degenerate: some eigenvalue is zero within ``eig_tol``.
        minimum_ratio: fraction of positive eigenvalues (zeros count as not positive).
        n_positive, n_negative, n_zero: eigenvalue counts.
        min_eigenvalue, max_eigenvalue: the extreme eigenvalues.
        distance: ``||theta - theta_trained||`` (0 for a trained point).
        newton_steps: accepted Newton-type steps (0 for a trained point).
        eigenvalues: all eigenvalues, ascending.
        params: the flat parameters of the point.
        variant: ``"trained"`` or ``"refined"`` (:data:`VARIANTS`).
        width: hidden units of the study's network (0: the workload's own model).
        lr: the learning rate the network trained with (NaN without training).
        group: the distinct point (up to symmetry) this critical point belongs to, numbered
            within its variant and width (-1: not critical, so not merged).
        copies: for the first point of a group (its representative), how many raw points the
            group holds; 0 for the others.
    """

    index: int
    loss: float
    start_loss: float
    grad_norm: float
    gradient_flat: float
    status: str
    kind: str
    degenerate: bool
    minimum_ratio: float
    n_positive: int
    n_negative: int
    n_zero: int
    min_eigenvalue: float
    max_eigenvalue: float
    distance: float
    newton_steps: int
    eigenvalues: torch.Tensor = field(repr=False)
    params: torch.Tensor = field(repr=False)
    variant: str = "refined"
    width: int = 0
    lr: float = math.nan
    group: int = -1
    copies: int = 0

    def row(self) -> dict[str, Any]:
        """The scalar fields, as one row of ``points.csv``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("eigenvalues", "params")}


@dataclass(frozen=True)
class MinimumRatioStudy:
    """Every network's trained and refined points, and the settings that produced them.

    Attributes:
        points: every :class:`PointReport`, width by width, the trained variant then the refined one.
        n_params: parameters per network, by width.
        models: one line naming each width's architecture.
        symmetries: by width, the symmetries merged (in words).
        settings: the study's arguments.
        seconds: wall-clock of training, search and spectra together.
    """

    points: tuple[PointReport, ...]
    n_params: Mapping[int, int]
    models: Mapping[int, str]
    symmetries: Mapping[int, str]
    settings: Mapping[str, Any] = field(repr=False)
    seconds: float

    def of(self, variant: str, width: int | None = None) -> list[PointReport]:
        """The points of ``variant`` (of one ``width``, or all)."""
        return [p for p in self.points if p.variant == variant and (width is None or p.width == width)]

    def counts(self, variant: str = "trained") -> dict[str, int]:
        """How many points of ``variant`` have each status, how many distinct critical points
        there are (up to symmetry) and how many of those are strict minima."""
        points = self.of(variant)
        statuses = TRAINED_STATUSES if variant == "trained" else STATUSES
        out = {status: sum(p.status == status for p in points) for status in statuses}
        distinct = [p for p in points if p.copies]
        out["distinct critical"] = len(distinct)
        out["distinct strict minima (ratio 1)"] = sum(p.minimum_ratio == 1.0 for p in distinct)
        return out

    def __repr__(self) -> str:
        parts = "; ".join(f"{v}: " + ", ".join(f"{k}={n}" for k, n in self.counts(v).items())
                          for v in VARIANTS if self.of(v))
        widths = ", ".join(f"{w} ({n} parameters)" for w, n in self.n_params.items())
        return f"MinimumRatioStudy(widths {widths}; {parts})"


def _hessian_spectra(theta: torch.Tensor, H: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Which rows are finite, and the eigenvalues and eigenvectors of their Hessians (NaN elsewhere)."""
    k, n_params = theta.shape
    finite = torch.isfinite(H).all(dim=2).all(dim=1) & torch.isfinite(theta).all(dim=1)
    values = torch.full((k, n_params), math.nan, dtype=theta.dtype)
    vectors = torch.full((k, n_params, n_params), math.nan, dtype=theta.dtype)
    if finite.any():
        values[finite], vectors[finite] = torch.linalg.eigh(H[finite])
    return finite, values, vectors


def _reports(objective: L2Objective, start: torch.Tensor, theta: torch.Tensor, g: torch.Tensor, H: torch.Tensor,
             steps: torch.Tensor, *, variant: str, grad_tol: float, flat_tol: float,
             eig_tol: float) -> list[PointReport]:
    """One :class:`PointReport` per row of ``theta`` from its gradient ``g`` and Hessian ``H`` of ``L``."""
    risk = objective.risk
    finite, values, vectors = _hessian_spectra(theta, H)

    def losses_at(points: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:  # NaN where keep is False
        found = risk.losses(torch.where(keep.unsqueeze(1), points, torch.zeros_like(points)))
        return torch.where(keep, found, torch.full_like(found, math.nan))

    losses, start_losses = losses_at(theta, finite), losses_at(start, torch.isfinite(start).all(dim=1))
    grad_norms = g.norm(dim=1)
    hg_norms = (torch.nan_to_num(H) @ torch.nan_to_num(g).unsqueeze(-1)).squeeze(-1).norm(dim=1)
    distances = (theta - start).norm(dim=1)
    reports = []
    for i in range(len(theta)):
        grad_norm = float(grad_norms[i]) if finite[i] else math.nan
        gradient_flat = float(hg_norms[i] / grad_norms[i]) if grad_norm > 0 else 0.0
        if not math.isfinite(grad_norm):
            status = "diverged"
        elif grad_norm <= grad_tol:
            status = "critical"
        elif variant == "trained":
            status = "not critical"
        elif gradient_flat <= flat_tol * max(float(values[i].abs().max()), 1e-300):
            status = "gradient-flat"
        else:
            status = "not converged"
        if status == "diverged":
            kind, degenerate, ratio, counts = "", False, math.nan, (0, 0, 0)
        else:
            if status == "critical" and variant == "refined":
                with torch.no_grad():
                    verdict = classify_eigenvalues(values[i], eig_tol, eigenvectors=vectors[i], loss=objective,
                                                   point=theta[i])
            else:
                # Probing flat directions with the loss only means something where g = 0.
                verdict = classify_eigenvalues(values[i], eig_tol)
            kind, degenerate, ratio = verdict.kind, verdict.degenerate, verdict.minimum_ratio
            counts = (verdict.n_positive, verdict.n_negative, verdict.n_zero)
        reports.append(PointReport(
            index=i, loss=float(losses[i]), start_loss=float(start_losses[i]), grad_norm=grad_norm,
            gradient_flat=gradient_flat, status=status, kind=kind, degenerate=degenerate, minimum_ratio=ratio,
            n_positive=counts[0], n_negative=counts[1], n_zero=counts[2], min_eigenvalue=float(values[i, 0]),
            max_eigenvalue=float(values[i, -1]), distance=float(distances[i]) if finite[i] else math.nan,
            newton_steps=int(steps[i]), eigenvalues=values[i].detach().cpu(), params=theta[i].detach().cpu(),
            variant=variant))
    return reports


def _check_tolerances(**tolerances: float) -> None:
    for name, value in tolerances.items():
        check_number(name, value)


def measure_points(model: nn.Module, loss_fn: Callable, data: tuple[torch.Tensor, torch.Tensor],
                   flat: torch.Tensor, *, grad_tol: float = 1e-3, eig_tol: float = 1e-6) -> list[PointReport]:
    """The trained variant: each of K points (``flat``: ``(K, P)``) measured as it is.

    ``L`` is the loss over ``data`` as the data layer takes it
    (:class:`~descentlab.curvature.EmpiricalLoss`), never with an L2 term; its gradient and
    exact Hessian at every point come from one ``vmap`` (:class:`~descentlab.critical.newton.L2Objective`
    with ``weight_decay = 0``), its eigenvalues from one batched ``eigh``. A point is
    ``"critical"`` when ``||grad L|| <= grad_tol``. ``model`` is only a template (its structure).
    """
    _check_tolerances(grad_tol=grad_tol, eig_tol=eig_tol)
    objective = L2Objective(EmpiricalLoss(model, loss_fn, data), 0.0)
    theta = flat.detach().to(objective.risk.dtype)
    finite = torch.isfinite(theta).all(dim=1)
    g = torch.full_like(theta, math.nan)
    H = torch.full(theta.shape + theta.shape[1:], math.nan, dtype=theta.dtype)
    if finite.any():
        g[finite] = objective.gradients(theta[finite])
        H[finite] = objective.hessians(theta[finite])
    return _reports(objective, theta, theta, g, H, torch.zeros(len(theta), dtype=torch.long), variant="trained",
                    grad_tol=grad_tol, flat_tol=0.0, eig_tol=eig_tol)


def find_critical_points(model: nn.Module, loss_fn: Callable, data: tuple[torch.Tensor, torch.Tensor],
                         flat: torch.Tensor, *, newton_steps: int = 150, radius: float = 0.1,
                         grad_tol: float = 1e-8, flat_tol: float = 1e-2, eig_tol: float = 1e-6,
                         weight_decay: float = 0.0, progress: bool = False) -> list[PointReport]:
    """The refined variant: search from each of K starting points (``flat``: ``(K, P)``) and read each exact spectrum.

    ``F = L + weight_decay/2 ||theta||^2`` (the study always uses ``weight_decay = 0``: ``F = L``)
    with ``L`` the loss over ``data`` as the data layer takes it
    (:class:`~descentlab.curvature.EmpiricalLoss`: batches weighted, dropout and batch norm in eval
    mode); the flat vectors lay ``model``'s trainable parameters end to end
    (:mod:`descentlab.params`). All K networks move together
    (:func:`~descentlab.critical.newton.newton_to_critical`), then one batched
    ``torch.linalg.eigh`` of the K final Hessians gives every eigenvalue. A point is
    ``"critical"`` only when ``||grad F|| <= grad_tol``; only critical points have their flat
    directions probed (one objective call per probe). ``model`` is only a template (its
    structure); its own parameters are left as they were.
    """
    _check_tolerances(grad_tol=grad_tol, flat_tol=flat_tol, eig_tol=eig_tol)
    objective = L2Objective(EmpiricalLoss(model, loss_fn, data), weight_decay)
    start = flat.detach()
    search = newton_to_critical(objective, start, steps=newton_steps, radius=radius, grad_tol=grad_tol,
                                progress=progress)
    return _reports(objective, start.to(search.theta), search.theta, search.gradient, search.hessian, search.steps,
                    variant="refined", grad_tol=grad_tol, flat_tol=flat_tol, eig_tol=eig_tol)


def merge_points(points: Sequence[PointReport], units: HiddenUnits | None, tol: float) -> list[PointReport]:
    """``points`` (one variant of one network shape) with their critical ones merged up to the
    symmetries of ``units`` (:func:`~descentlab.experiments.symmetries.merge_duplicates`, within
    ``tol * max(1, ||theta||)``, smallest ``||grad L||`` first, so a group's representative is its
    best-converged point): ``group`` and ``copies`` filled in, the order kept."""
    critical = [i for i, p in enumerate(points) if p.status == "critical"]
    if not critical:
        return list(points)
    order = sorted(range(len(critical)), key=lambda j: points[critical[j]].grad_norm)
    stacked = torch.stack([points[i].params for i in critical])
    groups = merge_duplicates(stacked, units, tol, order=order)
    out = list(points)
    for number, group in enumerate(groups):
        for position, j in enumerate(group):
            i = critical[j]
            out[i] = dataclasses.replace(points[i], group=number, copies=len(group) if position == 0 else 0)
    return out


def analyse_point(model: nn.Module, loss_fn: Callable, data: tuple[torch.Tensor, torch.Tensor], *,
                  newton_steps: int = 150, radius: float = 0.1, grad_tol: float = 1e-8,
                  flat_tol: float = 1e-2, eig_tol: float = 1e-6, weight_decay: float = 0.0) -> PointReport:
    """Drive one model from its current weights to a critical point and read its spectrum.

    :func:`find_critical_points` with one network; ``model`` is moved to the point found
    (``newton_steps=0`` only classifies where it is). The Hessian is exact and dense: meant
    for small networks (a few thousand parameters at most).
    """
    layout = layout_of(model)
    flat = flatten(model, layout)
    (report,) = find_critical_points(model, loss_fn, data, flat.unsqueeze(0), newton_steps=newton_steps,
                                     radius=radius, grad_tol=grad_tol, flat_tol=flat_tol, eig_tol=eig_tol,
                                     weight_decay=weight_decay)
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in layout.unflatten(report.params.to(flat)).items():
            named[name].copy_(value)
    return report


class _TanhMLP(nn.Sequential):
    """inputs -> ``hidden`` tanh units -> outputs: the study's small network."""

    def __init__(self, n_in: int, hidden: int, n_out: int, dtype: torch.dtype) -> None:
        super().__init__(nn.Linear(n_in, hidden, dtype=dtype), nn.Tanh(), nn.Linear(hidden, n_out, dtype=dtype))


def study_workload(workload: Any, *, hidden: int = 0, samples: int | None = None, seed: int = 0) -> Any:
    """``workload`` as the study uses it: a seeded subset of ``samples`` training points, and
    (``hidden > 0``) its model replaced by a one-hidden-layer tanh MLP of ``hidden`` units between
    the workload's inputs and outputs (``hidden = 0`` keeps the workload's own model)."""
    if hidden < 0:
        raise ValueError(f"hidden: must be >= 0, got {hidden}")
    if samples is not None and samples < 1:
        raise ValueError(f"samples: must be >= 1 (or None), got {samples}")
    changes: dict[str, Any] = {}
    if samples is not None and samples < len(workload.X_train):
        keep = torch.randperm(len(workload.X_train), generator=torch.Generator().manual_seed(seed))[:samples]
        changes.update(X_train=workload.X_train[keep], y_train=workload.y_train[keep])
    if hidden:
        X, y = workload.X_train, workload.y_train
        if X.dim() != 2:
            raise ValueError(f"hidden: an MLP needs flat inputs, {workload.name!r} has inputs of shape "
                             f"{tuple(X.shape[1:])} (use hidden=0)")
        n_out = int(y.max()) + 1 if workload.task == "classification" else (y.shape[1] if y.dim() > 1 else 1)
        changes["make_model"] = functools.partial(_TanhMLP, X.shape[1], hidden, n_out, X.dtype)
    return dataclasses.replace(workload, **changes) if changes else workload


def _describe(model: nn.Module) -> str:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if isinstance(model, _TanhMLP):
        return f"tanh MLP {layers[0].in_features}-{layers[0].out_features}-{layers[-1].out_features}"
    return type(model).__name__


def _start_points(workload: Any, n_networks: int, rates: torch.Tensor, *, train_steps: int, optimizer: str,
                  batch_size: int | None, weight_decay: float, init_scale: float, seed: int,
                  progress: bool) -> dict[str, torch.Tensor]:
    """The stacked parameters where each network's training stopped (or its scaled initial weights)."""
    from torch.func import stack_module_state

    if train_steps:
        from descentlab.experiments.ensemble import Member, train_members

        members = [Member(seed=seed + i, lr=float(rate)) for i, rate in enumerate(rates)]
        trained = train_members(workload, optimizer, members, steps=train_steps, batch_size=batch_size,
                                eval_every=train_steps, progress=progress,
                                hyperparameters={"weight_decay": weight_decay} if weight_decay else None)
        return {name: t.detach() for name, t in trained.params.items()}
    models = []
    for i in range(n_networks):
        torch.manual_seed(seed + i)
        model = workload.make_model()
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(init_scale)
        models.append(model)
    stacked, _ = stack_module_state(models)
    return {name: t.detach() for name, t in stacked.items()}


def minimum_ratio_study(workload: Any, *, widths: Sequence[int] = (1, 2, 4, 8), n_networks: int = 16,
                        train_steps: int = 5000, optimizer: str = "momentum",
                        lr_range: tuple[float, float] = (0.01, 0.3), batch_size: int | None = None,
                        samples: int | None = 128, weight_decay: float = 0.0, init_scale: float = 1.0,
                        newton_steps: int = 50, radius: float = 0.1, grad_tol: float = 1e-3,
                        newton_tol: float = 1e-8, flat_tol: float = 1e-2, eig_tol: float = 1e-6,
                        merge_tol: float = 1e-3, seed: int = 0, progress: bool = False) -> MinimumRatioStudy:
    """Train ``n_networks`` small networks of each width on ``workload`` and read the Hessian of
    ``L`` where each stopped (and, with ``newton_steps > 0``, at the critical point Newton finds
    from there).

    Network ``i`` of every width starts from ``torch.manual_seed(seed + i)`` and trains with its
    own learning rate, log-spaced over ``lr_range``, as one stacked ensemble per width
    (:func:`descentlab.experiments.ensemble.train_members`; ``batch_size=None``: full batch), with
    the optimizer's L2 ``weight_decay`` (0: none; the measurements never include it). With
    ``train_steps=0`` the points are the initial weights scaled by ``init_scale`` (e.g. near the
    origin, a saddle of every network without biases). ``widths``: hidden units of the study's
    tanh MLP (:func:`study_workload`; ``(0,)`` keeps the workload's own model). The workload
    should be float64: critical points need the precision.
    """
    widths = tuple(int(w) for w in widths)
    if not widths or any(w < 0 for w in widths) or len(set(widths)) != len(widths):
        raise ValueError(f"widths: must be distinct integers >= 0, got {list(widths)}")
    if n_networks < 1:
        raise ValueError(f"n_networks: must be >= 1, got {n_networks}")
    if train_steps < 0:
        raise ValueError(f"train_steps: must be >= 0, got {train_steps}")
    if newton_steps < 0:
        raise ValueError(f"newton_steps: must be >= 0, got {newton_steps}")
    if not (math.isfinite(init_scale) and init_scale > 0):
        raise ValueError(f"init_scale: must be a positive number, got {init_scale}")
    if init_scale != 1.0 and train_steps:
        raise ValueError("init_scale: only applies to train_steps=0 (training starts from the model's own init)")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay: must be a finite number >= 0, got {weight_decay}")
    _check_tolerances(grad_tol=grad_tol, newton_tol=newton_tol, flat_tol=flat_tol, eig_tol=eig_tol,
                      merge_tol=merge_tol)
    low, high = (float(v) for v in lr_range)
    if not 0 < low <= high:
        raise ValueError(f"lr_range: expected 0 < low <= high, got {lr_range}")
    started = time.perf_counter()
    rates = torch.logspace(math.log10(low), math.log10(high), n_networks, dtype=torch.float64) if n_networks > 1 \
        else torch.tensor([low], dtype=torch.float64)
    points: list[PointReport] = []
    n_params, models, symmetries = {}, {}, {}
    for width in widths:
        shaped = study_workload(workload, hidden=width, samples=samples, seed=seed)
        data = (shaped.X_train, shaped.y_train)
        torch.manual_seed(seed)
        template = shaped.make_model()
        layout = layout_of(template)
        units = hidden_units_of(template)
        n_params[width], models[width] = layout.n_params, _describe(template)
        symmetries[width] = units.symmetries if units is not None else "none known for this model (plain distance)"
        # a few small networks: one thread beats two on a shared machine (descentlab.openmp)
        with threads_for(2.0 * len(data[0]) * layout.n_params * n_networks):
            stacked = _start_points(shaped, n_networks, rates, train_steps=train_steps, optimizer=optimizer,
                                    batch_size=batch_size, weight_decay=weight_decay, init_scale=init_scale,
                                    seed=seed, progress=progress)
            flat = layout.flatten(stacked, batch_shape=(n_networks,))  # one network per row
            variants = [measure_points(template, shaped.loss_fn, data, flat, grad_tol=grad_tol, eig_tol=eig_tol)]
            if newton_steps:
                variants.append(find_critical_points(template, shaped.loss_fn, data, flat, newton_steps=newton_steps,
                                                     radius=radius, grad_tol=newton_tol, flat_tol=flat_tol,
                                                     eig_tol=eig_tol, progress=progress))
        for reports in variants:
            reports = [dataclasses.replace(r, width=width, lr=float(rates[r.index]) if train_steps else math.nan)
                       for r in reports]
            points += merge_points(reports, units, merge_tol)
    settings = dict(workload=getattr(workload, "name", ""), widths=list(widths), n_networks=n_networks,
                    train_steps=train_steps, optimizer=optimizer, lr_range=[low, high], batch_size=batch_size,
                    samples=samples, weight_decay=weight_decay, init_scale=init_scale, radius=radius,
                    newton_steps=newton_steps, grad_tol=grad_tol, newton_tol=newton_tol, flat_tol=flat_tol,
                    eig_tol=eig_tol, merge_tol=merge_tol, seed=seed)
    return MinimumRatioStudy(tuple(points), n_params, models, symmetries, settings, time.perf_counter() - started)
