"""How feature scales, standardisation and BatchNorm shape the error surface -- and when the
cause of failure is saturation, not conditioning.

The course's claim: features on very different scales stretch the error surface into a long,
narrow valley (one fixed learning rate is too large across it and too small along it);
standardising the features (and BatchNorm, which standardises inside the network) makes the
surface rounder, so gradient descent can take larger steps and gets there sooner.

Raw features can break a network a second way: a tanh unit fed inputs of spread ~570 sits in
its flat tail, passes almost no gradient, and contributes zero eigenvalues -- *saturation*,
which no learning rate fixes. The study separates the two with four models
(:mod:`descentlab.experiments.normalization_networks`): softmax regression started at zero and
a small-init ReLU network (conditioning only), a tanh network and a deeper tanh network
(default initialisation, where saturation may dominate). Each trains by full-batch gradient
descent on scikit-learn's breast-cancer table (:func:`descentlab.problems.features.breast_cancer`,
80/20 train/test), on raw and on standardised features, hidden models also with
``BatchNorm1d`` after every hidden linear layer (on raw and on standardised features). For every
variant and seed:

- the exact Hessian of the training loss at the start: ``lambda_max`` (dense ``eigvalsh`` up to
  :data:`DENSE_LIMIT` parameters, with the count of zero eigenvalues; Lanczos above) and the
  *quadratic bound at the start* ``2 / lambda_max`` -- the rate above which GD would diverge on
  the start's quadratic model (a network's loss is no quadratic far from it, so this is a bound
  the sweep tests, not a limit it assumes);
- one shared log grid of rates (widened past either end while the best rate sits there), each
  run for ``steps`` full-batch GD steps from the same initial weights; a run *diverged* when its
  loss left the finite numbers or ended above where it started; the largest rate that did not;
- the best rate: the fewest steps to ``target_loss`` (ties: the lower final training loss), or,
  when no rate reached it, the lowest final training loss -- chosen on the training data alone,
  so the test accuracy at that rate is measured on a split no choice has seen;
- at the best rate, ``lambda_max`` along training (every ``track_every`` steps, warm-started
  Lanczos, :class:`~descentlab.curvature.tracking.EigenTracker`) and at the end;
- saturation at the start and the end (:func:`~descentlab.experiments.normalization_networks.saturation`).

:func:`quadratic_bowl` is the closed-form picture: least squares of the label on two
features, ``L(w) = mean (y - X w)^2``, whose Hessian ``2 X^T X / N`` is constant, whose
condition number ``kappa = lambda_max / lambda_min`` is exact, and on which GD with the best
fixed rate ``2 / (lambda_max + lambda_min)`` shrinks the distance to the minimum by
``(kappa - 1) / (kappa + 1)`` per step.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from descentlab.engine.callbacks import LoopState
from descentlab.engine.steps import StepInfo, batch_loss, run_steps
from descentlab.experiments.compare import steps_to_target as _first_hit
from descentlab.experiments.normalization_networks import MODELS, Saturation, make_network, saturation

__all__ = [
    "MODELS",
    "INPUTS",
    "DEFAULT_RATES",
    "DENSE_LIMIT",
    "Variant",
    "variants_of",
    "Spectrum",
    "QuadraticBowl",
    "Training",
    "SeedRun",
    "NormalizationStudy",
    "hessian_spectrum",
    "top_eigenvalue",
    "train_full_batch",
    "steps_to_target",
    "quadratic_bowl",
    "run_variant",
    "normalization_study",
]

#: How the features enter the network.
INPUTS = ("raw", "standardised")
#: The shared learning-rate grid: 1e-4 to 10, two rates per decade (widened where the best sits at an end).
DEFAULT_RATES = tuple(10 ** (k / 2) for k in range(-8, 3))
#: Networks up to this many parameters get their whole spectrum (dense ``eigvalsh``); larger ones Lanczos.
DENSE_LIMIT = 600
#: Most rates added past an end of the grid while the best rate sits at that end.
WIDEN_LIMIT = 6


@dataclass(frozen=True)
class Variant:
    """One model trained one way: ``model`` (:data:`MODELS`) on ``inputs`` (:data:`INPUTS`),
    with or without ``BatchNorm1d`` after every hidden linear layer."""

    model: str
    inputs: str
    batchnorm: bool = False

    @property
    def name(self) -> str:
        """``"tanh/standardised+bn"``."""
        return f"{self.model}/{self.inputs}" + ("+bn" if self.batchnorm else "")


def variants_of(models: Sequence[str]) -> list[Variant]:
    """Every variant of ``models``: raw and standardised, and for hidden models each with BatchNorm too."""
    out = []
    for model in models:
        if model not in MODELS:
            raise ValueError(f"models: expected names from {', '.join(MODELS)}, got {model!r}")
        for inputs in INPUTS:
            out.append(Variant(model, inputs))
        if model != "softmax":
            out += [Variant(model, "standardised", True), Variant(model, "raw", True)]
    return out


@dataclass(frozen=True)
class Spectrum:
    """The exact Hessian spectrum of the training loss at one point.

    Attributes:
        eigenvalues: all of them, ascending.
        lambda_max: the largest eigenvalue.
        smallest_positive: the smallest eigenvalue above the zero tolerance (NaN if none).
        ratio: ``lambda_max / smallest_positive``.
        n_negative, n_zero: eigenvalues below / within the zero tolerance.
        quadratic_bound: ``2 / lambda_max``, the *quadratic bound* at this point: the rate above
            which GD diverges on the local quadratic model here (a bound for the true loss only
            while that model holds along the whole path).
    """

    eigenvalues: torch.Tensor = field(repr=False)
    lambda_max: float
    smallest_positive: float
    ratio: float
    n_negative: int
    n_zero: int
    quadratic_bound: float


@dataclass(frozen=True)
class QuadraticBowl:
    """Least squares of ``y`` on two features: ``L(w) = mean (y - X w)^2 = L* + (w - w*)^T (H/2) (w - w*)``.

    Attributes:
        features: the two feature names.
        hessian: ``2 X^T X / N`` (2x2).
        w_star: the minimiser; ``loss_star``: ``L(w*)``.
        eigenvalues: of the Hessian, ascending; ``condition``: their ratio ``kappa``.
        best_lr: ``2 / (lambda_max + lambda_min)``, the fixed GD rate with the fastest worst case.
        contraction: ``(kappa - 1) / (kappa + 1)``, GD's factor per step at ``best_lr``.
        path: ``(steps + 1, 2)`` GD at ``best_lr`` from ``w = 0``.
    """

    features: tuple[str, str]
    hessian: torch.Tensor = field(repr=False)
    w_star: torch.Tensor = field(repr=False)
    loss_star: float
    eigenvalues: torch.Tensor = field(repr=False)
    condition: float
    best_lr: float
    contraction: float
    path: torch.Tensor = field(repr=False)

    def steps_to_shrink(self, factor: float = 100.0) -> float:
        """GD steps at ``best_lr`` to cut the distance to ``w*`` by ``factor`` (worst case, closed form)."""
        if self.contraction <= 0:
            return 1.0
        return math.ceil(math.log(factor) / -math.log(self.contraction))


def hessian_spectrum(model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor,
                     eig_tol: float | None = None) -> Spectrum:
    """Every eigenvalue of the exact Hessian of ``loss_fn(model(X), y)``, in the model's own mode.

    A model in training mode keeps it (``eval_mode=False``): with one full batch, BatchNorm's
    batch statistics make the loss a fixed function of the weights, the one GD descends.
    """
    from descentlab.critical.rules import EIG_TOL, zero_mask
    from descentlab.curvature import HessianOperator

    eigenvalues = torch.linalg.eigvalsh(HessianOperator(model, loss_fn, (X, y), eval_mode=False).dense())
    zero = zero_mask(eigenvalues, EIG_TOL if eig_tol is None else eig_tol)
    positive = eigenvalues[(eigenvalues > 0) & ~zero]
    lambda_max = float(eigenvalues[-1])
    smallest = float(positive.min()) if len(positive) else math.nan
    return Spectrum(eigenvalues=eigenvalues.detach().cpu(), lambda_max=lambda_max, smallest_positive=smallest,
                    ratio=lambda_max / smallest if len(positive) else math.nan,
                    n_negative=int(((eigenvalues < 0) & ~zero).sum()), n_zero=int(zero.sum()),
                    quadratic_bound=2 / lambda_max if lambda_max > 0 else math.inf)


def top_eigenvalue(model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor) -> float:
    """``lambda_max`` of the exact Hessian of ``loss_fn(model(X), y)`` (model's own mode) by Lanczos."""
    from descentlab.curvature import HessianOperator, lanczos

    return float(lanczos(HessianOperator(model, loss_fn, (X, y), eval_mode=False), k=1, which="LA").values[-1])


@dataclass(frozen=True)
class Training:
    """One full-batch GD run.

    Attributes:
        losses: the training loss before every step and after the last, ``(steps + 1,)``; from the
            first non-finite loss on, ``inf``.
        track_steps, track_lambda: the steps at which ``lambda_max`` was measured, and its values
            (empty without tracking).
    """

    losses: torch.Tensor
    track_steps: tuple[int, ...] = ()
    track_lambda: tuple[float, ...] = ()

    @property
    def diverged(self) -> bool:
        """The loss left the finite numbers or ended above where it started."""
        return not math.isfinite(float(self.losses[-1])) or float(self.losses[-1]) > float(self.losses[0])


def train_full_batch(model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor, lr: float,
                     steps: int, *, track_every: int = 0) -> Training:
    """Full-batch gradient descent (the registry's ``"sgd"``, torch's SGD) for ``steps`` steps.

    With ``track_every > 0``, ``lambda_max`` of the training loss's Hessian at step 0 and every
    ``track_every`` steps (and after the last), by Lanczos warm-started from the last eigenvector
    (:class:`~descentlab.curvature.tracking.EigenTracker`, 1 % relative residual). Training stops at the
    first non-finite loss.
    """
    from descentlab.curvature import HessianOperator
    from descentlab.curvature.tracking import EigenTracker
    from descentlab.optim import make_optimizer

    optimizer = make_optimizer("sgd", model.parameters(), lr=lr)
    losses = torch.full((steps + 1,), math.inf, dtype=torch.float64)
    tracker = EigenTracker("LA", tol=1e-2) if track_every else None
    track: list[tuple[int, float]] = []

    def measure(step: int) -> None:
        value = float(tracker(HessianOperator(model, loss_fn, (X, y), eval_mode=False)).values[-1])
        track.append((step, value))

    def record(loop: LoopState, info: StepInfo) -> None:
        losses[info.step - 1] = float(info.loss)  # the loss this step descended from
        if tracker is not None and info.step % track_every == 0 and info.step < steps and math.isfinite(info.loss):
            measure(info.step)

    if tracker is not None:
        measure(0)
    done = run_steps(LoopState(model, optimizer), batch_loss(model, loss_fn), itertools.repeat((X, y)), steps=steps,
                     after_step=record, stop_on_non_finite=True)
    if done.status == "completed":
        with torch.no_grad():
            last = loss_fn(model(X), y)
        if torch.isfinite(last):
            losses[steps] = float(last)
            if tracker is not None:
                measure(steps)
    return Training(losses, tuple(s for s, _ in track), tuple(v for _, v in track))


def steps_to_target(losses: torch.Tensor, target: float) -> float:
    """The first step whose loss is at most ``target`` (NaN if none): the sweeps' rule
    (:func:`descentlab.experiments.compare.steps_to_target`) on a curve indexed by step."""
    return _first_hit(range(len(losses)), losses.tolist(), target)


def quadratic_bowl(X: torch.Tensor, y: torch.Tensor, features: tuple[str, str], steps: int = 50) -> QuadraticBowl:
    """The two-weight least-squares bowl of ``y`` on the two columns of ``X`` (no bias), in closed form."""
    if X.dim() != 2 or X.shape[1] != 2:
        raise ValueError(f"X: expected shape (N, 2), got {tuple(X.shape)}")
    X, y = X.double(), y.double()
    n = X.shape[0]
    hessian = 2 * X.T @ X / n
    w_star = torch.linalg.solve(X.T @ X, X.T @ y)
    loss_star = float(((y - X @ w_star) ** 2).mean())
    eigenvalues = torch.linalg.eigvalsh(hessian)
    low, high = float(eigenvalues[0]), float(eigenvalues[1])
    condition = high / low
    best_lr = 2 / (high + low)
    path = torch.zeros(steps + 1, 2, dtype=torch.float64)
    for step in range(steps):
        path[step + 1] = path[step] - best_lr * hessian @ (path[step] - w_star)
    return QuadraticBowl(features=features, hessian=hessian, w_star=w_star, loss_star=loss_star,
                         eigenvalues=eigenvalues, condition=condition, best_lr=best_lr,
                         contraction=(condition - 1) / (condition + 1), path=path)


@dataclass(frozen=True)
class SeedRun:
    """One variant from one seed's initial weights: its start, its rate sweep and its best run.

    Attributes:
        variant: the :class:`Variant`; ``seed``: of the initial weights.
        n_params: parameters of its network.
        init: :class:`Spectrum` at the start (dense ``eigvalsh``; ``None`` above :data:`DENSE_LIMIT`).
        lambda_max_init: ``lambda_max`` at the start; ``quadratic_bound``: ``2 / lambda_max_init``.
        saturation_init, saturation_trained: :class:`~descentlab.experiments.normalization_networks.Saturation`
            at the start and after the best run.
        rates, steps_to_target, final_losses, diverged: the sweep, rate by rate ascending (NaN
            steps: never reached the target).
        largest_stable: the largest rate of the sweep that did not diverge (NaN: none).
        best_lr: the chosen rate; ``at_edge``: ``"low"`` / ``"high"`` when it is still the grid's
            end after widening, else ``""``; ``reached``: whether it reached the target.
        training: the best run (its loss curve and ``lambda_max`` along it).
        lambda_max_trained: at the end of the best run (NaN if it did not end finite).
        test_accuracy: after the best run, on the held-out test split (eval mode: BatchNorm's
            tracked statistics).
        trained: the :class:`Spectrum` after the best run (dense only).
    """

    variant: Variant
    seed: int
    n_params: int
    init: Spectrum | None
    lambda_max_init: float
    quadratic_bound: float
    saturation_init: Saturation
    saturation_trained: Saturation
    rates: tuple[float, ...]
    steps_to_target: tuple[float, ...]
    final_losses: tuple[float, ...]
    diverged: tuple[bool, ...]
    largest_stable: float
    best_lr: float
    at_edge: str
    training: Training = field(repr=False)
    lambda_max_trained: float
    test_accuracy: float
    trained: Spectrum | None = field(default=None, repr=False)

    @property
    def best_steps(self) -> float:
        """Steps to the target at the best rate (NaN if it never reached it)."""
        return self.steps_to_target[self.rates.index(self.best_lr)]

    @property
    def final_loss(self) -> float:
        """The training loss at the end of the best run."""
        return float(self.training.losses[-1])


@dataclass(frozen=True)
class NormalizationStudy:
    """Every variant's seeds, the two bowls (raw, standardised) and the settings."""

    runs: tuple[SeedRun, ...]
    bowls: tuple[QuadraticBowl, QuadraticBowl]
    target_loss: float
    prior_entropy: float
    settings: dict[str, Any] = field(repr=False)
    seconds: float

    def of(self, variant: str) -> list[SeedRun]:
        """The seeds of the variant named ``variant`` (``"tanh/raw"``)."""
        return [r for r in self.runs if r.variant.name == variant]


def _choose(rates: Sequence[float], points: dict[float, tuple[float, float]],
            diverged: dict[float, bool]) -> float | None:
    """The best rate from ``points`` (rate -> steps to the target, final training loss): the
    fewest steps to the target (ties: the lower final loss), else the lowest final loss; diverged
    runs never win; ``None`` when every run diverged."""
    candidates = [r for r in rates if not diverged[r]]
    if not candidates:
        return None
    return min(candidates, key=lambda r: (math.inf if math.isnan(points[r][0]) else points[r][0], points[r][1], r))


def _sweep(fresh: Callable[[], nn.Module], loss_fn: Callable, X: torch.Tensor, y: torch.Tensor,
           rates: Sequence[float], steps: int) -> list[Training]:
    """Full-batch GD from ``fresh()`` at every rate, as one stacked ensemble
    (:class:`~descentlab.engine.stack.Stack`, a torch SGD param group per rate: each member's
    update is exactly its own GD step). BatchNorm runs on each member's own full-batch statistics,
    as in training mode; its running statistics, which only evaluation reads, are not kept
    (``torch.func.replace_all_batch_norm_modules_``)."""
    from torch.func import replace_all_batch_norm_modules_

    from descentlab.engine.stack import Stack

    members = [replace_all_batch_norm_modules_(fresh()) for _ in rates]
    stack = Stack(members, loss_fn)
    blocks = stack.leaves([1] * len(rates))
    optimizer = torch.optim.SGD([{"params": list(b.values()), "lr": float(r)} for b, r in zip(blocks, rates)],
                                lr=float(rates[0]))
    losses = torch.full((len(rates), steps + 1), math.inf, dtype=torch.float64)
    alive = torch.ones(len(rates), dtype=torch.bool)
    for step in range(steps + 1):
        per_member = stack.losses(stack.join(blocks), X, y, shared=True)
        alive &= torch.isfinite(per_member.detach())
        losses[alive, step] = per_member.detach()[alive].double()
        if step == steps or not alive.any():
            break
        optimizer.zero_grad()
        # a member that left the finite numbers stops (a zero gradient): its NaN stays its own
        torch.where(alive, per_member, torch.zeros_like(per_member)).sum().backward()
        optimizer.step()
    return [Training(losses[k]) for k in range(len(rates))]


def run_variant(variant: Variant, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                *, seed: int, hidden: int, steps: int, rates: Sequence[float], target: float, track_every: int,
                widen: int = WIDEN_LIMIT, progress: Any = None) -> SeedRun:
    """One :class:`SeedRun` of ``variant`` on the ``train`` and ``test`` splits (each ``(X, y)``,
    already standardised where the variant says so)."""
    loss_fn = nn.functional.cross_entropy
    X, y = train
    n_out = int(y.max()) + 1

    def fresh() -> nn.Module:
        torch.manual_seed(seed)  # every rate and every treatment of a model starts from the same draw
        return make_network(variant.model, X.shape[1], n_out, hidden=hidden, batchnorm=variant.batchnorm,
                            dtype=X.dtype)

    start = fresh()
    n_params = sum(p.numel() for p in start.parameters())
    init = hessian_spectrum(start, loss_fn, X, y) if n_params <= DENSE_LIMIT else None
    lambda_max_init = init.lambda_max if init is not None else top_eigenvalue(start, loss_fn, X, y)
    saturation_init = saturation(start, loss_fn, X, y)

    points: dict[float, tuple[float, float]] = {}
    diverged: dict[float, bool] = {}

    def run(new_rates: Sequence[float]) -> None:
        for rate, training in zip(new_rates, _sweep(fresh, loss_fn, X, y, new_rates, steps)):
            points[rate] = (steps_to_target(training.losses, target), float(training.losses[-1]))
            diverged[rate] = training.diverged
        if progress is not None:
            progress.update(len(new_rates))

    grid = sorted(float(r) for r in rates)
    run(grid)
    factor = grid[1] / grid[0] if len(grid) > 1 else math.sqrt(10)
    edge = ""
    for extra in range(widen + 1):
        best = _choose(grid, points, diverged)
        if best is None:  # every rate diverged: look lower
            edge = "low"
        else:
            edge = "" if len(grid) < 2 else "low" if best == grid[0] else "high" if best == grid[-1] else ""
        if not edge or extra == widen:
            break
        rate = grid[0] / factor if edge == "low" else grid[-1] * factor
        run([rate])
        grid = sorted(grid + [rate])
    best = _choose(grid, points, diverged)
    if best is None:  # every rate diverged, even after widening: report the smallest
        best, edge = grid[0], "low"

    model = fresh()  # the best rate again, with lambda_max tracked and BatchNorm's running statistics kept
    training = train_full_batch(model, loss_fn, X, y, best, steps, track_every=track_every)
    finite = math.isfinite(float(training.losses[-1]))
    trained = hessian_spectrum(model, loss_fn, X, y) if finite and n_params <= DENSE_LIMIT else None
    lambda_max_trained = (trained.lambda_max if trained is not None else top_eigenvalue(model, loss_fn, X, y)) \
        if finite else math.nan
    saturation_trained = saturation(model, loss_fn, X, y) if finite else Saturation(math.nan, math.nan)
    model.eval()  # the test split with the statistics BatchNorm tracked while training
    with torch.no_grad():
        accuracy = float((model(test[0]).argmax(-1) == test[1]).double().mean())
    stable = [r for r in grid if not diverged[r]]
    return SeedRun(
        variant=variant, seed=seed, n_params=n_params, init=init, lambda_max_init=lambda_max_init,
        quadratic_bound=2 / lambda_max_init if lambda_max_init > 0 else math.inf,
        saturation_init=saturation_init, saturation_trained=saturation_trained, rates=tuple(grid),
        steps_to_target=tuple(points[r][0] for r in grid), final_losses=tuple(points[r][1] for r in grid),
        diverged=tuple(diverged[r] for r in grid), largest_stable=max(stable) if stable else math.nan,
        best_lr=best, at_edge=edge, training=training, lambda_max_trained=lambda_max_trained,
        test_accuracy=accuracy, trained=trained)


def normalization_study(*, models: Sequence[str] = MODELS, seeds: int = 5, hidden: int = 8, steps: int = 300,
                        rates: Sequence[float] = DEFAULT_RATES, target_loss: float = 0.1, track_every: int = 25,
                        seed: int = 0, bowl_features: tuple[str, str] = ("mean texture", "mean smoothness"),
                        progress: bool = False) -> NormalizationStudy:
    """Every variant of ``models`` (:func:`variants_of`) from ``seeds`` initial draws on the
    breast-cancer table, and the two-weight bowl before and after standardising.

    ``seed`` fixes the split (80/20 train/test); the initial weights of seed ``i``
    come from ``torch.manual_seed(seed + i)``, the same for every rate and treatment of a model.
    ``hidden``: the width of ``"tanh"`` and ``"relu"``.
    """
    import sys

    from tqdm.auto import tqdm

    from descentlab.problems.features import breast_cancer, standardise

    if hidden < 1:
        raise ValueError(f"hidden: must be >= 1, got {hidden}")
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps}")
    if seeds < 1:
        raise ValueError(f"seeds: must be >= 1, got {seeds}")
    if track_every < 0:
        raise ValueError(f"track_every: must be >= 0, got {track_every}")
    rates = tuple(float(r) for r in rates)
    if not rates or any(not (math.isfinite(r) and r > 0) for r in rates) or len(set(rates)) != len(rates):
        raise ValueError(f"rates: must be distinct positive numbers, got {list(rates)}")
    if not (math.isfinite(target_loss) and target_loss > 0):
        raise ValueError(f"target_loss: must be a positive number, got {target_loss}")
    variants = variants_of(models)
    started = time.perf_counter()
    data = breast_cancer(seed=seed)  # its validation split is the test split here: no choice sees it
    columns = [data.column(name) for name in bowl_features]
    X_std, X_test_std = standardise(data.X_train, data.X_val)
    inputs = {"raw": ((data.X_train, data.y_train), (data.X_val, data.y_val)),
              "standardised": ((X_std, data.y_train), (X_test_std, data.y_val))}
    bar = tqdm(total=len(variants) * seeds * len(rates), desc="rate sweeps", file=sys.stderr, disable=not progress,
               leave=False)
    runs = tuple(run_variant(v, *inputs[v.inputs], seed=seed + i, hidden=hidden, steps=steps, rates=rates,
                             target=target_loss, track_every=track_every, progress=bar)
                 for v in variants for i in range(seeds))
    bar.close()
    bowls = (quadratic_bowl(data.X_train[:, columns], data.y_train, bowl_features),
             quadratic_bowl(X_std[:, columns], data.y_train, bowl_features))
    prior = torch.bincount(data.y_train).double() / len(data.y_train)
    settings = dict(models=list(models), seeds=seeds, hidden=hidden, steps=steps, rates=list(rates),
                    target_loss=target_loss, track_every=track_every, seed=seed, bowl_features=list(bowl_features),
                    n_train=len(data.X_train), n_test=len(data.X_val),
                    n_features=data.X_train.shape[1])
    return NormalizationStudy(runs, bowls, target_loss, float(-(prior * prior.log()).sum()), settings,
                              time.perf_counter() - started)
