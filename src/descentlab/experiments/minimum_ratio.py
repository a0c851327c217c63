"""The minimum-ratio study: where do trained networks' critical points sit? (Dauphin et al. 2014)

The lecture's experiment. Train many small networks (one vmapped ensemble), then drive each
one to a *true* critical point near where its training stopped and read its exact Hessian
spectrum:

1. *Objective.* The training loss plus an L2 term, ``F(theta) = L(theta) + lambda/2 ||theta||^2``
   (``weight_decay = lambda``, the same term torch's ``weight_decay`` adds while training). Without
   it most critical points of a small tanh network are degenerate -- a hidden unit whose
   outgoing weight is zero leaves its incoming weights free, a whole flat family of critical
   points -- and Newton's method only creeps toward them; the L2 term makes them isolated.
2. *Search.* From where each network's training stopped, Newton-type iterations on
   ``grad F = 0`` with the network's exact Hessian, all networks at once
   (:func:`descentlab.critical.newton.newton_to_critical` on the data layer's
   :class:`~descentlab.curvature.EmpiricalLoss`): a trust-region Levenberg-Marquardt method on
   ``1/2 ||g||^2``, whose step is the Newton step ``-H^+ g`` whenever it fits in the trust
   region. Newton has no preference for minima: it converges to the nearby critical point of
   any kind (Dauphin et al. 2014 used it to find saddles). Every point reports how far it is
   from the trained point.
3. *Spectrum.* The exact Hessians at the final points and all their eigenvalues (one batched
   ``eigh``); the kind comes from :func:`descentlab.critical.rules.classify_eigenvalues` (the
   one place that turns eigenvalues into a kind), the *minimum ratio* is the fraction of
   positive eigenvalues.
4. *Honesty.* Only points with ``||g|| <= grad_tol`` are called critical. A point where the
   search stopped with ``g`` lying in directions of almost no curvature,
   ``||H g|| / ||g|| <= flat_tol * max|lambda|``, is ``gradient-flat`` (a minimum of
   ``||g||^2`` that is not a critical point, Frye et al. 2021); the rest ``not converged``;
   networks whose training diverged are ``diverged``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from descentlab.checks import check_number
from descentlab.critical.newton import L2Objective, newton_to_critical
from descentlab.critical.rules import classify_eigenvalues
from descentlab.curvature import EmpiricalLoss
from descentlab.params import flatten, layout_of

__all__ = [
    "PointReport",
    "MinimumRatioStudy",
    "STATUSES",
    "find_critical_points",
    "analyse_point",
    "study_workload",
    "minimum_ratio_study",
]

#: What a searched point turned out to be.
STATUSES = ("critical", "gradient-flat", "not converged", "diverged")


@dataclass(frozen=True)
class PointReport:
    """One network's searched point and its exact Hessian spectrum.

    Attributes:
        index: the network's position in the study.
        loss: the training loss ``L`` at the point (without the L2 term).
        objective: ``F = L + weight_decay/2 ||theta||^2``, the function whose critical point it is.
        start_loss: the training loss where training stopped (the search's start).
        grad_norm: ``||grad F||`` at the point.
        gradient_flat: ``||H g|| / ||g||`` (0 when ``g = 0``): small means ``||g||^2`` is
            stationary even if ``g`` is not zero.
        status: one of :data:`STATUSES`: ``"critical"`` (``grad_norm <= grad_tol``),
            ``"gradient-flat"``, ``"not converged"`` or ``"diverged"`` (training left the
            finite numbers; no spectrum).
        kind: the second-order kind from :mod:`descentlab.critical.rules` (``"local_min"``,
            ``"local_max"``, ``"saddle"``, ``"flat"``); a critical-point kind only when
            ``status == "critical"`` (only then are flat directions probed); elsewhere it
            just names the eigenvalue signs present.
        degenerate: some eigenvalue is zero within ``eig_tol``.
        minimum_ratio: fraction of positive eigenvalues (zeros count as not positive).
        n_positive, n_negative, n_zero: eigenvalue counts.
        min_eigenvalue, max_eigenvalue: the extreme eigenvalues.
        distance: ``||theta - theta_start||``, how far the point is from where training stopped.
        newton_steps: accepted Newton-type steps of the search.
        eigenvalues: all eigenvalues, ascending.
        params: the flat parameters of the point.
    """

    index: int
    loss: float
    objective: float
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

    def row(self) -> dict[str, Any]:
        """The scalar fields, as one row of ``points.csv``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("eigenvalues", "params")}


