"""The minimum-ratio study: where do trained networks' critical points sit? (Dauphin et al. 2014)

The lecture's experiment. Train many small networks (one vmapped ensemble), then drive each
one to a nearby critical point and read its exact Hessian spectrum:

1. *Search.* Minimise ``f(theta) = 1/2 ||grad L(theta)||^2``, whose gradient is
   ``grad f = H grad L`` -- one Hessian-vector product, vmapped over all networks at once --
   with Adam (element-wise, so it may step the stacked networks). Then a few
   Levenberg-Marquardt steps on the same objective with the exact Hessian of each network,
   ``delta = -(H^2 + mu I)^{-1} H g`` (``H`` is the Jacobian of ``g``), which converge fast
   near a non-degenerate critical point of *any* kind: unlike gradient descent on ``L``,
   nothing here prefers minima. The Hessians are ``vmap(jacrev(grad(L)))`` over all networks
   (a few hundred parameters each, so a few hundred columns), the solves batched.
2. *Spectrum.* The exact Hessians at the final points and all their eigenvalues (one batched
   ``torch.linalg.eigh``); the kind comes from :func:`descentlab.critical.rules.classify_eigenvalues`
   (the one place that turns eigenvalues into a kind), the *minimum ratio* is the fraction of
   positive eigenvalues.
3. *Honesty.* A minimum of ``||g||^2`` need not be a critical point: where ``g`` lies in the
   near-null space of ``H``, ``grad f = H g`` vanishes while ``g`` does not ("gradient-flat"
   regions, Frye et al. 2021). Every point reports ``||g||`` and ``||H g|| / ||g||``; only
   points with ``||g|| <= grad_tol`` are called critical; points whose gradient is not small
   but lies in directions of almost no curvature, ``||H g|| / ||g|| <= flat_tol * max|lambda|``,
   are marked ``gradient-flat``; the rest ``not converged``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from descentlab.checks import check_number

__all__ = [
    "PointReport",
    "MinimumRatioStudy",
    "descend_gradient_norm",
    "analyse_point",
    "find_critical_points",
    "newton_to_critical",
    "minimum_ratio_study",
    "STATUSES",
]

#: What a searched point turned out to be.
STATUSES = ("critical", "gradient-flat", "not converged")


@dataclass(frozen=True)
class PointReport:
    """One network's searched point and its exact Hessian spectrum.

    Attributes:
        index: the network's position in the study.
        loss: the training loss at the point.
        grad_norm: ``||grad L||`` at the point.
        gradient_flat: ``||H g|| / ||g||`` (0 when ``g = 0``): small means ``||g||^2`` is
            stationary even if ``g`` is not zero.
        status: ``"critical"`` (``grad_norm <= grad_tol``), ``"gradient-flat"``
            (``gradient_flat <= flat_tol * max|lambda|`` but not critical) or ``"not converged"``.
        kind: the second-order kind from :mod:`descentlab.critical.rules` (``"local_min"``,
            ``"local_max"``, ``"saddle"``, ``"flat"``); a critical-point kind only when
            ``status == "critical"`` (only then are flat directions probed); elsewhere it
            just names the eigenvalue signs present.
        degenerate: some eigenvalue is zero within ``eig_tol``.
        minimum_ratio: fraction of positive eigenvalues (zeros count as not positive).
        n_positive, n_negative, n_zero: eigenvalue counts.
        min_eigenvalue, max_eigenvalue: the extreme eigenvalues.
        newton_steps: Levenberg-Marquardt steps accepted.
        eigenvalues: all eigenvalues, ascending.
        params: the flat parameters of the point.
    """

    index: int
    loss: float
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
    """

    points: tuple[PointReport, ...]
    trained_loss: torch.Tensor = field(repr=False)
    learning_rates: torch.Tensor = field(repr=False)
    n_params: int
    settings: Mapping[str, Any] = field(repr=False)
    seconds: float

    def counts(self) -> dict[str, int]:
        """How many points are critical, gradient-flat, not converged, and strict minima."""
        out = {status: sum(p.status == status for p in self.points) for status in STATUSES}
        out["strict minima (ratio 1)"] = sum(p.status == "critical" and p.minimum_ratio == 1.0 for p in self.points)
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items())
        return f"MinimumRatioStudy({len(self.points)} networks of {self.n_params} parameters: {counts})"


