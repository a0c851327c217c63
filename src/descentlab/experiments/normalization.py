"""How feature normalisation and batch normalisation reshape the error surface.

The course's claim: features on very different scales stretch the error surface into a
long, narrow valley (one fixed learning rate is too large across it and too small along
it); standardising the features (and BatchNorm, which standardises inside the network)
makes the surface rounder, so gradient descent can take larger steps and gets there sooner.

The study trains the *same* network on the *same* data three ways (:data:`VARIANTS`):

- ``"raw"``: features as measured (:func:`descentlab.problems.features.breast_cancer`:
  spreads from about 0.003 to 570);
- ``"standardised"``: every feature to mean 0, spread 1 (training-set statistics);
- ``"batchnorm"``: raw features, with ``BatchNorm1d`` on the input and after the hidden
  linear layer (training mode: full-batch statistics, so the loss is a fixed function).

For each: the exact Hessian of the training loss (:class:`descentlab.curvature.HessianOperator`,
``dense()`` and ``torch.linalg.eigh``) at initialisation and after training -- its largest
eigenvalue ``lambda_max``, its smallest *positive* eigenvalue (above the project's zero
tolerance, :func:`descentlab.critical.rules.zero_mask`) and their ratio -- the largest stable
gradient-descent rate ``2 / lambda_max`` (on a quadratic, GD diverges above it), and the
number of full-batch GD steps to a target loss at each variant's best rate of one shared
log grid.

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

__all__ = [
    "VARIANTS",
    "DEFAULT_RATES",
    "Spectrum",
    "QuadraticBowl",
    "VariantResult",
    "NormalizationStudy",
    "make_network",
    "hessian_spectrum",
    "train_full_batch",
    "steps_to_target",
    "quadratic_bowl",
    "normalization_study",
]

VARIANTS = ("raw", "standardised", "batchnorm")

#: The shared learning-rate grid: 1e-4 to 10, two rates per decade.
DEFAULT_RATES = tuple(10 ** (k / 2) for k in range(-8, 3))


@dataclass(frozen=True)
class Spectrum:
    """The exact Hessian spectrum of the training loss at one point.

    Attributes:
        eigenvalues: all of them, ascending.
        lambda_max: the largest eigenvalue.
        smallest_positive: the smallest eigenvalue above the zero tolerance (NaN if none).
        ratio: ``lambda_max / smallest_positive``.
        n_negative, n_zero: eigenvalues below / within the zero tolerance.
        stable_lr: ``2 / lambda_max``, the largest rate at which GD is stable on the local quadratic.
    """

    eigenvalues: torch.Tensor = field(repr=False)
    lambda_max: float
    smallest_positive: float
    ratio: float
    n_negative: int
    n_zero: int
    stable_lr: float


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


@dataclass(frozen=True)
class VariantResult:
    """One variant's spectra, rate sweep and best run.

    Attributes:
        variant: one of :data:`VARIANTS`.
        n_params: parameters of its network.
        init, trained: :class:`Spectrum` at initialisation and after the best run.
        rates: the grid; ``steps_to_target``: steps each rate needed (NaN: never, or diverged);
        final_losses: the training loss after the last step (``inf`` if it diverged).
        best_lr: the rate that reached the target in the fewest steps (else the lowest final loss).
        curve: the training loss at every step of the best run.
        val_accuracy: after the best run.
    """

    variant: str
    n_params: int
    init: Spectrum
    trained: Spectrum
    rates: tuple[float, ...]
    steps_to_target: tuple[float, ...]
    final_losses: tuple[float, ...]
    best_lr: float
    curve: torch.Tensor = field(repr=False)
    val_accuracy: float

    @property
    def best_steps(self) -> float:
        """Steps to the target at the best rate (NaN if no rate reached it)."""
        return self.steps_to_target[self.rates.index(self.best_lr)]


@dataclass(frozen=True)
class NormalizationStudy:
    """The three variants, the two bowls (raw, standardised) and the settings."""

    variants: tuple[VariantResult, ...]
    bowls: tuple[QuadraticBowl, QuadraticBowl]
    target_loss: float
    settings: dict[str, Any] = field(repr=False)
    seconds: float

    def __getitem__(self, variant: str) -> VariantResult:
        for result in self.variants:
            if result.variant == variant:
                return result
        raise KeyError(variant)


def make_network(variant: str, n_in: int, hidden: int, n_out: int, dtype: torch.dtype = torch.float64) -> nn.Module:
    """The study's network, ``n_in -> hidden (tanh) -> n_out`` (``hidden = 0``: the linear model
    ``n_in -> n_out``, softmax regression); ``"batchnorm"`` adds ``BatchNorm1d`` on the input and
    after the hidden linear layer (Ioffe & Szegedy 2015)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")
    if hidden < 0:
        raise ValueError(f"hidden: must be >= 0, got {hidden}")
    norm = variant == "batchnorm"
    layers: list[nn.Module] = [nn.BatchNorm1d(n_in)] if norm else []
    if hidden:
        layers += [nn.Linear(n_in, hidden)] + ([nn.BatchNorm1d(hidden)] if norm else []) + [nn.Tanh()]
    layers.append(nn.Linear(hidden or n_in, n_out))
    return nn.Sequential(*layers).to(dtype)


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
                    stable_lr=2 / lambda_max if lambda_max > 0 else math.inf)