@dataclass(frozen=True)
class MinimumRatioStudy:
    """Every network's trained loss and searched point, and the settings that produced them.

    Attributes:
        points: one :class:`PointReport` per network.
        trained_loss: ``(K,)`` the training loss of each network before the search.
        learning_rates: ``(K,)`` the learning rate each network trained with.
        n_params: parameters per network (the length of each spectrum).
        settings: the study's arguments.
        seconds: wall-clock of training, search and spectra together.
        model: one line naming the networks' architecture.
    """

    points: tuple[PointReport, ...]
    trained_loss: torch.Tensor = field(repr=False)
    learning_rates: torch.Tensor = field(repr=False)
    n_params: int
    settings: Mapping[str, Any] = field(repr=False)
    seconds: float
    model: str = ""

    def counts(self) -> dict[str, int]:
        """How many points have each status, and how many are strict minima."""
        out = {status: sum(p.status == status for p in self.points) for status in STATUSES}
        out["strict minima (ratio 1)"] = sum(p.status == "critical" and p.minimum_ratio == 1.0 for p in self.points)
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items())
        return f"MinimumRatioStudy({len(self.points)} networks of {self.n_params} parameters: {counts})"


def _status(grad_norm: float, gradient_flat: float, max_abs_eigenvalue: float, grad_tol: float,
            flat_tol: float) -> str:
    if not math.isfinite(grad_norm):
        return "diverged"
    if grad_norm <= grad_tol:
        return "critical"
    if gradient_flat <= flat_tol * max(max_abs_eigenvalue, 1e-300):
        return "gradient-flat"
    return "not converged"


def find_critical_points(model: nn.Module, loss_fn: Callable, data: tuple[torch.Tensor, torch.Tensor],
                         flat: torch.Tensor, *, newton_steps: int = 150, radius: float = 0.1,
                         grad_tol: float = 1e-8, flat_tol: float = 1e-2, eig_tol: float = 1e-6,
                         weight_decay: float = 0.0, progress: bool = False) -> list[PointReport]:
    """Search from each of K starting points (``flat``: ``(K, P)``) and read each exact spectrum.

    ``F = L + weight_decay/2 ||theta||^2`` with ``L`` the loss over ``data`` as the data layer
    takes it (:class:`~descentlab.curvature.EmpiricalLoss`: batches weighted, dropout and
    batch norm in eval mode); the flat vectors lay ``model``'s trainable parameters end to end
    (:mod:`descentlab.params`). All K networks move together
    (:func:`~descentlab.critical.newton.newton_to_critical`), then one batched
    ``torch.linalg.eigh`` of the K final Hessians gives every eigenvalue. A point is
    ``"critical"`` only when ``||grad F|| <= grad_tol``; only critical points have their flat
    directions probed (one objective call per probe). ``model`` is only a template (its
    structure); its own parameters are left as they were.
    """
    for name, value in (("grad_tol", grad_tol), ("flat_tol", flat_tol), ("eig_tol", eig_tol)):
        check_number(name, value)
    risk = EmpiricalLoss(model, loss_fn, data)
    objective = L2Objective(risk, weight_decay)
    start = flat.detach()
    search = newton_to_critical(objective, start, steps=newton_steps, radius=radius, grad_tol=grad_tol,
                                progress=progress)
    theta, g, H = search.theta, search.gradient, search.hessian
    k, n_params = theta.shape
    finite = torch.isfinite(H).all(dim=2).all(dim=1)
    values = torch.full((k, n_params), math.nan, dtype=theta.dtype)
    vectors = torch.full((k, n_params, n_params), math.nan, dtype=theta.dtype)
    if finite.any():
        values[finite], vectors[finite] = torch.linalg.eigh(H[finite])
    losses, objectives, start_losses = risk.losses(theta), objective.values(theta), risk.losses(start)
    grad_norms = g.norm(dim=1)
    hg_norms = (torch.nan_to_num(H) @ torch.nan_to_num(g).unsqueeze(-1)).squeeze(-1).norm(dim=1)
    distances = (theta - start).norm(dim=1)
    reports = []
    for i in range(k):
        grad_norm = float(grad_norms[i]) if finite[i] else math.nan
        gradient_flat = float(hg_norms[i] / grad_norms[i]) if grad_norm > 0 else 0.0
        status = _status(grad_norm, gradient_flat, float(values[i].abs().max()), grad_tol, flat_tol)
        if status == "diverged":
            kind, degenerate, ratio, counts = "", False, math.nan, (0, 0, 0)
        else:
            if status == "critical":
                with torch.no_grad():
                    verdict = classify_eigenvalues(values[i], eig_tol, eigenvectors=vectors[i], loss=objective,
                                                   point=theta[i])
            else:
                # Probing flat directions only means something where the gradient vanishes.
                verdict = classify_eigenvalues(values[i], eig_tol)
            kind, degenerate, ratio = verdict.kind, verdict.degenerate, verdict.minimum_ratio
            counts = (verdict.n_positive, verdict.n_negative, verdict.n_zero)
        reports.append(PointReport(
            index=i, loss=float(losses[i]), objective=float(objectives[i]), start_loss=float(start_losses[i]),
            grad_norm=grad_norm, gradient_flat=gradient_flat, status=status, kind=kind, degenerate=degenerate,
            minimum_ratio=ratio, n_positive=counts[0], n_negative=counts[1], n_zero=counts[2],
            min_eigenvalue=float(values[i, 0]), max_eigenvalue=float(values[i, -1]),
            distance=float(distances[i]), newton_steps=int(search.steps[i]),
            eigenvalues=values[i].detach().cpu(), params=theta[i].detach().cpu()))
    return reports


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
    import functools

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