def _loss_of(model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor) -> Callable:
    buffers = dict(model.named_buffers())

    def loss(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return loss_fn(functional_call(model, (dict(params), buffers), (X,)), y)

    return loss


def descend_gradient_norm(model: nn.Module, loss_fn: Callable, data: tuple[torch.Tensor, torch.Tensor],
                          params: Mapping[str, torch.Tensor], *, steps: int = 300, lr: float = 1e-3,
                          progress: bool = False) -> dict[str, torch.Tensor]:
    """Adam on ``1/2 ||grad L||^2`` for K stacked networks at once; returns the stacked parameters.

    ``params`` maps each parameter name of ``model`` to a ``(K, *shape)`` tensor. The gradient
    of the objective, ``H grad L``, is a Hessian-vector product (reverse over reverse), vmapped
    over the K networks. Adam is element-wise, so stepping the stacked tensors equals K
    separate optimizers.
    """
    if steps < 0:
        raise ValueError(f"steps: must be >= 0, got {steps}")
    if not lr > 0:
        raise ValueError(f"lr: must be > 0, got {lr}")
    from descentlab.optim import make_optimizer

    X, y = data
    loss = _loss_of(model, loss_fn, X, y)

    def half_squared_gradient_norm(p):
        return 0.5 * sum((g**2).sum() for g in grad(loss)(p).values())

    step_direction = vmap(grad(half_squared_gradient_norm))
    leaves = {name: t.detach().clone().requires_grad_(True) for name, t in params.items()}
    optimizer = make_optimizer("adam", list(leaves.values()), lr=lr)
    bar = _bar(steps, "search ||g||^2", progress)
    for _ in range(steps):
        directions = step_direction({n: t.detach() for n, t in leaves.items()})
        for name, leaf in leaves.items():
            leaf.grad = directions[name]
        optimizer.step()
        bar.update(1)
    bar.close()
    return {name: t.detach() for name, t in leaves.items()}


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not enabled, leave=False)


def _set_flat(model: nn.Module, names: Sequence[str], flat: torch.Tensor) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        offset = 0
        for name in names:
            p = params[name]
            p.copy_(flat[offset:offset + p.numel()].reshape(p.shape))
            offset += p.numel()


def analyse_point(model: nn.Module, loss_fn: Callable, data: tuple[torch.Tensor, torch.Tensor], *,
                  index: int = 0, newton_steps: int = 5, grad_tol: float = 1e-6, flat_tol: float = 1e-2,
                  eig_tol: float = 1e-6) -> PointReport:
    """Refine ``model``'s current point with Levenberg-Marquardt on ``||g||^2``, then classify it.

    ``model`` is moved to the refined point. Every Hessian here is the exact one from
    :class:`descentlab.curvature.HessianOperator` (``dense()``), so this is meant for small
    networks (a few thousand parameters at most).
    """
    from descentlab.critical.rules import classify_eigenvalues
    from descentlab.curvature import HessianOperator

    for name, value, low in (("grad_tol", grad_tol, 0.0), ("flat_tol", flat_tol, 0.0), ("eig_tol", eig_tol, 0.0)):
        check_number(name, value, low=low)
    if newton_steps < 0:
        raise ValueError(f"newton_steps: must be >= 0, got {newton_steps}")

    def operator():
        op = HessianOperator(model, loss_fn, data, eval_mode=True)
        return op, op.gradient()

    op, g = operator()
    H = op.dense()
    names = op.names
    accepted, mu = 0, 1e-3 * max(1.0, float(H.abs().max())) ** 2
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    for _ in range(newton_steps):
        if float(g.norm()) <= grad_tol:
            break
        theta = op.point
        improved = False
        for _ in range(8):  # raise the damping until the step lowers ||g||
            delta = -torch.linalg.solve(H @ H + mu * eye, H @ g)
            _set_flat(model, names, theta + delta)
            new_op, new_g = operator()  # a rejected step costs one gradient, not a dense Hessian
            if float(new_g.norm()) < float(g.norm()):
                op, H, g, improved = new_op, new_op.dense(), new_g, True
                mu = max(mu / 10, 1e-12)
                accepted += 1
                break
            mu *= 10
        if not improved:
            _set_flat(model, names, theta)
            break

    values, vectors = torch.linalg.eigh(H)
    flat_loss = _loss_of(model, loss_fn, *data)
    point = op.point

    def loss_at(flat):
        return flat_loss(op.unflatten(flat))

    grad_norm = float(g.norm())
    gradient_flat = float((H @ g).norm() / g.norm()) if grad_norm > 0 else 0.0
    status = _status(grad_norm, gradient_flat, float(values.abs().max()), grad_tol, flat_tol)
    if status == "critical":
        verdict = classify_eigenvalues(values, eig_tol, eigenvectors=vectors, loss=loss_at, point=point)
    else:
        # Probing flat directions only means something where the gradient vanishes: elsewhere
        # the first-order term decides what the loss does, so name the signs present and stop.
        verdict = classify_eigenvalues(values, eig_tol)
    return PointReport(index=index, loss=float(op.loss()), grad_norm=grad_norm, gradient_flat=gradient_flat,
                       status=status, kind=verdict.kind, degenerate=verdict.degenerate,
                       minimum_ratio=verdict.minimum_ratio, n_positive=verdict.n_positive,
                       n_negative=verdict.n_negative, n_zero=verdict.n_zero,
                       min_eigenvalue=float(values[0]), max_eigenvalue=float(values[-1]),
                       newton_steps=accepted, eigenvalues=values.detach().cpu(), params=point.detach().cpu())


