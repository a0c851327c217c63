"""Learning-rate schedules as closed-form functions ``step -> factor`` (optax's way).

A schedule multiplies the optimizer's base learning rate: at step t the rate is
``lr * schedule(t)``, for t = 0, 1, 2, ... (t = number of ``scheduler.step()`` calls so far).
Being closed form, resuming at step 10,000 needs only the number 10,000: a restarted run
can never drift from the uninterrupted one. :func:`make_scheduler` wraps any schedule in a
standard ``torch.optim.lr_scheduler.LambdaLR``, so every torch optimizer, checkpoint and
training loop takes it unchanged.

Schedules (w = warm-up steps, T = total steps, f = final factor)::

    constant                      1
    warmup-linear                 t / w  for t < w, then linear 1 -> f at T
    warmup-cosine                 t / w  for t < w, then f + (1 - f) (1 + cos(pi (t - w) / (T - w))) / 2
    warmup-rsqrt                  t / w  for t < w, then sqrt(w / t)         (inverse square root)
    noam                          d_model^-0.5 * min(n^-0.5, n * w^-1.5), n = t + 1   (Vaswani et al. 2017)
    inverse-time                  1 / (1 + t / tau)                          (Robbins-Monro's 1/t decay)
    exponential                   gamma^t                                    (e.g. x 0.9 every step)
    step                          gamma^floor(t / every)
    cosine-restarts               SGDR: cosine from 1 to f over a period, restarting; each
                                  period ``mult`` times the last (Loshchilov & Hutter 2017)

From a string (the CLI's ``--schedule``): ``NAME`` or ``NAME:key=value,key=value``, e.g.
``warmup-cosine:warmup=100,total=1000``, ``noam:d_model=512,warmup=4000``,
``exponential:gamma=0.9``, ``step:every=30,gamma=0.1``, ``cosine-restarts:period=50,mult=2``.
``str(schedule)`` gives the same form back; :func:`parse_schedule` reads it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from descentlab.checks import check_int, check_number
from descentlab.errors import UserInputError

__all__ = ["Schedule", "Constant", "WarmupLinear", "WarmupCosine", "WarmupInverseSqrt", "Noam", "InverseTime", "Exponential",
           "StepDecay", "CosineRestarts", "SCHEDULES", "parse_schedule", "make_scheduler"]


def _check(name: str, value: Any, *, integer: bool = False, low: float = 0.0, low_open: bool = False,
           high: float = math.inf, high_open: bool = False) -> None:
    if integer:
        check_int(name, value, low=math.floor(low) + 1 if low_open else math.ceil(low), high=high)
    else:
        check_number(name, value, low=low, high=high, low_open=low_open, high_open=high_open)


def _warmup(step: int, warmup: int) -> float | None:
    """The warm-up factor t / w while t < w, else None."""
    return step / warmup if step < warmup else None


@dataclass(frozen=True)
class Schedule:
    """Base: a closed-form factor of the step. Subclasses define ``name`` and ``factor``."""

    name: ClassVar[str] = ""

    def factor(self, step: int) -> float:
        raise NotImplementedError

    def __call__(self, step: int) -> float:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        return float(self.factor(step))

    def __str__(self) -> str:
        fields = ",".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))
        return f"{self.name}:{fields}" if fields else self.name


@dataclass(frozen=True)
class Constant(Schedule):
    """Factor 1 at every step."""

    name: ClassVar[str] = "constant"

    def factor(self, step: int) -> float:
        return 1.0


@dataclass(frozen=True)
class _WarmupThenDecay(Schedule):
    """Linear warm-up ``t / warmup``, then a decay from 1 to ``final`` over ``progress`` in [0, 1],
    reaching ``final`` at step ``total`` and staying there. Subclasses give the decay's shape."""

    warmup: int = 0
    total: int = 1000
    final: float = 0.0

    def __post_init__(self) -> None:
        _check("warmup", self.warmup, integer=True)
        _check("total", self.total, integer=True, low=self.warmup, low_open=True)
        _check("final", self.final, high=1.0)

    def decay(self, progress: float) -> float:
        raise NotImplementedError

    def factor(self, step: int) -> float:
        warm = _warmup(step, self.warmup)
        if warm is not None:
            return warm
        return self.decay(min(1.0, (step - self.warmup) / (self.total - self.warmup)))


@dataclass(frozen=True)
class WarmupLinear(_WarmupThenDecay):
    """Linear warm-up ``t / warmup``, then linear decay from 1 to ``final`` at step ``total`` (then ``final``)."""

    name: ClassVar[str] = "warmup-linear"

    def decay(self, progress: float) -> float:
        return 1.0 + (self.final - 1.0) * progress


@dataclass(frozen=True)
class WarmupCosine(_WarmupThenDecay):
    """Linear warm-up ``t / warmup``, then half a cosine from 1 to ``final`` at step ``total`` (then ``final``)."""

    name: ClassVar[str] = "warmup-cosine"

    def decay(self, progress: float) -> float:
        return self.final + (1.0 - self.final) * (1.0 + math.cos(math.pi * progress)) / 2.0


@dataclass(frozen=True)
class WarmupInverseSqrt(Schedule):
    """Linear warm-up ``t / warmup``, then ``sqrt(warmup / t)`` (1 at the end of the warm-up)."""

    name: ClassVar[str] = "warmup-rsqrt"
    warmup: int = 100

    def __post_init__(self) -> None:
        _check("warmup", self.warmup, integer=True, low=1)

    def factor(self, step: int) -> float:
        warm = _warmup(step, self.warmup)
        return warm if warm is not None else math.sqrt(self.warmup / step)