def minimum_ratio_study(workload: Any, *, n_networks: int = 100, train_steps: int = 1000,
                        optimizer: str = "momentum", lr_range: tuple[float, float] = (0.001, 0.3),
                        batch_size: int | None = 32, samples: int | None = 128, hidden: int = 4,
                        weight_decay: float = 1e-2, init_scale: float = 1.0,
                        newton_steps: int = 150, radius: float = 0.1, grad_tol: float = 1e-8,
                        flat_tol: float = 1e-2, eig_tol: float = 1e-6, seed: int = 0,
                        progress: bool = False) -> MinimumRatioStudy:
    """Train ``n_networks`` small networks on ``workload`` and find each one's critical point.

    Network ``i`` starts from ``torch.manual_seed(seed + i)`` and trains with its own learning
    rate, log-spaced over ``lr_range``, and the optimizer's ``weight_decay`` (its L2 term is
    the one of :class:`~descentlab.critical.newton.L2Objective`), as one stacked ensemble
    (:func:`descentlab.experiments.ensemble.train_members`). With ``train_steps=0`` the search
    starts from the initial weights scaled by ``init_scale`` (e.g. near the origin, a saddle
    of every network without biases). ``samples`` and ``hidden``: :func:`study_workload`. The
    workload should be float64: critical points need the precision.
    """
    from torch.func import stack_module_state

    if n_networks < 1:
        raise ValueError(f"n_networks: must be >= 1, got {n_networks}")
    if train_steps < 0:
        raise ValueError(f"train_steps: must be >= 0, got {train_steps}")
    if not (math.isfinite(init_scale) and init_scale > 0):
        raise ValueError(f"init_scale: must be a positive number, got {init_scale}")
    if init_scale != 1.0 and train_steps:
        raise ValueError("init_scale: only applies to train_steps=0 (training starts from the model's own init)")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay: must be a finite number >= 0, got {weight_decay}")
    low, high = (float(v) for v in lr_range)
    if not 0 < low <= high:
        raise ValueError(f"lr_range: expected 0 < low <= high, got {lr_range}")
    started = time.perf_counter()
    workload = study_workload(workload, hidden=hidden, samples=samples, seed=seed)
    data = (workload.X_train, workload.y_train)
    rates = torch.logspace(math.log10(low), math.log10(high), n_networks, dtype=torch.float64) if n_networks > 1 \
        else torch.tensor([low], dtype=torch.float64)
    torch.manual_seed(seed)
    template = workload.make_model()
    layout = layout_of(template)
    if train_steps:
        from descentlab.experiments.ensemble import Member, train_members

        members = [Member(seed=seed + i, lr=float(rate)) for i, rate in enumerate(rates)]
        trained = train_members(workload, optimizer, members, steps=train_steps, batch_size=batch_size,
                                eval_every=train_steps, progress=progress,
                                hyperparameters={"weight_decay": weight_decay} if weight_decay else None)
        stacked, trained_loss = trained.params, trained.train_loss[:, -1].detach().clone()
    else:
        models = []
        for i in range(n_networks):
            torch.manual_seed(seed + i)
            model = workload.make_model()
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(init_scale)
            models.append(model)
        stacked, _ = stack_module_state(models)
        stacked = {name: t.detach() for name, t in stacked.items()}
        with torch.no_grad():
            trained_loss = torch.tensor([float(workload.loss_fn(m(data[0]), data[1])) for m in models])
    flat = layout.flatten(stacked, batch_shape=(n_networks,))  # one network per row
    points = find_critical_points(template, workload.loss_fn, data, flat, radius=radius,
                                  newton_steps=newton_steps, grad_tol=grad_tol, flat_tol=flat_tol, eig_tol=eig_tol,
                                  weight_decay=weight_decay, progress=progress)
    settings = dict(workload=getattr(workload, "name", ""), n_networks=n_networks, train_steps=train_steps,
                    optimizer=optimizer, lr_range=[low, high], batch_size=batch_size, samples=samples,
                    hidden=hidden, weight_decay=weight_decay, init_scale=init_scale, radius=radius,
                    newton_steps=newton_steps, grad_tol=grad_tol, flat_tol=flat_tol, eig_tol=eig_tol, seed=seed)
    n_params = layout.n_params
    return MinimumRatioStudy(tuple(points), trained_loss, rates, n_params, settings, time.perf_counter() - started,
                             model=_describe(template))