def train_full_batch(model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor, lr: float,
                     steps: int) -> torch.Tensor:
    """Full-batch gradient descent (the registry's ``"sgd"``, torch's SGD) for ``steps`` steps.

    Returns the training loss before every step and after the last, ``(steps + 1,)``; from the
    first non-finite loss on, the rest is ``inf`` and training stops.
    """
    from descentlab.optim import make_optimizer

    optimizer = make_optimizer("sgd", model.parameters(), lr=lr)
    losses = torch.full((steps + 1,), math.inf, dtype=torch.float64)

    def record(loop: LoopState, info: StepInfo) -> None:
        losses[info.step - 1] = float(info.loss)  # the loss this step descended from

    done = run_steps(LoopState(model, optimizer), batch_loss(model, loss_fn), itertools.repeat((X, y)), steps=steps,
                     after_step=record, stop_on_non_finite=True)
    if done.status == "completed":
        with torch.no_grad():
            last = loss_fn(model(X), y)
        if torch.isfinite(last):
            losses[steps] = float(last)
    return losses


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


def _run_variant(variant: str, X: torch.Tensor, y: torch.Tensor, X_val: torch.Tensor, y_val: torch.Tensor, *,
                 hidden: int, steps: int, rates: Sequence[float], target: float, seed: int,
                 progress: Any) -> VariantResult:
    loss_fn = nn.functional.cross_entropy
    n_out = int(y.max()) + 1

    def fresh() -> nn.Module:
        torch.manual_seed(seed)  # every variant and every rate starts from the same draw
        return make_network(variant, X.shape[1], hidden, n_out, X.dtype)

    init = hessian_spectrum(fresh(), loss_fn, X, y)
    models, curves, hits = [], [], []
    for rate in rates:
        models.append(fresh())
        curves.append(train_full_batch(models[-1], loss_fn, X, y, rate, steps))
        hits.append(steps_to_target(curves[-1], target))
        progress.update(1)
    finals = [float(c[-1]) for c in curves]
    reached = [i for i, h in enumerate(hits) if not math.isnan(h)]
    best = min(reached, key=lambda i: (hits[i], finals[i])) if reached else \
        min(range(len(rates)), key=lambda i: (finals[i], rates[i]))
    model, curve = models[best], curves[best]  # the sweep's own run at that rate
    trained = hessian_spectrum(model, loss_fn, X, y) if math.isfinite(float(curve[-1])) else init
    model.eval()  # validation with the statistics BatchNorm tracked while training
    with torch.no_grad():
        accuracy = float((model(X_val).argmax(-1) == y_val).double().mean())
    return VariantResult(variant=variant, n_params=sum(p.numel() for p in model.parameters()), init=init,
                         trained=trained, rates=tuple(rates), steps_to_target=tuple(hits),
                         final_losses=tuple(finals), best_lr=rates[best], curve=curve, val_accuracy=accuracy)


def normalization_study(*, hidden: int = 8, steps: int = 300, rates: Sequence[float] = DEFAULT_RATES,
                        target_loss: float = 0.1, seed: int = 0,
                        bowl_features: tuple[str, str] = ("mean texture", "mean smoothness"),
                        progress: bool = False) -> NormalizationStudy:
    """Run the three variants on the breast-cancer table, and the two-weight bowl before and after standardising.

    ``hidden``: tanh units of the network's one hidden layer (0: the linear model).

    ``seed`` fixes the split and every network's initial weights (the same for every rate and
    variant). A rate that never reaches ``target_loss`` within ``steps`` counts as NaN steps.
    """
    from tqdm.auto import tqdm

    from descentlab.problems.features import breast_cancer, standardise

    if hidden < 0:
        raise ValueError(f"hidden: must be >= 0, got {hidden}")
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps}")
    rates = tuple(float(r) for r in rates)
    if not rates or any(not (math.isfinite(r) and r > 0) for r in rates):
        raise ValueError(f"rates: must be positive numbers, got {list(rates)}")
    if not (math.isfinite(target_loss) and target_loss > 0):
        raise ValueError(f"target_loss: must be a positive number, got {target_loss}")
    started = time.perf_counter()
    data = breast_cancer(seed=seed)
    columns = [data.column(name) for name in bowl_features]
    X_std, X_val_std = standardise(data.X_train, data.X_val)
    inputs = {"raw": (data.X_train, data.X_val), "standardised": (X_std, X_val_std),
              "batchnorm": (data.X_train, data.X_val)}
    import sys

    bar = tqdm(total=len(VARIANTS) * len(rates), desc="rate sweep", file=sys.stderr, disable=not progress,
               leave=False)
    results = tuple(_run_variant(v, inputs[v][0], data.y_train, inputs[v][1], data.y_val, hidden=hidden,
                                 steps=steps, rates=rates, target=target_loss, seed=seed, progress=bar)
                    for v in VARIANTS)
    bar.close()
    bowls = (quadratic_bowl(data.X_train[:, columns], data.y_train, bowl_features),
             quadratic_bowl(X_std[:, columns], data.y_train, bowl_features))
    settings = dict(hidden=hidden, steps=steps, rates=list(rates), target_loss=target_loss, seed=seed,
                    bowl_features=list(bowl_features), n_train=len(data.X_train), n_val=len(data.X_val),
                    n_features=data.X_train.shape[1])
    return NormalizationStudy(results, bowls, target_loss, settings, time.perf_counter() - started)