@dataclass(frozen=True)
class Noam(Schedule):
    """The Transformer schedule (Vaswani et al. 2017): ``d_model^-0.5 * min(n^-0.5, n * warmup^-1.5)``, n = t + 1.

    The paper's rate is this factor itself: use it with the optimizer's ``lr=1.0``.
    """

    name: ClassVar[str] = "noam"
    d_model: int = 512
    warmup: int = 4000

    def __post_init__(self) -> None:
        _check("d_model", self.d_model, integer=True, low=1)
        _check("warmup", self.warmup, integer=True, low=1)

    def factor(self, step: int) -> float:
        n = step + 1
        return self.d_model ** -0.5 * min(n ** -0.5, n * self.warmup ** -1.5)


@dataclass(frozen=True)
class InverseTime(Schedule):
    """``1 / (1 + t / tau)``: Robbins and Monro's 1/t decay, a half at ``t = tau``."""

    name: ClassVar[str] = "inverse-time"
    tau: int = 100

    def __post_init__(self) -> None:
        _check("tau", self.tau, integer=True, low=1)

    def factor(self, step: int) -> float:
        return 1.0 / (1.0 + step / self.tau)


@dataclass(frozen=True)
class Exponential(Schedule):
    """``gamma ** t``: the rate is multiplied by ``gamma`` every step."""

    name: ClassVar[str] = "exponential"
    gamma: float = 0.9

    def __post_init__(self) -> None:
        _check("gamma", self.gamma, low_open=True, high=1.0)

    def factor(self, step: int) -> float:
        return self.gamma ** step


@dataclass(frozen=True)
class StepDecay(Schedule):
    """``gamma ** (t // every)``: the rate drops by ``gamma`` every ``every`` steps."""

    name: ClassVar[str] = "step"
    every: int = 30
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _check("every", self.every, integer=True, low=1)
        _check("gamma", self.gamma, low_open=True, high=1.0)

    def factor(self, step: int) -> float:
        return self.gamma ** (step // self.every)


@dataclass(frozen=True)
class CosineRestarts(Schedule):
    """SGDR (Loshchilov & Hutter 2017): cosine from 1 to ``final`` over ``period`` steps, then restart;
    each period is ``mult`` times longer than the one before."""

    name: ClassVar[str] = "cosine-restarts"
    period: int = 100
    mult: int = 1
    final: float = 0.0

    def __post_init__(self) -> None:
        _check("period", self.period, integer=True, low=1)
        _check("mult", self.mult, integer=True, low=1)
        _check("final", self.final, high=1.0)

    def factor(self, step: int) -> float:
        if self.mult == 1:
            t_cur, t_i = step % self.period, self.period
        else:
            # restarts at period * (mult^n - 1) / (mult - 1): solve for n in closed form
            n = int(math.log(step * (self.mult - 1) / self.period + 1, self.mult))
            start = self.period * (self.mult ** n - 1) // (self.mult - 1)
            if start > step:  # guard the float log against rounding at a boundary
                n -= 1
            elif start + self.period * self.mult ** n <= step:
                n += 1
            start = self.period * (self.mult ** n - 1) // (self.mult - 1)
            t_cur, t_i = step - start, self.period * self.mult ** n
        return self.final + (1.0 - self.final) * (1.0 + math.cos(math.pi * t_cur / t_i)) / 2.0


#: Every schedule by its name in a spec string.
SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls
    for cls in (Constant, WarmupLinear, WarmupCosine, WarmupInverseSqrt, Noam, InverseTime, Exponential, StepDecay,
                CosineRestarts)
}


def _value(text: str, field: dataclasses.Field) -> Any:
    integer = field.type in (int, "int")
    try:
        return int(text) if integer else float(text)
    except ValueError:
        raise UserInputError(f"{field.name} must be {'an integer' if integer else 'a number'}, got {text!r}") from None


def parse_schedule(spec: str | Schedule) -> Schedule:
    """A schedule from ``"NAME"`` or ``"NAME:key=value,..."`` (see the module docstring).

    Raises:
        UserInputError: unknown name, unknown or repeated key, malformed ``key=value``,
            or a value out of range; the message names the part that is wrong.
    """
    if isinstance(spec, Schedule):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise UserInputError("schedule must be a non-empty string like 'warmup-cosine:warmup=100,total=1000'")
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in SCHEDULES:
        raise UserInputError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}")
    cls = SCHEDULES[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not text.strip():
            raise UserInputError(f"schedule {name!r}: expected key=value, got {item!r}")
        if key not in fields:
            valid = ", ".join(fields) or "none"
            raise UserInputError(f"schedule {name!r} has no parameter {key!r}; valid: {valid}")
        if key in kwargs:
            raise UserInputError(f"schedule {name!r}: {key} given twice")
        kwargs[key] = _value(text.strip(), fields[key])
    try:
        return cls(**kwargs)
    except ValueError as error:
        raise UserInputError(f"schedule {name!r}: {error}") from None


def make_scheduler(optimizer, schedule: str | Schedule | Callable[[int], float]):
    """A ``torch.optim.lr_scheduler.LambdaLR`` that sets each group's rate to ``base_lr * schedule(t)``.

    ``schedule`` is a :class:`Schedule`, a spec string, or any ``step -> factor`` callable.
    Call ``scheduler.step()`` once per optimizer step, as with any torch scheduler.
    """
    import torch

    if isinstance(schedule, str):
        schedule = parse_schedule(schedule)
    if not callable(schedule):
        raise ValueError(f"schedule must be a Schedule, a spec string or a callable, got {type(schedule).__name__}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
