"""A change to how a run is trained, as data, and the one function that makes it.

A remedy (:mod:`descentlab.critical.remedies`) is a :class:`Change`: a new rate or rate
schedule, momentum, a new optimizer, gradient noise, another batch size. The same
:func:`apply_change` makes it on a fork of the run for a trial, on the run itself when a
monitor's request is applied (:class:`~descentlab.engine.callbacks.Control`), and again on
resume, so what was tried is exactly what is continued with.

**The rate is a torch scheduler.** A change of rate becomes a :class:`RemedyLR` on the
optimizer: ``lr_t = base · factor · schedule(t)``, t the steps since the change. ``base`` is
either the loop's own scheduler's rate at that step (*composed*: the change multiplies into
the schedule the run already had, so a cosine decay keeps decaying at 0.3 of its height) or
a fixed rate (*replaced*: an absolute rate such as the run's peak, a new optimizer, or no
scheduler before). Either way ``get_last_lr()`` is the rate the optimizer uses, and the
scheduler to step from then on is the one :func:`apply_change` returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from descentlab.checks import check_choice, check_int, check_number
from descentlab.engine.model_changes import (ACTIVATIONS, INITS, reinitialize, set_batch_first, standardize_inputs,
                                             swap_activations)
from descentlab.schedules import Constant, Schedule, parse_schedule

__all__ = ["Change", "Applied", "RemedyLR", "apply_change"]


@dataclass(frozen=True)
class Change:
    """One change to a run (plain data: it is saved with the run and re-applied on resume).

    Attributes:
        lr_factor: the rate becomes the current one times this (``lr`` overrides it).
        lr: an absolute rate for the run, its largest group's, or ``None``; the other groups keep
            their ratios to it (a group at rate 0 stays there), every group at it where all were at 0.
        schedule: a schedule spec (:func:`~descentlab.schedules.parse_schedule`): the rate's
            factor ``t`` steps after the change; ``None``: constant.
        momentum: set this momentum coefficient on the optimizer (heavy ball's, or β₁ of Adam's kind;
            the velocity is fresh where there was none, else with ``fresh_state``).
        decay_factor: every group's ``weight_decay`` times this (the run's own optimizer).
        optimizer: a registry name: a new optimizer with fresh state over the run's parameter
            groups, at rate ``lr`` (or the registry's default) as ``lr`` sets it; ``None``: the run's
            own, its state kept.
        noise: wrap the optimizer in annealed Gaussian gradient noise.
        batch_size: a new batch size (``None``: the run's).
        clip: wrap the optimizer in gradient clipping at this global norm (``None``: none).
        fresh_gradients: wrap the optimizer so it forgets the gradients after each step
            (:class:`~descentlab.optim.FreshGradients`: for a loop that never zeroes them).
        reinit, init, gain_of: re-initialise the modules ``reinit`` by ``init`` (``"kaiming"``,
            ``"xavier"`` with the gain of ``gain_of``, or PyTorch's ``"default"`` scale), biases 0
            (:func:`~descentlab.engine.model_changes.reinitialize`).
        activations, activation: replace the activation modules ``activations`` by ``activation``
            (``"relu"``, ``"gelu"``, ``"leaky_relu"``, ``"identity"``: a bounded output function taken off).
        standardize: ``(mean, std)`` per input feature: standardize the model's inputs.
        batch_first: set ``batch_first=True`` on these modules (recurrent and attention layers built
            without it and fed batch-first data: :func:`~descentlab.engine.model_changes.set_batch_first`).
        shuffle: ask the loop to draw each step's batch from the whole data, shuffled
            (:attr:`~descentlab.engine.LoopState.shuffle`; the loop's own data order is its to change).
        fresh_state: forget the optimizer's state (moments, velocities, step counts,
            :func:`~descentlab.optim.clear_state`): for a run put back to earlier weights, whose
            state came from the steps that diverged. The weights themselves are the request's
            (:class:`~descentlab.engine.Request` ``restore``), not the change's: plain data here.

    Every field can be made on any loop but ``activations``, ``standardize`` and ``batch_first``, which
    change the model's modules and forward pass, which its ``state_dict`` does not record
    (:attr:`changes_modules`), and ``shuffle``, which only a loop that draws its own batches honours.
    """

    lr_factor: float = 1.0
    lr: float | None = None
    schedule: str | None = None
    momentum: float | None = None
    decay_factor: float = 1.0
    optimizer: str | None = None
    noise: bool = False
    batch_size: int | None = None
    clip: float | None = None
    fresh_gradients: bool = False
    reinit: tuple[str, ...] = ()
    init: str = "kaiming"
    gain_of: str = "relu"
    activations: tuple[str, ...] = ()
    activation: str | None = None
    standardize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    batch_first: tuple[str, ...] = ()
    shuffle: bool = False
    fresh_state: bool = False

    def __post_init__(self) -> None:
        check_number("lr_factor", self.lr_factor, low=0.0, low_open=True)
        if self.lr is not None:
            check_number("lr", self.lr, low=0.0, low_open=True)
        if self.schedule is not None:
            object.__setattr__(self, "schedule", str(parse_schedule(self.schedule)))
        if self.momentum is not None:
            check_number("momentum", self.momentum, high=1.0)
        check_number("decay_factor", self.decay_factor, low=0.0)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size)
        if self.clip is not None:
            check_number("clip", self.clip, low=0.0, low_open=True)
        object.__setattr__(self, "reinit", tuple(str(n) for n in self.reinit))
        object.__setattr__(self, "activations", tuple(str(n) for n in self.activations))
        object.__setattr__(self, "batch_first", tuple(str(n) for n in self.batch_first))
        check_choice("init", self.init, INITS)
        if self.activations and self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)} with activations, "
                             f"got {self.activation!r}")
        if self.standardize is not None:
            mean, std = self.standardize
            object.__setattr__(self, "standardize", (tuple(map(float, mean)), tuple(map(float, std))))

    @property
    def changes_modules(self) -> bool:
        """It swaps modules, standardizes the inputs or sets modules batch first (a change a
        ``state_dict`` does not record)."""
        return bool(self.activations) or self.standardize is not None or bool(self.batch_first)

    @property
    def changes_model(self) -> bool:
        """It changes the model itself (weights, modules or inputs), not only how it is trained."""
        return bool(self.reinit) or self.changes_modules

    @property
    def sets_rate(self) -> bool:
        """The change sets the rate (a factor, an absolute rate, a schedule or a new optimizer)."""
        return self.lr is not None or self.lr_factor != 1.0 or self.schedule is not None or self.optimizer is not None

    @property
    def is_empty(self) -> bool:
        """Nothing changes (the ``keep`` remedy)."""
        return self == Change()

    def rate_factor(self, t: int) -> float:
        """The schedule's factor ``t`` steps after the change (1 without a schedule)."""
        return parse_schedule(self.schedule)(t) if self.schedule else 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Change":
        """The inverse of :meth:`to_dict`."""
        return cls(**dict(data))


class Applied(NamedTuple):
    """What a loop continues with after :func:`apply_change`: step this optimizer and this
    scheduler (``None``: none) on batches of ``batch_size`` (``None``: unchanged); ``text`` says
    what happened to the loop's own scheduler; ``shuffle``: the loop is asked to shuffle its batches."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    batch_size: int | None
    text: str
    shuffle: bool = False


class RemedyLR(LRScheduler):
    """``lr_t = base_t · factor · schedule(t)``, t = steps since the change (see the module docstring).

    Args:
        optimizer: the optimizer whose rate is set.
        schedule: the closed-form factor of ``t``.
        factor: a constant factor.
        base_lrs: fixed base rates, one per group (*replaced*); ``None`` with ``inner``.
        inner: the loop's own scheduler, stepped first at every step (*composed*): its rate is
            the base. Its own rate is restored before it steps, so chainable schedulers
            (``ExponentialLR``, which multiply the current rate) and closed-form ones
            (``LambdaLR``) both compose exactly.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule | str = Constant(), *, factor: float = 1.0,
                 base_lrs: list[float] | None = None, inner: Any = None) -> None:
        if (base_lrs is None) == (inner is None):
            raise ValueError("give exactly one of base_lrs and inner")
        self.schedule = parse_schedule(schedule) if isinstance(schedule, str) else schedule
        self.factor = check_number("factor", factor, low=0.0, low_open=True)
        self.inner = inner
        groups = optimizer.param_groups
        if base_lrs is not None:
            if len(base_lrs) != len(groups):
                raise ValueError(f"base_lrs must have one rate per param group ({len(groups)}), got {len(base_lrs)}")
            for group, lr in zip(groups, base_lrs):
                group["initial_lr"] = float(lr)  # ours, whatever an earlier scheduler left there
        self._starting = True
        super().__init__(optimizer)
        self._starting = False

    def step(self, epoch: None = None) -> None:  # noqa: D102 (torch's)
        if self.inner is not None and not self._starting:
            for group, lr in zip(self.optimizer.param_groups, self.inner.get_last_lr()):
                group["lr"] = lr
            self.inner.step()
        super().step()

    def get_lr(self) -> list[float]:
        """The rates at ``last_epoch`` steps since the change."""
        bases = self.inner.get_last_lr() if self.inner is not None else self.base_lrs
        scale = self.factor * self.schedule(max(0, self.last_epoch))
        return [float(base) * scale for base in bases]

    def state_dict(self) -> dict[str, Any]:
        """Plain data (the schedule as its spec, the inner scheduler's own state)."""
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count, "base_lrs": list(self.base_lrs),
                "_last_lr": list(self._last_lr), "schedule": str(self.schedule), "factor": self.factor,
                "inner": None if self.inner is None else self.inner.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        state = dict(state)
        inner = state.pop("inner", None)
        self.schedule = parse_schedule(state.pop("schedule"))
        self.__dict__.update(state)
        if self.inner is not None and inner is not None:
            self.inner.load_state_dict(inner)


def apply_change(change: Change, optimizer: torch.optim.Optimizer, scheduler: Any = None, *,
                 model: nn.Module | None = None, seed: int = 0) -> Applied:
    """Make ``change`` on a run that trains ``model`` with ``optimizer`` (and ``scheduler``): the
    one place a change is made, for trials, monitors' requests and resumed runs alike.

    In order: the model's changes (re-initialised layers, swapped activations, standardized
    inputs; they need ``model``), the optimizer's state forgotten, a new optimizer over the same
    parameters (fresh state; the old scheduler, tied to the old optimizer, ends), momentum and
    the weight decay's factor on every group, a gradient-noise wrapper drawing from a generator
    seeded with ``seed``, gradient clipping, the gradients forgotten after each step, then the rate as a
    :class:`RemedyLR` (composed with ``scheduler`` where the change is relative and ``scheduler``
    can be composed, else replacing it). ``model``, ``optimizer`` and ``scheduler`` are changed in
    place where they are kept.
    """
    from descentlab.optim import OPTIMIZERS, clear_state, make_optimizer, parse_name
    from descentlab.optim.clipping import GradientClipping
    from descentlab.optim.fresh_gradients import FreshGradients
    from descentlab.optim.noise import GradientNoise

    notes = []
    if change.changes_model and model is None:
        raise ValueError("model: the change re-initialises layers, swaps activations, standardizes inputs or "
                         "sets layers batch first; pass the model")
    if change.reinit:
        reinitialize(model, change.reinit, change.init, optimizer, seed=seed, gain_of=change.gain_of)
    if change.activations:
        swap_activations(model, change.activations, change.activation)
    if change.standardize is not None:
        standardize_inputs(model, *change.standardize)
    if change.batch_first:
        set_batch_first(model, change.batch_first)
    if change.fresh_state:
        clear_state(optimizer)
    if change.optimizer is not None:
        lr = change.lr if change.lr is not None else OPTIMIZERS[parse_name(change.optimizer)[1]].lr
        groups = [{"params": group["params"], "lr": rate}
                  for group, rate in zip(optimizer.param_groups, _group_rates(optimizer, lr))]
        optimizer = make_optimizer(change.optimizer, groups, lr=lr)
        if scheduler is not None:
            notes.append("your scheduler ended with the old optimizer")
        scheduler = None
    if change.momentum is not None:
        for group in optimizer.param_groups:
            if "momentum" in group:
                group["momentum"] = change.momentum
            elif "betas" in group:  # Adam's kind: β₁ is its momentum
                group["betas"] = (change.momentum, *tuple(group["betas"])[1:])
            else:
                raise ValueError(f"momentum: {type(optimizer).__name__} has no momentum to set")
    if change.decay_factor != 1.0:
        for group in optimizer.param_groups:
            if "weight_decay" in group:
                group["weight_decay"] = float(group["weight_decay"]) * change.decay_factor
    if change.noise:
        first = optimizer.param_groups[0]["params"][0]
        optimizer = GradientNoise(optimizer, generator=torch.Generator(device=first.device).manual_seed(int(seed)))
    if change.clip is not None:
        optimizer = GradientClipping(optimizer, max_norm=change.clip)
    if change.fresh_gradients:
        optimizer = FreshGradients(optimizer)
    relative = change.lr is None and change.optimizer is None
    if change.sets_rate and change.optimizer is None:
        schedule = parse_schedule(change.schedule) if change.schedule else Constant()
        if relative and _composable(scheduler):
            scheduler = RemedyLR(optimizer, schedule, factor=change.lr_factor, inner=scheduler)
            notes.append("composed with your scheduler (its rate times the remedy's)")
        else:
            if scheduler is not None:
                notes.append("your scheduler was replaced by the remedy's rate")
            bases = (_group_rates(optimizer, change.lr) if change.lr is not None
                     else [float(g["lr"]) * change.lr_factor for g in optimizer.param_groups])
            scheduler = RemedyLR(optimizer, schedule, base_lrs=bases)
    elif change.optimizer is not None and change.schedule:
        scheduler = RemedyLR(optimizer, change.schedule, base_lrs=[float(g["lr"]) for g in optimizer.param_groups])
    if change.shuffle:
        notes.append("draw each step's batch from the whole data, shuffled (DataLoader(shuffle=True)): a loop that "
                     "draws its own batches reads LoopState.shuffle")
    return Applied(optimizer, scheduler, change.batch_size, "; ".join(notes), change.shuffle)


def _group_rates(optimizer: torch.optim.Optimizer, lr: float) -> list[float]:
    """Each parameter group's rate once the run's rate, its largest group's, is ``lr``: the groups'
    ratios kept (a body frozen at rate 0 stays there, rates set 1,000 apart stay so); every group
    at ``lr`` where all of them are at 0."""
    rates = [float(group["lr"]) for group in optimizer.param_groups]
    top = max(rates)
    return [lr * (rate / top) for rate in rates] if top > 0 else [lr] * len(rates)


def _composable(scheduler: Any) -> bool:
    """A torch scheduler whose rate can serve as a base (``ReduceLROnPlateau`` steps on a metric)."""
    return isinstance(scheduler, LRScheduler) and not isinstance(scheduler, ReduceLROnPlateau) and all(
        isinstance(lr, (int, float)) and math.isfinite(lr) for lr in scheduler.get_last_lr())
