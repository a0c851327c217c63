"""``StallMonitor``: notice when training stops improving, say why, and step out of a saddle.

Plug it into any training loop as a callback::

    monitor = StallMonitor(loss_fn, (X_train, y_train), optimizer=optimizer, batch_size=64)
    for step, (x, y) in enumerate(batches, start=1):
        ...
        optimizer.step()
        monitor.update(step, loss.item(), model)

**What it watches.** The loss on a fixed, seeded sample of the data (``sample_size`` samples,
all of them when the data is smaller: the full-data loss where affordable), measured every
``window // 5`` steps in eval mode — never the mini-batch losses, whose noise made healthy runs
look stalled. :class:`~descentlab.critical.plateau.PlateauTest` fits the trend of that loss and
calls a plateau only when its progress per window is confidently below ``rel_tol``, or, for a
loss that jitters (SGD at its noise floor), when it stays below over the longest horizon.
Optionally (``grad_tol``) a gradient norm of the sample loss below ``grad_tol`` is a plateau too.

**What it says.** At a plateau :func:`~descentlab.critical.diagnosis.examine` measures the
evidence (the rate, the Hessian's extremes with the sign of λ_min decided in float64 where the
model's precision could hide it, the sharpness against the optimizer's stability limit, the
mini-batch gradient noise) and names a verdict with its remedy
(:mod:`descentlab.critical.verdicts`). A non-finite loss is the ``diverged`` verdict, measured at
the parameters of the best tracked loss (the last good point, a copy kept by the monitor). Each
finding is a :class:`~descentlab.critical.stall.Stall` in ``monitor.stalls`` and one line
through ``log``. :meth:`StallMonitor.respond` is where a verdict is acted on: by default it
steps out of a *saddle* along the most negative eigenvector (:func:`~descentlab.critical.escape`,
a line search that never raises the loss) and keeps the loss along that direction for the
report; no other verdict moves the model.

**Budget.** The monitor times the training between its calls and itself (its tracking
included). A diagnosis starts only if ``spent + expected <= max(budget · training time,
budget_seconds)``: a fraction of the training time, or a few seconds in all, whichever is more,
so a short run still gets its first diagnosis. ``expected`` is the last diagnosis's measured
cost; before the first one it is measured: two Hessian-vector products (or one batched product
of 32 columns, on the exact path) on the sample are timed and multiplied by the products the
diagnosis will make. A plateau that does not fit waits (``status="skipped (budget)"``) and is
diagnosed as soon as it fits while it lasts. ``budget=None`` means no cap. Because the budget
reads the clock, a capped monitor may decide differently on a slower machine; with
``budget=None`` everything is deterministic.

While it works the monitor reports ``"diagnosing stall N…"`` through ``status`` (the training
loop of :func:`~descentlab.experiments.train.train` shows it on the progress bar).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from descentlab.critical.classify import DENSE_THRESHOLD
from descentlab.critical.diagnosis import CLASSIFY_DEFAULTS, FULL_DATA_LIMIT, examine, examine_divergence, full_loss_and_grad
from descentlab.critical.escape import escape
from descentlab.critical.plateau import PlateauTest, Trend
from descentlab.critical.remedies import Remedy, remedies_for
from descentlab.critical.sharpness import SharpnessTracker
from descentlab.critical.stall import Stall
from descentlab.critical.trials import run_trials
from descentlab.critical.verdicts import LR_ZERO
from descentlab.curvature import HessianOperator
from descentlab.curvature.batches import batch_size as count_of, is_pair
from descentlab.monitor_defaults import DEFAULT_BUDGET, DEFAULT_BUDGET_SECONDS, SAMPLE_SIZE, TRIAL_STEPS

__all__ = ["StallMonitor", "Stall", "full_loss_and_grad", "loss_slice", "fixed_sample", "in_memory_batches", "DEFAULT_BUDGET",
           "DEFAULT_BUDGET_SECONDS", "SAMPLE_SIZE", "TRIAL_STEPS"]


_RANDOM_LAYERS = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


@torch.no_grad()
def loss_slice(model: nn.Module, loss_fn: Callable, data: Any, direction: Sequence[torch.Tensor] | torch.Tensor,
               radius: float, n_points: int = 41) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The loss at θ + t·u for ``n_points`` values of t in [-radius, radius]; ``u`` is scaled to unit norm.

    ``direction`` is a flat vector over the trainable parameters (in ``model.parameters()``
    order) or a list of tensors shaped like them. The parameters are restored afterwards.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if isinstance(direction, torch.Tensor) and direction.ndim == 1:
        parts, offset = [], 0
        for p in params:
            parts.append(direction[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        direction = parts
    norm = math.sqrt(sum(float((d.to(p.dtype) ** 2).sum()) for p, d in zip(params, direction)))
    if norm == 0:
        raise ValueError("direction must be non-zero")
    saved = [p.detach().clone() for p in params]
    ts = torch.linspace(-radius, radius, n_points, dtype=torch.float64).tolist()
    losses = []
    was_training = model.training
    model.eval()
    try:
        for t in ts:
            for p, p0, d in zip(params, saved, direction):
                p.copy_(p0 + (t / norm) * d.to(device=p.device, dtype=p.dtype))
            losses.append(full_loss_and_grad(model, loss_fn, data, grad=False)[0])
    finally:
        for p, p0 in zip(params, saved):
            p.copy_(p0)
        model.train(was_training)
    return tuple(ts), tuple(losses)


def fixed_sample(data: Any, size: int | None, seed: int = 0) -> tuple[tuple[Any, torch.Tensor], int | None]:
    """``((X, y), n_data)``: a seeded sample of at most ``size`` samples of ``data`` as one batch,
    and the number of samples ``data`` holds (``None`` when an iterable does not say).

    A pair ``(X, y)`` gives a random subset (in data order); an iterable of batches gives its
    first batches, read until ``size`` samples are there (a ``DataLoader`` is not read further).
    ``size=None`` keeps everything.
    """
    if is_pair(data):
        X, y = data
        n = count_of(X, y)
        if size is None or n <= size:
            return (X, y), n
        index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values
        return (_take(X, index.to(y.device)), y[index.to(y.device)]), n
    parts, count = [], 0
    for batch in data:
        X, y = batch[0], batch[1]
        parts.append((X, y))
        count += count_of(X, y)
        if size is not None and count >= size:
            break
    if not parts:
        raise ValueError("data has no batches")
    if isinstance(data, (list, tuple)):
        n_data = sum(count_of(X, y) for X, y in (b[:2] for b in data))
    elif hasattr(data, "dataset") and hasattr(data.dataset, "__len__"):
        n_data = len(data.dataset)
    else:
        n_data = None
    X = _cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    if size is not None and len(y) > size:
        X, y = _take(X, torch.arange(size, device=y.device)), y[:size]
    return (X, y), n_data


def in_memory_batches(data: Any, limit: int, chunk: int | None) -> list | None:
    """``data`` as a list of batches of at most ``chunk`` samples when it is in memory (a pair
    or a list of batches) and holds at most ``limit`` samples; else ``None``."""
    if is_pair(data):
        X, y = data
        n = count_of(X, y)
        if n > limit:
            return None
        step = n if chunk is None else chunk
        return [(_take(X, torch.arange(i, min(i + step, n), device=y.device)), y[i:i + step]) for i in range(0, n, step)]
    if isinstance(data, (list, tuple)):
        batches = [(b[0], b[1]) for b in data]
        return batches if sum(count_of(X, y) for X, y in batches) <= limit else None
    return None


def _in_memory_pair(data: Any, limit: int) -> tuple[Any, torch.Tensor] | None:
    """``data`` as one ``(X, y)`` pair when it is in memory (a pair, or a list of batches) with
    at most ``limit`` samples (what remedy trials draw their batches from); else ``None``."""
    if is_pair(data):
        return (data[0], data[1]) if count_of(data[0], data[1]) <= limit else None
    batches = in_memory_batches(data, limit, None)
    if not batches:
        return None
    return _cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def _take(X: Any, index: torch.Tensor) -> Any:
    return type(X)(x[index] for x in X) if isinstance(X, (tuple, list)) else X[index]


def _cat(parts: list) -> Any:
    if isinstance(parts[0], (tuple, list)):
        return type(parts[0])(torch.cat(column) for column in zip(*parts))
    return torch.cat(parts)


class StallMonitor:
    """Plateau test + verdict + saddle escape, for any training loop (see the module docstring).

    Args:
        loss_fn: ``loss_fn(output, target)``, mean over a batch.
        data: the training data: one ``(X, y)`` pair or an iterable of batches; the monitor
            draws its fixed sample from it once.
        optimizer: the run's optimizer: its rate and state give the rate verdicts
            (``no_learning_rate``, ``unstable``, ``diverged``'s largest stable rate); ``None``: not tested.
        batch_size: the training batch size: the noise floor is tested when it is smaller than
            the data; ``None``: not tested.
        window: steps per window of the plateau test (>= 1).
        rel_tol: relative progress per window below which the loss is on a plateau.
        grad_tol: gradient norm (of the sample loss, every ``window`` steps) below which it is a
            plateau too; ``None``: off.
        escape: step out of a saddle along negative curvature when one is found.
        budget, budget_seconds: the most the monitor may spend: ``budget`` × training time, or
            ``budget_seconds`` in all, whichever is more; ``budget=None``: no cap.
        max_stalls: stop looking after this many stalls (``None``: never).
        sample_size: samples in the fixed sample (``None``: all of ``data``).
        classify_options: over :data:`~descentlab.critical.diagnosis.CLASSIFY_DEFAULTS`.
        escape_options: keyword arguments for ``escape`` (``max_step``).
        slice_radius: half-width of the 1-D loss slice kept at a saddle (0: no slice).
        seed: seeds the sample, Lanczos, the probes and the noise measurement.
        log: where the one-line findings go (``print``, ``tqdm.write``; ``None``: nowhere).
        status: called with ``"diagnosing stall N…"`` while a diagnosis runs, and ``None`` after.
        track_sharpness: measure the sharpness against the optimizer's stability threshold every
            this many steps (:class:`~descentlab.critical.sharpness.SharpnessTracker`, on the
            fixed sample; ``None``: off). Its points are ``monitor.sharpness.points``.
        track_min: with ``track_sharpness``, also track λ_min.
        remedies: at a diagnosed stall, try the remedies that fit the verdict for
            ``trial_steps`` steps each from a fork of the run and rank them
            (:mod:`descentlab.critical.trials`); needs the optimizer and the training data in memory
            (a pair, or a list of batches, of at most 20,000 samples); their cost counts against
            the budget.
        trial_steps: the length of every trial.
        apply_remedy: continue with the trials' winner instead of the default action (the escape
            at a saddle). The escape, a new rate or rate schedule and momentum are applied here; a
            new optimizer, gradient noise or another batch size need the training loop
            (:func:`~descentlab.experiments.train.train` applies them through :meth:`take_change`).
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (anything with ``add_scalar`` and
            ``add_text``): the tracked loss as ``monitor/tracked_loss``, and per stall its loss,
            extreme eigenvalues and gradient norm (``stall/...``) and its verdict as text.
    """

    def __init__(
        self,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        data: Any,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        batch_size: int | None = None,
        window: int = 50,
        rel_tol: float = 1e-3,
        grad_tol: float | None = None,
        escape: bool = True,
        budget: float | None = DEFAULT_BUDGET,
        budget_seconds: float = DEFAULT_BUDGET_SECONDS,
        max_stalls: int | None = None,
        sample_size: int | None = SAMPLE_SIZE,
        classify_options: Mapping[str, Any] | None = None,
        escape_options: Mapping[str, Any] | None = None,
        slice_radius: float = 2.0,
        seed: int = 0,
        log: Callable[[str], Any] | None = print,
        status: Callable[[str | None], Any] | None = None,
        track_sharpness: int | None = None,
        track_min: bool = False,
        remedies: bool = False,
        trial_steps: int = TRIAL_STEPS,
        apply_remedy: bool = False,
        writer: Any = None,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        if not (_number(rel_tol) and math.isfinite(rel_tol) and rel_tol >= 0):
            raise ValueError(f"rel_tol must be a non-negative number, got {rel_tol!r}")
        if grad_tol is not None and not (_number(grad_tol) and math.isfinite(grad_tol) and grad_tol > 0):
            raise ValueError(f"grad_tol must be a positive number or None, got {grad_tol!r}")
        if budget is not None and not (_number(budget) and math.isfinite(budget) and budget > 0):
            raise ValueError(f"budget must be a positive fraction or None, got {budget!r}")
        if not (_number(budget_seconds) and math.isfinite(budget_seconds) and budget_seconds >= 0):
            raise ValueError(f"budget_seconds must be a non-negative number, got {budget_seconds!r}")
        if max_stalls is not None and (isinstance(max_stalls, bool) or not isinstance(max_stalls, int) or max_stalls < 0):
            raise ValueError(f"max_stalls must be a non-negative integer or None, got {max_stalls!r}")
        if sample_size is not None and (isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 2):
            raise ValueError(f"sample_size must be an integer >= 2 or None, got {sample_size!r}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        if not (_number(slice_radius) and math.isfinite(slice_radius) and slice_radius >= 0):
            raise ValueError(f"slice_radius must be a non-negative number, got {slice_radius!r}")
        if optimizer is not None and not hasattr(optimizer, "param_groups"):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
        if track_sharpness is not None and (isinstance(track_sharpness, bool) or not isinstance(track_sharpness, int)
                                            or track_sharpness < 1):
            raise ValueError(f"track_sharpness must be a positive integer or None, got {track_sharpness!r}")
        if isinstance(trial_steps, bool) or not isinstance(trial_steps, int) or trial_steps < 1:
            raise ValueError(f"trial_steps must be a positive integer, got {trial_steps!r}")
        self.loss_fn = loss_fn
        self.sample, self.n_data = fixed_sample(data, sample_size, seed)
        self.full = in_memory_batches(data, FULL_DATA_LIMIT, sample_size)
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.window = window
        self.every = max(1, window // 5)
        self.rel_tol = float(rel_tol)
        self.grad_tol = grad_tol
        self.escape = bool(escape)
        self.budget = budget
        self.budget_seconds = float(budget_seconds)
        self.max_stalls = max_stalls
        self.classify_options = dict(classify_options or {})
        self.escape_options = dict(escape_options or {})
        self.slice_radius = float(slice_radius)
        self.seed = int(seed)
        self.log = log
        self.status = status
        self.writer = writer
        self.plateau = PlateauTest(window, self.every, self.rel_tol)
        self.stalls: list[Stall] = []
        self.tracked: list[tuple[int, float]] = []  # (step, sample loss) at every tracked step
        self.spent = 0.0  # seconds inside the monitor (tracking and diagnoses)
        self.train_time = 0.0  # seconds between calls, i.e. training
        self._count = 0  # updates seen
        self._last_cost: float | None = None
        self._estimate: float | None = None
        self._last_return: float | None = None
        self._pending: tuple[int, int] | None = None  # (index in stalls, step) of a plateau waiting for budget
        self._initial: float | None = None
        self._best: float | None = None
        self._best_step: int | None = None
        self._best_params: list[torch.Tensor] | None = None
        self._peak_lr: float | None = None
        self._lr_zero_since: int | None = None
        self._total_steps: int | None = None
        self._v0: torch.Tensor | None = None
        self._diverged = False
        self.sharpness = (SharpnessTracker(loss_fn, self.sample, every=track_sharpness, track_min=track_min, seed=seed)
                          if track_sharpness else None)
        self.remedies = bool(remedies)
        self.trial_steps = int(trial_steps)
        self.apply_remedy = bool(apply_remedy)
        self.data = _in_memory_pair(data, FULL_DATA_LIMIT)
        self._program: dict[str, Any] | None = None  # an applied remedy's rate: start step, base rates, remedy
        self._change: Remedy | None = None  # an applied remedy the training loop must make
        self._loop_applies = False  # the training loop makes those changes (``train`` says so in ``attach``)
        self._step = 0

    # ------------------------------------------------------------------ wiring
    def attach(self, *, model: nn.Module | None = None, optimizer: Any = None, batch_size: int | None = None,
               n_train: int | None = None, total_steps: int | None = None,
               status: Callable[[str | None], Any] | None = None, step: int = 0, applies_changes: bool = False,
               **_: Any) -> None:
        """What a training loop tells the monitor before its first step (``train`` calls this):
        the optimizer, the batch size, the training set's size, a status line, whether it makes
        the changes of :meth:`take_change`; at step 0 the model's initial loss (and parameters,
        the first good point) are recorded."""
        self._loop_applies = bool(applies_changes)
        if optimizer is not None and self.optimizer is None:
            self.optimizer = optimizer
        if batch_size is not None and self.batch_size is None:
            self.batch_size = int(batch_size)
        if n_train is not None:
            self.n_data = int(n_train)
        if total_steps is not None:
            self._total_steps = int(total_steps)
        if status is not None:
            self.status = status
        if model is not None and step == 0 and self._initial is None:
            t0 = time.perf_counter()
            self.plateau.add(0, self._track(0, model))
            self.spent += time.perf_counter() - t0
            if self.sharpness is not None:
                self._measure_sharpness(0, model)
        self._last_return = time.perf_counter()

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the monitor adds to a training loop's metrics (the sharpness tracker's)."""
        return self.sharpness.columns if self.sharpness is not None else ()

    def row(self, step: int) -> dict[str, Any]:
        """Those columns' values at ``step`` (empty where nothing was measured)."""
        return self.sharpness.row(step) if self.sharpness is not None else {}

    def take_change(self) -> Remedy | None:
        """An applied remedy that the training loop must make (a new optimizer, gradient noise,
        another batch size), once; ``None`` when there is none. The loop reports back with
        :meth:`changed`."""
        change, self._change = self._change, None
        return change

    def changed(self, *, optimizer: Any = None, batch_size: int | None = None) -> None:
        """The training loop made the change: its new optimizer and batch size."""
        if optimizer is not None:
            self.optimizer = optimizer
        if batch_size is not None:
            self.batch_size = int(batch_size)

    # ------------------------------------------------------------------ the training-loop side
    def update(self, step: int, loss: float | None, model: nn.Module) -> Stall | None:
        """Feed one step (its mini-batch ``loss`` is only checked for being finite); returns the
        new (or newly diagnosed) :class:`Stall`, else ``None``."""
        now = time.perf_counter()
        if self._last_return is not None:
            self.train_time += now - self._last_return
        try:
            if loss is not None and not math.isfinite(loss):
                return self.non_finite(step, model)
            self._step = int(step)
            if self._program is not None:
                self._run_program(step)
            if self.sharpness is not None and self.sharpness.due(step):
                self._measure_sharpness(step, model)
            if self._done():
                return None
            self._count += 1
            if self._count % self.every:
                return None
            t0 = time.perf_counter()
            try:
                return self._check(step, model)
            finally:
                self.spent += time.perf_counter() - t0
        finally:
            self._last_return = time.perf_counter()

    __call__ = update  # a monitor is itself a callback: ``callbacks=[monitor]``

    def non_finite(self, step: int, model: nn.Module) -> Stall | None:
        """The loss became non-finite at ``step``: the ``diverged`` verdict, measured at the last
        good parameters (the best tracked loss), once per run."""
        if self._diverged:
            return None
        self._diverged = True
        t0 = time.perf_counter()
        self._set_status(f"diagnosing stall {len(self.stalls) + 1}…")
        try:
            good = copy.deepcopy(model)
            if self._best_params is not None:
                with torch.no_grad():
                    for p, saved in zip(_trainable(good), self._best_params):
                        p.copy_(saved)
            finding = examine_divergence(good, self.loss_fn, self.sample, step=step, checkpoint_step=self._best_step,
                                         optimizer=self.optimizer, state_model=model, peak_lr=self._peak_lr,
                                         loss=self._loss_record(self._best), seed=self.seed)
            stall = Stall(step, self._best if self._best is not None else math.inf, None, "non_finite", "diagnosed",
                          finding.verdict, finding.remedy, _plain(finding.evidence), diagnosed_at=step)
        except Exception as error:  # a diagnosis must never hide the run's own error
            stall = Stall(step, self._best or 0.0, None, "non_finite", f"failed: {type(error).__name__}: {error}")
        finally:
            self._set_status(None)
        cost = time.perf_counter() - t0
        self.spent += cost
        stall = replace(stall, seconds=cost)
        self.stalls.append(stall)
        self._report(stall)
        return stall

    def _report(self, stall: Stall) -> None:
        """The stall's one-line summary to ``log``, its numbers to ``writer``."""
        if self.log is not None:
            self.log(stall.summary())
            if stall.trials_summary():
                self.log(stall.trials_summary())
        if self.writer is not None:
            for name in ("loss", "grad_norm", "min_eigenvalue", "max_eigenvalue"):
                value = getattr(stall, name, None)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"stall/{name}", value, stall.step)
            self.writer.add_text("stall/verdict", stall.summary(), stall.step)

    def _done(self) -> bool:
        return (self._diverged or self.max_stalls is not None and len(self.stalls) >= self.max_stalls
                and self._pending is None)

    def _check(self, step: int, model: nn.Module) -> Stall | None:
        tracked = self._track(step, model)
        if not math.isfinite(tracked):
            return self.non_finite(step, model)
        trend = self.plateau.add(step, tracked)
        reason = "loss"
        if trend is None and self.grad_tol is not None and self._count % self.window == 0:
            _, grad_norm = full_loss_and_grad(model, self.loss_fn, self.sample)
            if grad_norm < self.grad_tol:
                trend, reason = Trend(0, 1, tracked, tracked, math.nan, math.nan, 0.0), "grad"
        if trend is None:
            self._pending = None  # a plateau that waited for the budget has ended undiagnosed
            return None
        first_step = self._pending[1] if self._pending is not None else step
        started = time.perf_counter()
        expected = self._expected_cost(model)
        allowed = max(self.budget * self.train_time, self.budget_seconds) if self.budget is not None else math.inf
        if self.spent + (time.perf_counter() - started) + expected > allowed:
            if self._pending is not None:
                return None  # still waiting
            stall = Stall(step, tracked, None, reason, "skipped (budget)",
                          evidence={"plateau": _plain(trend.to_dict()), "expected_seconds": expected})
            self.stalls.append(stall)
            self._pending = (len(self.stalls) - 1, step)
            self._report(stall)
            return stall
        stall = self.diagnose(model, step=first_step, reason=reason, trend=trend, at=step)
        if self._pending is not None:
            self.stalls[self._pending[0]] = stall
            self._pending = None
        else:
            self.stalls.append(stall)
        if stall.escaped or stall.remedy_applied not in (None, "keep"):
            self.plateau.reset()  # the model (or how it is trained) changed: a fresh history
        else:
            self.plateau.rearm(trend)  # one plateau, one verdict: quiet until the loss leaves it
        self._report(stall)
        return stall

    # ------------------------------------------------------------------ diagnosis
    def diagnose(self, model: nn.Module, *, step: int = 0, reason: str = "loss", trend: Trend | None = None,
                 at: int | None = None) -> Stall:
        """Diagnose the model where it is now (the monitor calls this at a plateau; call it
        yourself for a verdict on demand). The stall is returned, not recorded."""
        t0 = time.perf_counter()
        self._set_status(f"diagnosing stall {len(self.stalls) + 1}…")
        tracked = self._sample_loss(model)
        try:
            finding = examine(model, self.loss_fn, self.sample, full_data=self.full, optimizer=self.optimizer,
                              batch_size=self.batch_size,
                              n_data=self.n_data, peak_lr=self._peak_lr, lr_zero_since=self._lr_zero_since,
                              total_steps=self._total_steps, loss=self._loss_record(tracked),
                              classify_options=self.classify_options, v0=self._v0, seed=self.seed)
            point = finding.point
            evidence = dict(finding.evidence)
            if trend is not None:
                evidence["plateau"] = trend.to_dict()
            evidence = _plain(evidence)
            fields_: dict[str, Any] = {}
            if point is not None:
                fields_ = dict(kind=point.kind, degenerate=bool(point.degenerate),
                               min_eigenvalue=float(point.min_eigenvalue), max_eigenvalue=float(point.max_eigenvalue),
                               minimum_ratio=float(point.minimum_ratio), eigenvalues=_tuple(point.eigenpairs.values),
                               spectrum=None if point.spectrum is None else _tuple(point.spectrum), point=point)
                if point.method == "lanczos":
                    self._v0 = point.eigenpairs.vectors.detach().clone()
            stall = Stall(step, tracked, (evidence.get("gradient") or {}).get("norm"), reason, "diagnosed",
                          finding.verdict, finding.remedy, evidence, diagnosed_at=step if at is None else at, **fields_)
            stall = self.respond(stall, model)
        except Exception as error:  # a diagnosis must never kill the training run
            stall = Stall(step, tracked, None, reason, f"failed: {type(error).__name__}: {error}")
        finally:
            self._set_status(None)
        cost = time.perf_counter() - t0
        self._last_cost = cost
        return replace(stall, seconds=cost)

    def respond(self, stall: Stall, model: nn.Module) -> Stall:
        """Act on a verdict (the hook where remedies run): at a saddle keep the loss along the most
        negative eigenvector; with ``remedies``, try the remedies that fit the verdict from a fork
        of the run; then, with ``apply_remedy`` and a winner, continue with it, else (the default)
        at a saddle with ``escape=True`` step along the eigenvector. Every other verdict leaves
        the model as it is. Returns the stall with what was done."""
        point = stall.point
        changes: dict[str, Any] = {}
        direction = _lowest_direction(point) if stall.verdict == "saddle" and point is not None else None
        slice_loss: tuple[float, ...] = ()
        if direction is not None and self.slice_radius > 0:
            changes["slice_t"], slice_loss = loss_slice(model, self.loss_fn, self.sample, direction, self.slice_radius)
            changes["slice_loss"] = slice_loss
        trials = self._try_remedies(stall, model) if self.remedies else None
        if trials is not None:
            changes["trials"] = trials
        remedy = self._applicable_winner(trials) if trials and self.apply_remedy else None
        if remedy is not None:
            if remedy.name != trials["winner"]:
                changes["trials"] = {**trials, "not_applied": f"{trials['winner']} needs the training loop (a new "
                                     f"optimizer, gradient noise or another batch size): continuing with "
                                     f"{remedy.name}, the best of the others"}
            if remedy.escape:
                changes.update(self._escape(stall, model, direction, slice_loss))
            if remedy.name != "keep":
                self._apply(remedy, stall.diagnosed_at if stall.diagnosed_at is not None else stall.step)
            changes["remedy_applied"] = remedy.name
        elif stall.verdict == "saddle" and point is not None and self.escape:
            changes.update(self._escape(stall, model, direction, slice_loss))
        return replace(stall, **changes)

    def _applicable_winner(self, trials: Mapping[str, Any]) -> Remedy | None:
        """The best trial that lowered the loss and that this loop can apply (``None`` if none)."""
        if trials.get("status") != "ran" or trials.get("winner") is None:
            return None
        by_name = {t["remedy"]: t for t in trials["trials"]}
        for name in trials["ranking"]:
            trial = by_name[name]
            remedy = Remedy.from_dict(trial["change"])
            if (trial["decrease"] or 0) <= 0 or trial["rate"] is None:
                return None
            if self._loop_applies or not _changes_loop(remedy):
                return remedy
        return None

    def _escape(self, stall: Stall, model: nn.Module, direction: torch.Tensor | None,
                slice_loss: tuple[float, ...]) -> dict[str, Any]:
        """Step along the most negative eigenvector (line search); what it did, as Stall fields."""
        result = escape(model, self.loss_fn, self.sample, stall.point, **self.escape_options)
        changes: dict[str, Any] = {}
        if result.applied and result.direction is not None and direction is not None and slice_loss:
            # the slice is kept along the direction actually stepped (s*u, s = +-1): L(theta + t s u)
            if float(torch.dot(result.direction.to(direction), direction)) < 0:
                changes["slice_loss"] = tuple(reversed(slice_loss))
        changes.update(escape=result, escaped=bool(result.applied), escape_loss_before=float(result.loss_before),
                       escape_loss_after=float(result.loss_after), escape_predicted=float(result.predicted_decrease),
                       escape_step=float(result.step_size))
        return changes

    # ------------------------------------------------------------------ remedies
    def _try_remedies(self, stall: Stall, model: nn.Module) -> dict[str, Any] | None:
        """Run the trials of the remedies that fit ``stall``'s verdict, within the budget."""
        if self.optimizer is None or self.data is None:
            return None
        n = count_of(*self.data)
        batch = self.batch_size if self.batch_size is not None and self.batch_size < n else None
        point = stall.point
        can_escape = point is not None and getattr(point, "eigenpairs", None) is not None and (
            stall.min_eigenvalue is not None and stall.min_eigenvalue < 0)
        menu = remedies_for(stall.verdict, stall.evidence, self.optimizer, batch_size=batch, n_data=n,
                            trial_steps=self.trial_steps, peak_lr=self._peak_lr, can_escape=can_escape)
        if not menu:
            return None
        fork_step = stall.diagnosed_at if stall.diagnosed_at is not None else stall.step
        per_step = self.train_time / self._count if self._count else 0.0
        expected = len(menu) * self.trial_steps * per_step
        if self.budget is not None:
            allowed = max(self.budget * self.train_time, self.budget_seconds)
            if self.spent + expected > allowed:
                return {"status": "skipped (budget)", "fork_step": fork_step, "expected_seconds": expected,
                        "remedies": [r.name for r in menu]}
        self._set_status(f"trying {len(menu)} remedies at stall {len(self.stalls) + 1}…")
        try:
            result = run_trials(model, self.optimizer, self.loss_fn, self.data, menu, steps=self.trial_steps,
                                batch_size=batch, seed=self.seed + fork_step, sample=self.sample, point=point,
                                escape_options=self.escape_options)
        except Exception as error:  # a trial must never kill the training run
            return {"status": f"failed: {type(error).__name__}: {error}", "fork_step": fork_step}
        return {"status": "ran", "fork_step": fork_step, **_plain(result.to_dict())}

    def _apply(self, remedy: Remedy, step: int) -> None:
        """Continue the run with ``remedy`` (not the escape, done already): momentum and the rate
        here, a new optimizer / noise / batch size through the training loop (:meth:`take_change`)."""
        change = remedy.change
        if change.momentum is not None:
            for group in self.optimizer.param_groups:
                group["momentum"] = change.momentum
        if _changes_loop(remedy):
            self._change = remedy
        if change.optimizer is None and (change.schedule or change.lr is not None or change.lr_factor != 1.0):
            base = ([change.lr] * len(self.optimizer.param_groups) if change.lr is not None
                    else [float(g["lr"]) * change.lr_factor for g in self.optimizer.param_groups])
            self._program = {"start": int(step), "base": base, "remedy": remedy.to_dict()}
            self._run_program(step)

    def _run_program(self, step: int) -> None:
        """Set the rate an applied remedy prescribes ``step - start`` steps after it began (it
        takes over from any schedule of the training loop, whose step ran before this call)."""
        program = self._program
        factor = Remedy.from_dict(program["remedy"]).rate_factor(max(0, int(step) - program["start"]))
        for group, lr in zip(self.optimizer.param_groups, program["base"]):
            group["lr"] = lr * factor

    def _measure_sharpness(self, step: int, model: nn.Module) -> None:
        try:
            self.sharpness.measure(step, model, self.optimizer)
        except Exception as error:  # tracking must never kill the training run
            if self.log is not None:
                self.log(f"step {step}: sharpness tracking stopped ({type(error).__name__}: {error})")
            self.sharpness = None

    # ------------------------------------------------------------------ measurements
    def _sample_loss(self, model: nn.Module) -> float:
        X, y = self.sample
        modes = [(m, m.training) for m in model.modules()]
        if any(isinstance(m, _RANDOM_LAYERS) for m in model.modules()):
            model.eval()
        try:
            with torch.no_grad():
                return float(self.loss_fn(model(*X) if isinstance(X, (tuple, list)) else model(X), y))
        finally:
            for module, training in modes:
                module.training = training

    def _track(self, step: int, model: nn.Module) -> float:
        """The sample loss now; keeps the initial and the best loss and the best parameters."""
        value = self._sample_loss(model)
        self.tracked.append((int(step), value))
        if self.writer is not None and math.isfinite(value):
            self.writer.add_scalar("monitor/tracked_loss", value, int(step))
        if self.optimizer is not None:
            lr = float(self.optimizer.param_groups[0]["lr"])
            self._peak_lr = lr if self._peak_lr is None else max(self._peak_lr, lr)
            if lr > LR_ZERO * self._peak_lr:
                self._lr_zero_since = None
            elif self._lr_zero_since is None:
                self._lr_zero_since = int(step)
        if not math.isfinite(value):
            return value
        if self._initial is None:
            self._initial = value
        if self._best is None or value < self._best:
            self._best, self._best_step = value, int(step)
            params = _trainable(model)
            if self._best_params is None or len(self._best_params) != len(params):
                self._best_params = [p.detach().clone() for p in params]
            else:
                with torch.no_grad():
                    torch._foreach_copy_(self._best_params, [p.detach() for p in params])
        return value

    def _loss_record(self, value: float | None) -> dict[str, float | None]:
        return {"value": value, "best": self._best, "initial": self._initial}

    def _expected_cost(self, model: nn.Module) -> float:
        """The measured cost of the last diagnosis, or, before the first, an estimate: timed
        products and losses on the sample, times the counts a diagnosis typically makes (dense:
        n/32 batched products; Lanczos at both ends: 40 products; the gradient over all the data;
        16 small gradients for the noise; 45 losses for a saddle's slice and line search)."""
        if self._last_cost is not None:
            return self._last_cost
        if self._estimate is None:
            options = {**CLASSIFY_DEFAULTS, **self.classify_options}
            op = HessianOperator(model, self.loss_fn, self.sample, params=options.get("params"))
            n = op.n_params
            v = torch.randn(n, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64)
            op @ v  # builds the gradient graph the products reuse
            product = _fastest(lambda: op @ v)
            method = options.get("method", "auto")
            if method == "exact" or method == "auto" and n <= int(options.get("dense_threshold", DENSE_THRESHOLD)):
                block = torch.randn(n, 32, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64)
                cost = math.ceil(n / 32) * _fastest(lambda: op @ block)
            else:
                cost = 40 * product
            loss = _fastest(lambda: self._sample_loss(model))
            full = 1.0 if self.full is None else sum(len(b[1]) for b in self.full) / len(self.sample[1])
            cost += (full + 1) * product / 2 + 45 * loss  # gradients (all the data, 16 small ones); a saddle's slice
            self._estimate = cost
        return self._estimate

    def _set_status(self, text: str | None) -> None:
        if self.status is not None:
            self.status(text)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything the monitor's future decisions depend on (for a bit-for-bit resume)."""
        return {
            "count": self._count, "plateau": {"steps": list(self.plateau.steps), "losses": list(self.plateau.losses),
                                              "quiet_above": self.plateau.quiet_above},
            "stalls": [s.to_dict() for s in self.stalls], "tracked": [list(t) for t in self.tracked],
            "spent": self.spent, "train_time": self.train_time,
            "last_cost": self._last_cost, "estimate": self._estimate,
            "pending": None if self._pending is None else list(self._pending),
            "initial": self._initial, "best": self._best, "best_step": self._best_step,
            "best_params": self._best_params, "peak_lr": self._peak_lr, "lr_zero_since": self._lr_zero_since,
            "total_steps": self._total_steps, "v0": self._v0, "diverged": self._diverged,
            "sharpness": None if self.sharpness is None else self.sharpness.state_dict(),
            "program": self._program, "change": None if self._change is None else self._change.to_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self._count = int(state["count"])
        self.plateau.steps = [int(s) for s in state["plateau"]["steps"]]
        self.plateau.losses = [float(x) for x in state["plateau"]["losses"]]
        self.plateau.quiet_above = state["plateau"]["quiet_above"]
        self.stalls = [Stall.from_dict(s) for s in state["stalls"]]
        self.tracked = [(int(step), float(value)) for step, value in state["tracked"]]
        self.spent, self.train_time = float(state["spent"]), float(state["train_time"])
        self._last_cost, self._estimate = state["last_cost"], state["estimate"]
        self._pending = None if state["pending"] is None else (int(state["pending"][0]), int(state["pending"][1]))
        self._initial, self._best, self._best_step = state["initial"], state["best"], state["best_step"]
        self._best_params = state["best_params"]
        self._peak_lr, self._v0, self._diverged = state["peak_lr"], state["v0"], bool(state["diverged"])
        self._lr_zero_since, self._total_steps = state["lr_zero_since"], state["total_steps"]
        if self.sharpness is not None and state.get("sharpness") is not None:
            self.sharpness.load_state_dict(state["sharpness"])
        self._program = state.get("program")
        self._change = Remedy.from_dict(state["change"]) if state.get("change") else None
        self._last_return = None


def _changes_loop(remedy: Remedy) -> bool:
    change = remedy.change
    return change.optimizer is not None or change.noise or change.batch_size is not None


def _fastest(work: Callable[[], Any], repeats: int = 3) -> float:
    """The shortest of ``repeats`` timings of ``work()``: other jobs on the machine only ever add time."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t0)
    return best


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _trainable(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _tuple(values: Any) -> tuple[float, ...]:
    if values is None:
        return ()
    return tuple(float(v) for v in torch.as_tensor(values).flatten().tolist())


def _plain(value: Any) -> Any:
    """Evidence as JSON takes it: non-finite floats become ``None``."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _lowest_direction(point: Any) -> torch.Tensor | None:
    """The eigenvector of the smallest eigenvalue among ``point.eigenpairs`` (``None`` if none)."""
    pairs = getattr(point, "eigenpairs", None)
    if pairs is None or pairs.vectors is None or len(pairs.values) == 0:
        return None
    values = torch.as_tensor(pairs.values)
    index = int(torch.argmin(values))
    return torch.as_tensor(pairs.vectors)[:, index]