def _flat_loss(model: nn.Module, loss_fn: Callable, data: tuple[torch.Tensor, torch.Tensor],
               names: Sequence[str], shapes: Sequence[torch.Size]) -> Callable:
    """The loss of ``model`` as a function of one flat parameter vector (for vmap over networks)."""
    loss = _loss_of(model, loss_fn, *data)
    sizes = [math.prod(shape) for shape in shapes]

    def flat_loss(flat: torch.Tensor) -> torch.Tensor:
        return loss({n: c.reshape(s) for n, c, s in zip(names, flat.split(sizes), shapes)})

    return flat_loss


def _chunk_size(n_params: int, n_samples: int) -> int:
    # jacrev(grad) over P basis vectors of K networks holds ~K * P * N activations per unit.
    # Measured on moons (354 parameters, 128 samples, 100 networks, one thread): 22 networks a
    # chunk took 7 s user + 12 s kernel (page faults of huge temporaries), one a chunk 5 s + 0.1 s.
    return max(1, int(5e4 // max(1, n_params * n_samples)))


def newton_to_critical(model: nn.Module, loss_fn: Callable, data: tuple[torch.Tensor, torch.Tensor],
                       flat: torch.Tensor, *, steps: int = 8, grad_tol: float = 1e-6,
                       progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Levenberg-Marquardt on ``g(theta) = 0`` for K networks at once, with exact Hessians.

    ``flat`` is ``(K, P)``: one flat parameter vector per network (``model`` gives the
    structure, in ``named_parameters`` order). ``H``, the Jacobian of ``g``, is each network's
    exact Hessian, ``vmap(jacrev(grad(L)))`` over the networks, so every step is

        delta = -(H^2 + mu I)^{-1} H g,

    the damped Gauss-Newton step on ``1/2 ||g||^2``: quadratic convergence near a
    non-degenerate critical point of any kind (nothing here prefers minima). A step is kept
    only if it lowers ``||g||``; otherwise ``mu`` grows tenfold and the step is re-solved
    (a retry costs one batched solve and one batched gradient, not a Hessian). Networks that
    reach ``||g|| <= grad_tol``, or that no damping can improve, stop early.

    Returns ``(flat, g, H, accepted)``: the final points, their gradients ``(K, P)``, exact
    Hessians ``(K, P, P)`` *at the final points*, and the accepted steps per network.
    """
    if steps < 0:
        raise ValueError(f"steps: must be >= 0, got {steps}")
    names, shapes = zip(*[(n, p.shape) for n, p in model.named_parameters()])
    flat_loss = _flat_loss(model, loss_fn, data, names, shapes)
    k, n_params = flat.shape
    gradient = vmap(grad(flat_loss))
    hessian = vmap(torch.func.jacrev(grad(flat_loss)), chunk_size=_chunk_size(n_params, len(data[0])))
    theta = flat.detach().clone()
    with torch.no_grad():
        g = gradient(theta)
    H = torch.empty(k, n_params, n_params, dtype=theta.dtype, device=theta.device)
    stale = torch.ones(k, dtype=torch.bool, device=theta.device)  # H not yet computed at theta
    active = g.norm(dim=1) > grad_tol
    accepted = torch.zeros(k, dtype=torch.long)
    mu = torch.zeros(k, dtype=theta.dtype, device=theta.device)
    eye = torch.eye(n_params, dtype=theta.dtype, device=theta.device)
    bar = _bar(steps, "Levenberg-Marquardt (exact Hessians)", progress)
    for step in range(steps):
        idx = (active & stale).nonzero().squeeze(1)
        if len(idx):
            H[idx] = hessian(theta[idx]).detach()
            stale[idx] = False
        idx = active.nonzero().squeeze(1)
        if not len(idx):
            break
        if step == 0:  # start the damping at the scale of H^2 (eigenvalues of H^2 + mu I)
            mu[idx] = 1e-3 * H[idx].abs().amax(dim=(1, 2)).clamp_min(1.0) ** 2
        Ha, ga = H[idx], g[idx]
        A = Ha @ Ha
        Hg = (Ha @ ga.unsqueeze(-1)).squeeze(-1)
        for _ in range(8):
            delta = -torch.linalg.solve(A + mu[idx, None, None] * eye, Hg)
            with torch.no_grad():
                trial_g = gradient(theta[idx] + delta)
            better = trial_g.norm(dim=1) < g[idx].norm(dim=1)
            good = idx[better]
            theta[good] += delta[better]
            g[good] = trial_g[better]
            stale[good] = True
            accepted[good.cpu()] += 1
            mu[good] = (mu[good] / 10).clamp_min(1e-30)
            mu[idx[~better]] *= 10
            idx, A, Hg = idx[~better], A[~better], Hg[~better]
            if not len(idx):
                break
        active[idx] = False  # no damping lowered ||g||: stuck
        active &= g.norm(dim=1) > grad_tol
        bar.update(1)
    bar.close()
    idx = stale.nonzero().squeeze(1)
    if len(idx):
        H[idx] = hessian(theta[idx]).detach()
    return theta, g, H, accepted


def _status(grad_norm: float, gradient_flat: float, max_abs_eigenvalue: float, grad_tol: float,
            flat_tol: float) -> str:
    if grad_norm <= grad_tol:
        return "critical"
    if gradient_flat <= flat_tol * max(max_abs_eigenvalue, 1e-300):
        return "gradient-flat"
    return "not converged"


def find_critical_points(model: nn.Module, loss_fn: Callable, data: tuple[torch.Tensor, torch.Tensor],
                         params: Mapping[str, torch.Tensor], *, search_steps: int = 200, search_lr: float = 1e-3,
                         newton_steps: int = 8, grad_tol: float = 1e-6, flat_tol: float = 1e-2,
                         eig_tol: float = 1e-6, progress: bool = False) -> list[PointReport]:
    """Search from each of K stacked starting points (``params``: name -> ``(K, *shape)``).

    All K networks move together: Adam on ``||g||^2`` (:func:`descend_gradient_norm`), then
    Levenberg-Marquardt with exact Hessians (:func:`newton_to_critical`), then one batched
    ``torch.linalg.eigh`` of the K final Hessians. Statuses as in :func:`analyse_point`; only
    critical points have their flat directions probed (one loss call per probe). ``model`` is
    only a template (its structure); its own parameters are left as they were.
    """
    from descentlab.critical.rules import classify_eigenvalues

    for name, value in (("grad_tol", grad_tol), ("flat_tol", flat_tol), ("eig_tol", eig_tol)):
        check_number(name, value)
    stacked = descend_gradient_norm(model, loss_fn, data, params, steps=search_steps, lr=search_lr,
                                    progress=progress)
    names, shapes = zip(*[(n, p.shape) for n, p in model.named_parameters()])
    k = next(iter(stacked.values())).shape[0]
    flat = torch.cat([stacked[n].reshape(k, -1) for n in names], dim=1)
    theta, g, H, accepted = newton_to_critical(model, loss_fn, data, flat, steps=newton_steps,
                                               grad_tol=grad_tol, progress=progress)
    values, vectors = torch.linalg.eigh(H)
    flat_loss = _flat_loss(model, loss_fn, data, names, shapes)
    with torch.no_grad():
        losses = vmap(flat_loss)(theta)
    grad_norms = g.norm(dim=1)
    hg_norms = (H @ g.unsqueeze(-1)).squeeze(-1).norm(dim=1)
    reports = []
    for i in range(k):
        grad_norm = float(grad_norms[i])
        gradient_flat = float(hg_norms[i] / grad_norms[i]) if grad_norm > 0 else 0.0
        status = _status(grad_norm, gradient_flat, float(values[i].abs().max()), grad_tol, flat_tol)
        if status == "critical":
            with torch.no_grad():
                verdict = classify_eigenvalues(values[i], eig_tol, eigenvectors=vectors[i], loss=flat_loss,
                                               point=theta[i])
        else:
            # Probing flat directions only means something where the gradient vanishes.
            verdict = classify_eigenvalues(values[i], eig_tol)
        reports.append(PointReport(index=i, loss=float(losses[i]), grad_norm=grad_norm, gradient_flat=gradient_flat,
                                   status=status, kind=verdict.kind, degenerate=verdict.degenerate,
                                   minimum_ratio=verdict.minimum_ratio, n_positive=verdict.n_positive,
                                   n_negative=verdict.n_negative, n_zero=verdict.n_zero,
                                   min_eigenvalue=float(values[i, 0]), max_eigenvalue=float(values[i, -1]),
                                   newton_steps=int(accepted[i]), eigenvalues=values[i].detach().cpu(),
                                   params=theta[i].detach().cpu()))
    return reports


def minimum_ratio_study(workload: Any, *, n_networks: int = 100, train_steps: int = 300, optimizer: str = "sgd",
                        lr_range: tuple[float, float] = (0.01, 0.3), batch_size: int | None = 32,
                        samples: int | None = 128, init_scale: float = 1.0, search_steps: int = 200,
                        search_lr: float = 1e-3, newton_steps: int = 8, grad_tol: float = 1e-6,
                        flat_tol: float = 1e-2, eig_tol: float = 1e-6, seed: int = 0,
                        progress: bool = False) -> MinimumRatioStudy:
    """Train ``n_networks`` copies of ``workload``'s model and search each for a critical point.

    Network ``i`` starts from ``torch.manual_seed(seed + i)`` and trains with its own learning
    rate, log-spaced over ``lr_range`` (so training stops at a spread of losses), as one
    stacked ensemble (:func:`descentlab.experiments.ensemble.train_members`). With
    ``train_steps=0`` the search starts from the initial weights scaled by ``init_scale``
    (e.g. near the origin, a saddle of every network without biases). ``samples`` keeps a
    seeded subset of the training data (``None``: all of it) for training, search and spectra
    alike. The workload should be float64: critical points need the precision.
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
    low, high = (float(v) for v in lr_range)
    if not 0 < low <= high:
        raise ValueError(f"lr_range: expected 0 < low <= high, got {lr_range}")
    if samples is not None and samples < 1:
        raise ValueError(f"samples: must be >= 1 (or None), got {samples}")
    started = time.perf_counter()
    if samples is not None and samples < len(workload.X_train):
        keep = torch.randperm(len(workload.X_train), generator=torch.Generator().manual_seed(seed))[:samples]
        workload = dataclasses.replace(workload, X_train=workload.X_train[keep], y_train=workload.y_train[keep])
    data = (workload.X_train, workload.y_train)
    rates = torch.logspace(math.log10(low), math.log10(high), n_networks, dtype=torch.float64) if n_networks > 1 \
        else torch.tensor([low], dtype=torch.float64)
    if train_steps:
        from descentlab.experiments.ensemble import Member, train_members

        members = [Member(seed=seed + i, lr=float(rate)) for i, rate in enumerate(rates)]
        trained = train_members(workload, optimizer, members, steps=train_steps, batch_size=batch_size,
                                eval_every=train_steps, progress=progress)
        starts, trained_loss = trained.params, trained.train_loss[:, -1].detach().clone()
    else:
        models = []
        for i in range(n_networks):
            torch.manual_seed(seed + i)
            model = workload.make_model()
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(init_scale)
            models.append(model)
        starts, _ = stack_module_state(models)
        loss = _loss_of(models[0], workload.loss_fn, *data)
        with torch.no_grad():
            trained_loss = vmap(loss)(starts).detach().clone()
    torch.manual_seed(seed)
    template = workload.make_model()
    points = find_critical_points(template, workload.loss_fn, data, starts, search_steps=search_steps,
                                  search_lr=search_lr, newton_steps=newton_steps, grad_tol=grad_tol,
                                  flat_tol=flat_tol, eig_tol=eig_tol, progress=progress)
    settings = dict(workload=getattr(workload, "name", ""), n_networks=n_networks, train_steps=train_steps,
                    optimizer=optimizer, lr_range=[low, high], batch_size=batch_size, samples=samples,
                    init_scale=init_scale, search_steps=search_steps, search_lr=search_lr,
                    newton_steps=newton_steps, grad_tol=grad_tol, flat_tol=flat_tol, eig_tol=eig_tol, seed=seed)
    n_params = sum(p.numel() for p in template.parameters())
    return MinimumRatioStudy(tuple(points), trained_loss, rates, n_params, settings, time.perf_counter() - started)
