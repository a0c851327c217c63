"""``StallMonitor``: notice when training stops improving, say why, and step out of a saddle.

A monitor is a :class:`~descentlab.engine.Callback`. In any training loop, one line per step::

    monitor = StallMonitor(loss_fn, (X_train, y_train), optimizer=optimizer, batch_size=64)
    for step, (x, y) in enumerate(batches, start=1):
        ...
        optimizer.step()
        monitor.update(step, loss, model)       # the events, for a loop without a LoopState

or with the protocol's events (what :func:`~descentlab.experiments.train.train`, Lightning
and Hugging Face loops call): ``on_train_start(loop)``, ``on_step_end(loop, loss)``,
``on_train_end(loop)``. The pieces:

* **what it watches** — the loss on a fixed, seeded sample of the data, every ``window // 5``
  steps (:class:`~descentlab.critical.diagnoser.Diagnoser`, through the one data layer), never
  the mini-batch losses, whose noise made healthy runs look stalled; while it surely falls by
  more than :data:`SPARSE_ABOVE` ``· rel_tol`` a window
  (:meth:`~descentlab.critical.plateau.PlateauTest.progress`), once a window (no plateau can be near; a
  plateau's horizon is fitted from the last point at or before its start). The mini-batch losses are
  seen every step only for being finite, and the loop's gradient norm for its spikes;
* **when it speaks** — :class:`~descentlab.critical.plateau.PlateauTest` fits the trend of that
  loss and calls a plateau only when its progress per window is confidently below ``rel_tol``
  (optionally, ``grad_tol``: a small gradient of the sample loss is a plateau too); at the third
  tracked loss and at the end of windows 1, 2, 4, 8, ..., where the loss is stuck high, a look
  (one gradient of the tracked samples) names a cause in the network, or diagnoses at once where
  that gradient is exactly 0, or, at the third tracked loss, where the loss has not moved since
  the start (:meth:`~descentlab.critical.plateau.PlateauTest.early_plateau`; the rate not rising,
  the diagnosis fitting the budget then); a rate that has been ~0 for a window is one without waiting for the
  test (no step can move the loss); so is a loss that creeps, stuck high and at its pace still
  there at the run's last step (:meth:`~descentlab.critical.plateau.PlateauTest.ends_above`); a
  non-finite loss is the ``diverged`` verdict, measured at the last good point (the loop is asked
  to stop; with ``apply_remedy`` it is rolled back there instead, at a lower rate);
* **what it says** — the diagnosis (:meth:`Diagnoser.diagnose`): a verdict with its evidence
  and remedy, at a saddle the loss along the escape direction, optionally the remedy trials.
  Each finding is a :class:`~descentlab.critical.stall.Stall` in ``monitor.stalls`` and one
  line on the ``descentlab.monitor`` logger (level WARNING, so Python prints it unless you
  configure logging; the command line prints it above its progress bar);
* **what it does** — :mod:`~descentlab.critical.policy`: at a saddle a step along the most
  negative eigenvector (``escape``), the only change a monitor makes to the model itself; with
  ``apply_remedy`` the trials' winner is *requested* through :attr:`control`, and the loop
  applies it (``monitor.control.apply(loop)``; ``train()`` does);
* **what it costs** — :class:`~descentlab.critical.budget.Budget`: a diagnosis starts only if
  its expected cost fits ``max(budget · training time, budget_seconds)``; a plateau that does
  not fit waits (``status="skipped (budget)"``) and is diagnosed as soon as it fits while the
  loss stays at its level. ``budget=None``: no cap, and every decision is deterministic.

A diagnosis never changes the model, its buffers, its modes or torch's global generator,
unless it applies a remedy (an escape step changes the parameters).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import statistics
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from descentlab.checks import check_int, check_number
from descentlab.critical.budget import SHARPNESS_SHARE, TRACKING_SHARE, Budget, Cadence, prior_size
from descentlab.critical.coverage import Coverage, coverage, snapshot, unmoved
from descentlab.critical.diagnoser import ALARMS, RECENT_CHECKS, Diagnoser
from descentlab.critical.history import RunHistory
from descentlab.critical.layer_signals import copied_units
from descentlab.critical.options import DiagnosisOptions
from descentlab.critical.plateau import BounceScan, PlateauTest, Trend
from descentlab.critical.policy import decide_action
from descentlab.critical.sample import loader_batch_size
from descentlab.critical.remedies import Remedy, rollback
from descentlab.critical.sharpness import SharpnessTracker
from descentlab.critical.stability import current_rate
from descentlab.critical.stall import Stall
from descentlab.critical.verdicts import (ACCUMULATED, ACCUMULATED_GROWTH, EXPLAIN_A_RISE, LASTING, STUCK_HIGH,
                                          SYMMETRIC_SHARE, biased, non_finite_data)
from descentlab.engine.callbacks import Callback, LoopState, Request
from descentlab.monitor_defaults import DEFAULT_BUDGET, DEFAULT_BUDGET_SECONDS, SAMPLE_SIZE
from descentlab.ranks import all_agree, distributed, rank, smallest, summed, unwrap

__all__ = ["StallMonitor", "LOGGER"]

#: The logger the findings go to (one line per stall, and one per stall's remedy trials).
LOGGER = logging.getLogger("descentlab.monitor")
#: The fewest samples the tracked loss reads when the cost cap sizes it.
MIN_TRACKED = 16
#: A diagnosis reads at least this many training batches of the sample: its gradient test takes
#: the sampling noise out by splitting the sample into parts, and on fewer samples that
#: correction is noise itself (a ResNet at a saddle read as a noise floor on 1.5 batches).
DIAGNOSIS_BATCHES = 4
#: The loop's gradient norm grown this many times over the recent checks, with the loss rising,
#: is diagnosed at once (an exploding gradient, before the loss is non-finite).
GROWTH_ALARM = 100.0
#: The tracked loss (on the fixed sample: no batch noise in it) at this many times its best since
#: the last stall, giving back :data:`BOUNCE_GIVEN_BACK` of the fall to that best or more, at
#: :data:`BOUNCE_CHECKS` of the last ``RECENT_CHECKS`` checks, is diagnosed at once: a loss that
#: bounces that far makes no progress whatever its trend says (raw features under SGD: 0.7-6.3 for
#: hundreds of steps, no plateau proven). Healthy runs at the edge of stability spike once, to
#: 1.9-2.7x (README's eos runs); no healthy zoo run reaches 1.5x; a healthy ResNet near a zero
#: loss bounces 0.0098 -> 0.033 (3.4x, but 1 % of its fall from 2.4).
BOUNCE_FACTOR = 3.0
#: See :data:`BOUNCE_FACTOR`.
BOUNCE_GIVEN_BACK = 0.05
#: See :data:`BOUNCE_FACTOR`.
BOUNCE_CHECKS = 3
#: While the tracked loss surely falls by this many ``rel_tol`` per window (3 % at the default), no
#: plateau can be near: it is read once a window, not at every check, until its progress slows.
SPARSE_ABOVE = 30.0
#: The first look for a cause in the network comes at the first check with this many tracked losses
#: (step 20 at the default window, counting the one at the start; 30 where the loop gives no start),
#: on their line: a network that cannot train is remedied with most of the run still ahead.
EARLY_LOOK = 3
#: A noise floor named at an alarm on a loss that surely fell is told where the rise gave back at least
#: this share of the fall (healthy runs' blips on the way down: 1-5 % on a BatchNorm/dropout MLP at batch
#: 16; a spike that a rollback repairs: 13-17 % on a sigmoid CNN swapped to ReLU).
ALARM_GIVEN_BACK = 0.1
#: A noise floor is not told while the schedule lowers the rate to this share of its peak or less.
ENDING_RATE = 0.1
#: A plateau named as the last stall was, with nothing changed since, is a new one only where its loss is
#: below this share of that stall's (else the same place, reached again as the loss drifted).
RETOLD_BELOW = 0.5
#: Copies are looked for while the tracked loss is at most this many times where it began.
COPIES_RISE = 1.1
#: With ``apply_remedy``, a run that diverges is rolled back to its last good point at most this
#: many times (each at a lower rate); the next divergence stops it.
MAX_ROLLBACKS = 3
#: A monitor whose first tracked loss comes after the loop's first steps (no start recorded) takes
#: the run to have begun lower where its batch losses rose by this factor or more over those steps
#: (the median of the last :data:`OPENING_LAST`, not thrown by a spike, against the first, taken at
#: the initial parameters).
OPENING_RISE = 2.0
OPENING_LAST = 5


def _grad_on(event):
    """The monitor's event with gradients on, whatever mode the loop calls it in: inside its
    logging block's ``torch.no_grad()`` the Hessian products had no graph (and were blamed on the
    model), inside ``torch.inference_mode()`` they failed."""
    @functools.wraps(event)
    def with_gradients(self, *args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            return event(self, *args, **kwargs)
    return with_gradients


class StallMonitor(Callback):
    """Plateau test, verdict, remedy trials and saddle escape, for any training loop (see the
    module docstring).

    Args:
        loss_fn: ``loss_fn(output, target)``, a mean over a batch (or a sum: measured, and read
            per batch of ``batch_size``).
        data: the training data: one ``(X, y)`` pair or an iterable of batches; the monitor
            draws its fixed sample from it once (without disturbing torch's global generator).
        optimizer: the run's optimizer, for a loop that calls :meth:`update` (a loop with a
            :class:`~descentlab.engine.LoopState` passes its own): its rate and state give the
            rate verdicts; ``None``: not tested.
        batch_size: the training batch size (likewise): the noise floor is tested when it is
            smaller than the data, and a loss that sums over its batch is read as a batch of
            this size sums it; ``None``: the batch size of ``data`` where it is a ``DataLoader``,
            else not known (no noise floor tested).
        total_steps: the steps the run will take (likewise): a loss that creeps so slowly it would
            end the run where it is is diagnosed as a plateau, and a schedule's end is read against
            it; ``None``: not known.
        window: steps per window of the plateau test (>= 1).
        rel_tol: relative progress per window below which the loss is on a plateau.
        grad_tol: a gradient norm of the sample loss (measured every ``window`` steps) below
            this is a plateau too; ``None``: off.
        budget, budget_seconds: the most the monitor may spend: ``budget`` × training time, or
            ``budget_seconds`` in all, whichever is more; ``budget=None``: no cap.
        max_stalls: stop looking after this many stalls (``None``: never).
        sample_size: samples in the fixed sample (``None``: all of ``data``).
        track_sharpness: measure the sharpness against the optimizer's stability threshold every
            this many steps (:class:`~descentlab.critical.sharpness.SharpnessTracker`, on the
            fixed sample; ``None``: off). Its points are ``monitor.sharpness.points``.
        track_min: with ``track_sharpness``, also track λ_min.
        sharpness_samples: with ``track_sharpness``, the samples of the fixed sample every
            estimate reads (``None``: as many as the tracked loss reads under a budget, all of it
            without one). Fixed for the run; a smaller sample's sharpness is larger
            (:mod:`descentlab.critical.sharpness`, "Which samples"), a larger one's estimates
            cost more and the budget spreads them out.
        seed: seeds the sample, Lanczos, the probes, the noise measurement and the trials.
        options: what a diagnosis measures and does (:class:`DiagnosisOptions`).
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (anything with ``add_scalar`` and
            ``add_text``): the tracked loss as ``monitor/tracked_loss``, and per stall its loss,
            extreme eigenvalues and gradient norm (``stall/...``) and its verdict as text.
        **option_fields: any field of :class:`DiagnosisOptions` (``escape``, ``max_step``,
            ``remedies``, ``trial_steps``, ``apply_remedy``, ...) over ``options``.
    """

    def __init__(
        self,
        loss_fn: Any,
        data: Any,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        batch_size: int | None = None,
        total_steps: int | None = None,
        window: int = 50,
        rel_tol: float = 1e-3,
        grad_tol: float | None = None,
        budget: float | None = DEFAULT_BUDGET,
        budget_seconds: float = DEFAULT_BUDGET_SECONDS,
        max_stalls: int | None = None,
        sample_size: int | None = SAMPLE_SIZE,
        track_sharpness: int | None = None,
        track_min: bool = False,
        sharpness_samples: int | None = None,
        seed: int = 0,
        options: DiagnosisOptions | None = None,
        writer: Any = None,
        **option_fields: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(option_fields) - set(DiagnosisOptions.names()))
        if unknown:
            raise TypeError(f"StallMonitor got unexpected keyword arguments {', '.join(unknown)} (options: "
                            f"{', '.join(DiagnosisOptions.names())})")
        options = replace(options or DiagnosisOptions(), **option_fields)
        check_int("window", window)
        if total_steps is not None:
            check_int("total_steps", total_steps)
        check_number("rel_tol", rel_tol)
        if grad_tol is not None:
            check_number("grad_tol", grad_tol, low=0.0, low_open=True)
        if max_stalls is not None:
            check_int("max_stalls", max_stalls, low=0)
        if sample_size is not None:
            check_int("sample_size", sample_size, low=2)
        if batch_size is not None:
            check_int("batch_size", batch_size)
        if track_sharpness is not None:
            check_int("track_sharpness", track_sharpness)
        if sharpness_samples is not None:
            check_int("sharpness_samples", sharpness_samples, low=2)
            if not track_sharpness:
                raise ValueError("sharpness_samples needs track_sharpness (the steps between two estimates)")
        check_int("seed", seed, low=0)
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
        self.loss_fn = loss_fn
        self.options = options
        self.window = int(window)
        self.every = max(1, window // 5)
        self.grad_tol = grad_tol
        self.max_stalls = max_stalls
        self.seed = int(seed)
        self.writer = writer
        self.diagnoser = Diagnoser(loss_fn, data, sample_size=sample_size, options=options, seed=seed)
        self.budget = Budget(budget, budget_seconds)
        self.plateau = PlateauTest(window, self.every, float(rel_tol))
        self.history = RunHistory()
        self.stalls: list[Stall] = []
        self.sharpness = (SharpnessTracker(loss_fn, self.diagnoser.sample_data, every=track_sharpness,
                                           track_min=track_min, seed=seed, size=sharpness_samples,
                                           share=None if budget is None else SHARPNESS_SHARE * budget,
                                           allowance=SHARPNESS_SHARE * budget_seconds)
                          if track_sharpness else None)
        self._sharpness_samples_given = sharpness_samples is not None
        self.tracking: Cadence | None = None  # the tracked loss's samples and interval (sized at the first event)
        self._trained_at: dict[str, float | None] = {"check": 0.0, "sharpness": None}  # train_time then
        self._track_seconds = 0.0  # what the last tracked loss took
        self.loop: LoopState | None = None
        self._optimizer, self._total_steps = optimizer, total_steps
        self._batch_size = batch_size if batch_size is not None else loader_batch_size(data)
        self.history.attached_at(self._lr())
        self._count = 0  # steps seen (a loop that calls every k steps advances it by k)
        self._before = 0  # ... before the latest call
        self._seen: int | None = None  # the step of the latest call
        self._pending: tuple[int, int] | None = None  # (index in stalls, step) of a plateau waiting for budget
        self._after_track = False  # the next step reads the weights' norms and sums (RunHistory.observe_after)
        self._pending_trend: Trend | None = None  # ... and its trend (not saved: a loaded run tests afresh)
        self._diverged = False
        self._rollbacks = 0  # divergences rolled back (apply_remedy)
        self._unapplied_warned = False
        self._negative_warned = False  # a tracked loss below zero was warned about
        #: the quiet level of a `slow` left untold while the rate rose: quiet only while it rises
        self._warm_up_quiet: float | None = None
        self._alarmed_at: int | None = None  # the step of the last gradient-growth or bounce alarm
        self._stale_at: int | None = None  # the step the loop's gradient was last held against the loss's
        self._batches_ratio: float | None = None  # the batches' record's ratio when it last asked for a diagnosis
        self._as_trained: tuple[float | None] | None = None  # this check's loss_as_trained, once read
        self._initial_as_trained: float | None = None  # ... at the first tracked loss (batch-norm trained)
        self._opening: list[float] | None = []  # the batch losses before the first tracked loss
        self._bounce_scan: BounceScan | None = None  # the tracked losses since the last stall, read once each
        # what the steps since the last check passed, kept on the device and folded every
        # ``every`` steps (a step only appends: the per-step cost of a small model's loop is Python's)
        self._losses_seen: list[tuple[int, torch.Tensor]] = []  # (step, the loss's sum on its device)
        self._bad_folds: list[tuple[torch.Tensor, tuple[int, ...]]] = []  # (the losses stacked, their steps)
        self._float_bad: int | None = None  # ... and of the losses given as Python numbers
        self._batch_sum, self._batch_count = 0.0, 0  # the finite batch losses read since the last check
        self._coverage_read = False  # parameters not reached: told at the first check
        # parameters the optimizer does not hold, and their copies: told at the next check where unmoved
        self._unheld: tuple[Coverage, dict[str, torch.Tensor]] | None = None
        self._params: tuple[Any, list[torch.Tensor]] = (None, [])  # the parameters stepped, listed once
        self._shapes: list[tuple[str, tuple[int, ...]]] | None = None  # the model's parameters at the last check
        self._counted = False  # update's steps did not increase: its calls are counted as the steps instead
        self._sparse = False  # the loss falls fast: the tracked loss is read once a window
        self._read_at: int | None = None  # the step of the last tracked loss
        self._paced_at: int | None = None  # ... and of the last one paced
        self._grads_seen: list[list[torch.Tensor]] = []  # each step's norms of the gradients, per parameter
        self._grad_low: torch.Tensor | None = None  # the loop's gradient norm, smallest and
        self._grad_high: torch.Tensor | None = None  # largest folded since the last check

    # ------------------------------------------------------------------ what the loop has
    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer the loop steps now (the constructor's where the loop says none)."""
        return self.loop.optimizer if self.loop is not None and self.loop.optimizer is not None else self._optimizer

    @property
    def batch_size(self) -> int | None:
        """The loop's batch size now (the constructor's where the loop says none)."""
        return self.loop.batch_size if self.loop is not None and self.loop.batch_size is not None else self._batch_size

    @property
    def sample(self) -> tuple[Any, torch.Tensor]:
        """The fixed sample ``(X, y)`` the monitor measures on."""
        return self.diagnoser.sample

    @property
    def tracked(self) -> list[tuple[int, float]]:
        """``(step, loss on the sample)`` at every check that read it."""
        return self.history.tracked

    @property
    def spent(self) -> float:
        """Seconds inside the monitor (its tracking, sharpness and diagnoses)."""
        return self.budget.spent

    @property
    def train_time(self) -> float:
        """Seconds between the monitor's calls: the training."""
        return self.budget.train_time

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        """The columns the monitor adds to a loop's metrics (the sharpness tracker's)."""
        return self.sharpness.columns if self.sharpness is not None else ()

    def metrics(self, step: int) -> dict[str, float | None]:
        """Those columns' values at ``step`` (empty where nothing was measured)."""
        return self.sharpness.row(step) if self.sharpness is not None else {}

    # ------------------------------------------------------------------ events
    @_grad_on
    def on_train_start(self, loop: LoopState) -> None:
        """Adopt the loop's objects; at step 0 record the initial loss and parameters (the first
        good point, where a run that diverges at once is diagnosed)."""
        self.loop = loop
        if self.history.initial is None:
            self.history.attached_at(self._lr())
        self.budget.restart()
        with self.budget.monitoring():  # the sizing's forward passes are the monitor's time too
            self._size_routine()
        if self.history.initial is None:
            with self.budget.monitoring(), as_written(loop.model):
                self.plateau.add(loop.step, self._track(loop.step, unwrap(loop.model)))
                if self.sharpness is not None and self.sharpness.due(loop.step, self.optimizer):
                    self._measure_sharpness(loop.step, unwrap(loop.model))

    @_grad_on
    def on_step_end(self, loop: LoopState, loss: torch.Tensor | float | None) -> None:
        """After optimizer step ``loop.step``: the checks that are due (see the module docstring)."""
        self.loop = loop
        with self.budget.monitoring():
            if self.tracking is None:
                self._size_routine()
            self._warn_if_unapplied(loop)
            self._note_loss(loop.step, loss)
            if self._float_bad is not None and not distributed():  # read already: acted on at once
                with as_written(loop.model):
                    if self._went_non_finite(loop):
                        return
            self._note_gradient(loop.model, loop.optimizer)
            if self._after_track:  # the first step after a tracked loss: did the weights move past it?
                self._after_track = False
                self.history.observe_after(unwrap(loop.model))
            if self.sharpness is not None and self.sharpness.due(loop.step, self.optimizer):
                with as_written(loop.model):
                    self._measure_sharpness(loop.step, unwrap(loop.model))
            if self._done():
                return
            advanced = 1 if self._seen is None else max(1, int(loop.step) - self._seen)
            self._seen, self._before, self._count = int(loop.step), self._count, self._count + advanced
            if self._crossed(self.every):
                with as_written(loop.model):
                    if self._went_non_finite(loop):
                        return
                    self._check(loop)
                    self._pace()

    @_grad_on
    def on_train_end(self, loop: LoopState) -> None:
        """A non-finite loss the last steps passed (a loop stops at once on one) is diagnosed now."""
        self.loop = loop
        with self.budget.monitoring(), as_written(loop.model):
            self._went_non_finite(loop)

    def _note_loss(self, step: int, loss: torch.Tensor | float | None) -> None:
        """Keep a loss tensor's finiteness on its device (no wait for it: a loop on a GPU is not
        synchronised every step); :meth:`_went_non_finite` reads it at the checks, agreed over the
        ranks. A number, or one on the CPU, is read at once."""
        if loss is None:
            return
        if not torch.is_tensor(loss) or (loss.device.type == "cpu" and loss.numel() == 1):
            # nothing to wait for: read now and acted on at once (under torch.distributed at the next
            # check, so every rank decides at the same step), so a loop that breaks at it is told too
            value = float(loss)
            if self._float_bad is None and not math.isfinite(value):
                self._float_bad = int(step)
            self._add_batch_losses([value])
            return
        loss = loss.detach()  # a loss of several numbers by its sum: non-finite when any of them is
        self._losses_seen.append((int(step), loss if loss.dim() == 0 else loss.sum()))
        if len(self._losses_seen) >= self.every:
            self._fold_losses()

    def _fold_losses(self) -> None:
        """The losses appended since the last fold stacked into one tensor on their device (one
        kernel; nothing waits: read at the next check)."""
        if not self._losses_seen:
            return
        steps, values = zip(*self._losses_seen)
        self._losses_seen.clear()
        self._bad_folds.append((torch.stack(_alike(values)), steps))
        if len(self._bad_folds) > _MAX_FOLDS:  # no check reads them (the monitor is done): keep the first bad
            first = self._first_bad_step()
            if first < _NO_STEP:
                self._float_bad = first if self._float_bad is None else min(self._float_bad, first)

    def _first_bad_step(self) -> int:
        """The first non-finite step of the folds (one read of the device: the losses themselves,
        a few numbers a check), or :data:`_NO_STEP`."""
        folds, self._bad_folds = self._bad_folds, []
        if not folds:
            return _NO_STEP
        stacked = [values for values, _ in folds]
        values = torch.cat(_alike(stacked)) if len(stacked) > 1 else stacked[0]
        steps = [step for _, fold in folds for step in fold]
        read = values.tolist()
        self._add_batch_losses(read)
        return next((step for step, value in zip(steps, read) if not math.isfinite(value)), _NO_STEP)

    def _add_batch_losses(self, values: list[float]) -> None:
        """The loop's batch losses since the last check, summed (finite ones) for their mean there."""
        finite = [v for v in values if math.isfinite(v)]
        if self._opening is not None:
            self._opening.extend(finite)
        self._batch_sum += sum(finite)
        self._batch_count += len(finite)

    def _note_gradient(self, model: nn.Module, optimizer: Any = None) -> None:
        """The norm of the gradients the loop gave its optimizer (``.grad`` of its parameters,
        still there after the step; where a remedy's wrapper forgot them or added noise into them,
        the norms it kept before; without an optimizer, the model's), its smallest and largest since the
        last check kept on the device: a spike between two checks is seen, and nothing waits for
        the device. A parameter the optimizer does not step is not in it: its ``.grad``, never
        zeroed by the optimizer's ``zero_grad``, adds up without ever being stepped with."""
        owner = model if optimizer is None else optimizer
        if self._params[0] is not owner:
            self._params = (owner, list(model.parameters()) if optimizer is None else
                            [p for group in optimizer.param_groups for p in group["params"]])
        norms = _kept_norms(optimizer)
        if norms is None:
            grads = [p.grad for p in self._params[1] if p.grad is not None]
            norms = _grad_norms(grads) if grads else None
        if not norms:
            return
        self._grads_seen.append(norms)  # stacked at the fold, all steps at once
        if len(self._grads_seen) >= self.every:
            self._fold_gradients()

    def _fold_gradients(self) -> None:
        """The gradient norms appended since the last fold into the smallest and largest."""
        if not self._grads_seen:
            return
        if len({len(parts) for parts in self._grads_seen}) == 1:
            every = torch.stack([norm for parts in self._grads_seen for norm in parts])
            norms = torch.linalg.vector_norm(every.view(len(self._grads_seen), -1), dim=1)
        else:  # parameters without a gradient on some steps
            norms = torch.stack([torch.linalg.vector_norm(torch.stack(parts)) for parts in self._grads_seen])
        self._grads_seen.clear()
        low, high = norms.min(), norms.max()
        if self._grad_low is None:
            self._grad_low, self._grad_high = low, high
        else:
            self._grad_low, self._grad_high = torch.minimum(self._grad_low, low), torch.maximum(self._grad_high, high)

    def _went_non_finite(self, loop: LoopState) -> bool:
        """Whether a loss passed since the last check was non-finite (one read of the device flag);
        if so the ``diverged`` verdict, at the step it first was."""
        if self._diverged:
            return False
        self._fold_losses()
        local = min(self._first_bad_step(), _NO_STEP if self._float_bad is None else self._float_bad)
        self._float_bad = None
        first = smallest(local if local < _NO_STEP else math.inf)  # every rank stops at the first bad step of any
        if not math.isfinite(first):
            return False
        first = int(first)
        step, loop.step = loop.step, first
        try:
            self._non_finite(loop)
        finally:
            loop.step = step
        return True

    def update(self, step: int, loss: torch.Tensor | float | None, model: nn.Module) -> Stall | None:
        """:meth:`on_step_end` for a loop without a :class:`~descentlab.engine.LoopState`: step
        ``step``, its mini-batch ``loss`` (only checked for being finite) and the model (the
        optimizer and batch size are the constructor's). Returns the new (or newly diagnosed)
        :class:`Stall`, else ``None``. (The first call comes after a step: the start is not
        recorded; call :meth:`on_train_start` before the first step for that.)"""
        if self.loop is None:
            self.loop = LoopState(model, self._optimizer, batch_size=self._batch_size, n_train=self.diagnoser.n_data,
                                  total_steps=self._total_steps)
        elif self._counted or int(step) <= self.loop.step:  # an epoch or a batch index passed as the step
            if not self._counted:
                warnings.warn(f"update's step went from {self.loop.step} to {int(step)}: pass the count of optimizer "
                              "steps (1, 2, 3, ...), not the epoch or the batch index, and call it once per optimizer "
                              "step under gradient accumulation; the monitor counts its calls as the steps from here",
                              stacklevel=2)
                self._counted = True
            step = self.loop.step + 1
        self.loop.model, self.loop.step = model, int(step)
        before = (len(self.stalls), self.stalls[-1] if self.stalls else None)
        self.on_step_end(self.loop, loss)
        after = (len(self.stalls), self.stalls[-1] if self.stalls else None)
        return after[1] if after != before else None

    # ------------------------------------------------------------------ checks
    def _done(self) -> bool:
        return (self._diverged or self.max_stalls is not None and len(self.stalls) >= self.max_stalls
                and self._pending is None)

    def _check(self, loop: LoopState) -> None:
        step, model = loop.step, unwrap(loop.model)
        self._params = (None, [])  # listed again at the next step: a remedy may have changed the modules
        self._as_trained = None  # read again at this check, where a look asks for it
        self._model_changed(step, model)
        if self._unheld is not None:  # what no other optimizer stepped since the first check
            found, before = self._unheld
            still = unmoved(found, model, before)
            for note in still.notes():
                _say("step %d: %s", step, note)
            if still.not_held < found.not_held:
                self.history.stepped_elsewhere = (found.not_held - still.not_held) / found.trainable
            self._unheld = None
        if not self._coverage_read and self.optimizer is not None:  # once: no plateau shows these
            self._coverage_read = True
            found = coverage(self.optimizer, model)
            for note in replace(found, not_held=0, not_held_names=()).notes():
                _say("step %d: %s", step, note)
            self._unheld = (found, snapshot(found, model)) if found.not_held else None
        self._fold_gradients()
        if self._grad_low is not None:  # the loop's own gradients since the last check (read now: one wait)
            self.history.observe_gradient(step, float(self._grad_low), float(self._grad_high))
            self._grad_low = self._grad_high = None
        self._track_seconds = 0.0
        if self._sparse and not self._crossed(self.window) and all_agree(not self._gradient_grew(step)):
            self.history.observe_rate(step, self._lr())
            return  # the loss falls fast: read once a window
        tracked = self._track(step, model)
        if not math.isfinite(tracked):
            self._non_finite(loop)
            return
        # the batches' loss against the data's (every rank's batches: the tracked loss is the whole data's)
        batch_sum, batch_count = summed(torch.tensor([self._batch_sum, float(self._batch_count)],
                                                     dtype=torch.float64)).tolist()
        self._batch_sum, self._batch_count = 0.0, 0
        if batch_count:
            size = loop.batch_size or self._batch_size
            self.history.observe_batches(step, batch_sum / batch_count, tracked,
                                         int(batch_count * size) if size else None)
        quiet = self._warm_up_quiet
        if quiet is not None and (self.plateau.quiet_above != quiet or self._warm_up_over(step)):
            self._warm_up_quiet = None  # the loss left that level, or another stall set its own
            if self.plateau.quiet_above == quiet:
                # the warm-up that excused the plateau is over: a loss still there is told at the rate it reached
                self.plateau.quiet_above = None
                self.plateau.reset()
        trend = self.plateau.add(step, tracked)
        progress = self.plateau.progress()
        # with sharpness tracked, the loss at every check is the curve shown against it (its rises at
        # the edge of stability), and costs little beside the estimates
        self._sparse = (self.sharpness is None and progress is not None
                        and progress >= SPARSE_ABOVE * self.plateau.rel_tol)
        reason = "loss"
        if trend is None and self.grad_tol is not None and self._crossed(self.window):
            if self.diagnoser.sample_gradient_norm(model) < self.grad_tol:
                trend, reason = _at_once(tracked), "grad"
        bounce = None
        if trend is None and self._pending is None and self._growing(step, tracked):
            trend, reason = _at_once(tracked), "growth"
            self._alarmed_at = step
        elif trend is None and self._pending is None and all_agree((bounce := self._bouncing(step)) is not None):
            trend, reason = _at_once(tracked), "bounce"
            self._alarmed_at = step
        else:
            bounce = None  # seen on some ranks only: no alarm on any
        if trend is None and self._pending is None and all_agree(self._stale_gradient(step, model)):
            trend, reason = _at_once(tracked), "stale"
        if trend is None and self._pending is None and all_agree(self._batches_astray(model, tracked)):
            trend, reason = _at_once(tracked), "batches"
        since = self.history.lr_zero_since
        if trend is None and self._pending is None and self.plateau.quiet_above is None and since is not None \
                and step - since >= self.window:  # a rate of ~0 for a window: no step can move the loss
            trend = Trend(step - since, 1, tracked, tracked, 0.0, 0.0, 0.0)
        if trend is None and self._network_suspect(tracked, progress, model) and \
                all_agree(self.budget.allows(self.diagnoser.look_cost())):
            cause, gradient_norm = self.diagnoser.look(model, self.history, tracked, optimizer=self.optimizer)
            if all_agree(cause is not None):
                trend, reason = _at_once(tracked), "network"
            elif gradient_norm == 0.0:  # exactly: no gradient step can move the loss (one number on every rank)
                trend, reason = _at_once(tracked), "grad"
            elif self._count < self.window and all_agree((flat := self._flat_start()) is not None
                                                         and self.budget.allows(self.diagnoser.expected_cost(model))):
                trend = flat  # a plateau from the first step, diagnosed as one now if that fits the budget
                # (else the plateau test finds it two windows on: one look is not a plateau to wait on)
        floor_look = trend is None and self._floor_suspect(tracked, progress, model)
        if floor_look:
            trend, reason = _at_once(tracked), "network"
        if trend is None and self._copies_suspect(tracked, model):
            trend, reason = _at_once(tracked), "copies"
        if trend is None and self._samples_mixed(tracked, model):
            trend, reason = _at_once(tracked), "mixing"
        # a window's end is the same check on every rank: no collective between them
        if trend is None and self._crossed(self.window) and all_agree((creep := self._creep(loop)) is not None):
            trend, reason = creep, "creep"
        if trend is None and self._pending is not None and (held := self._still_waiting(tracked)) is not None:
            trend, reason = held  # the plateau waiting for the budget: the loss has not left it
        if trend is None:
            self._pending = None  # a plateau that waited for the budget has ended undiagnosed
            return
        started = self.budget.clock()
        # a look, not a plateau: the causes that need no Hessian
        network = reason in ("network", "stale", "batches", "mixing")
        self._size_diagnosis(model, started, hessian=not network)
        if self._pending is not None and not all_agree(self.budget.allows(
                self._retry_cost(model, self.stalls[self._pending[0]]), started)):
            return  # the plateau still waits for the budget (for the stage it stopped before)
        first_step = self._pending[1] if self._pending is not None else step
        loop.show(f"diagnosing stall {len(self.stalls) + 1}…")
        try:
            stall = self.diagnoser.diagnose(
                model, self.history, optimizer=self.optimizer, batch_size=self.batch_size, n_data=loop.n_train,
                total_steps=loop.total_steps, step=first_step, reason=reason, trend=trend, at=step,
                step_seconds=self._step_seconds(), trials_fit=lambda expected: all_agree(self.budget.allows(expected)),
                afford=lambda products: not network and (self.budget.fraction is None or all_agree(
                    self.budget.allows(self.diagnoser.expected_cost(model, products=products), started))))
            if network and stall.status != "diagnosed":
                return  # the diagnosis, on its own samples, saw no cause in the network: no stall
            if floor_look and stall.verdict != "bounded_outputs":
                return  # a loss below half its start is looked at for its outputs' floor alone
            told = self._told_already(stall, reason)
            if told or self._not_a_stall(stall, reason, step):
                if reason not in ALARMS:
                    self.plateau.rearm(trend)  # quiet until the loss leaves this level
                    excused = stall.verdict == "slow" and not told  # left untold for a rising rate
                    self._warm_up_quiet = self.plateau.quiet_above if excused else None
                return
            if bounce is not None:
                stall = replace(stall, evidence={**stall.evidence, "bounce": bounce})
            stall = self.respond(stall, model)
            if stall.remedy_applied == "shuffle":
                self.history.batch_losses.clear()  # the ratio measured again on the shuffled batches
                self._batches_ratio = None
        finally:
            loop.show(None)
        if stall.status == "skipped (budget)":
            stall = replace(stall, evidence={**stall.evidence, "expected_seconds": self._retry_cost(model, stall)})
            if self._pending is None:
                self.stalls.append(stall)
                self._pending, self._pending_trend = (len(self.stalls) - 1, step), trend
                self._report(stall)
            else:  # waiting again, maybe for another stage
                self.stalls[self._pending[0]] = stall
            return
        if self._pending is not None:
            self.stalls[self._pending[0]] = stall
            self._pending = None
        else:
            self.stalls.append(stall)
        if stall.escaped or stall.remedy_applied not in (None, "keep"):
            self.plateau.reset()  # the model (or how it is trained) changed: a fresh history
        elif reason not in ALARMS:
            self.plateau.rearm(trend)  # one plateau, one verdict: quiet until the loss leaves it
        self._report(stall)

    def _model_changed(self, step: int, model: nn.Module) -> None:
        """The model's parameters are others than at the last check (the loop passed another model,
        or grew or cut this one): told, and what the monitor remembered of the old one forgotten
        (its losses, best point and gradients are not the new one's), so nothing is read against
        them. Which of them train (a layer frozen) is no change."""
        shapes = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
        before, self._shapes = self._shapes, shapes
        if before is None or before == shapes:
            return
        _say("step %d: the model's parameters changed (%s entries in %d tensors, %s in %d before): the monitor's "
             "record of the run starts afresh", step, f"{_entries(shapes):,}", len(shapes), f"{_entries(before):,}",
             len(before))
        self.history.restart(step)
        self.plateau.reset()
        self.diagnoser.forget_model()
        self._pending = self._alarmed_at = self._stale_at = self._batches_ratio = self._bounce_scan = None
        self._grads_seen.clear()
        self._grad_low = self._grad_high = None
        self._batch_sum, self._batch_count = 0.0, 0
        self._unheld, self._coverage_read = None, False  # the new parameters' coverage is told afresh

    def _still_waiting(self, tracked: float) -> tuple[Trend, str] | None:
        """The trend and reason of the plateau waiting for the budget while the tracked loss has
        not left it (not below its level by 1 % and by three times its jitter), where the plateau
        test no longer finds it at this check; else ``None``. A loss ringing at a rate far too
        high passes the test at some checks and not at others: without this, the waiting plateau
        of ``bench/scale.py``'s transformer ended at the first check that missed it, undiagnosed."""
        trend = self._pending_trend
        if trend is None:
            return None
        margin = max(0.01 * abs(trend.level), 3.0 * trend.noise)
        return (trend, self.stalls[self._pending[0]].reason) if tracked >= trend.level - margin else None

    def _retry_cost(self, model: nn.Module, waiting: Stall) -> float:
        """Seconds the diagnosis of a plateau that waited for the budget is expected to take when
        tried again: the stages it got through before (as long as they took, ``waiting.seconds``:
        a retry starts from the gradient again) and the products of the stage it stopped before.
        Without the first, the 1M-parameter transformer of ``bench/scale.py`` was tried again as
        soon as its products fitted and stopped before them again, 1.1 s spent each time."""
        products = self.diagnoser.expected_cost(model, products=(waiting.evidence or {}).get("waits_for_products"))
        return waiting.seconds + products

    def _told_already(self, stall: Stall, reason: str) -> bool:
        """The last stall named the same lasting cause (a rate of ~0, a loop summing its
        gradients, a cause in the network) and nothing changed the run since (no escape, no
        remedy): a look or a plateau that finds it again, as the stuck loss drifts, is no new
        stall (a cause at a lecture's point, a saddle, is one at each plateau). Nor is an alarm
        (the gradient grew, the loss bounced) that names what the last stall named: a noise floor
        bounces, a rate past its limit throws the loss up, again and again; nor a plateau that
        does, above :data:`RETOLD_BELOW` of the last stall's loss (batch-1 SGD on the moons, left
        alone, crept 0.28 -> 0.25 through five noise floors). A loop told it sums
        its gradients is told nothing more while it still does: that explains any later plateau,
        even where the weights it threw far off make a fresh gradient as large as the sum."""
        last = self.stalls[-1] if self.stalls else None
        if last is None or self._pending is not None or last.escaped or last.remedy_applied not in (None, "keep"):
            return False  # (a waiting plateau's retry: the last stall is that plateau, untold)
        return last.verdict == "accumulating_gradient" or last.verdict == stall.verdict and (
            stall.verdict in LASTING or reason in ALARMS or stall.loss > RETOLD_BELOW * last.loss)

    def _not_a_stall(self, stall: Stall, reason: str, step: int) -> bool:
        """A verdict the run contradicts, left untold. After an alarm (the gradient grew, the loss
        bounced): a verdict that says where a loss stops, not why it rose (a saddle, a slow pace:
        outside :data:`~descentlab.critical.verdicts.EXPLAIN_A_RISE` and the noise floor); and a
        noise floor where the loss surely fell until then (or too few points say) and the rise gave
        back under :data:`ALARM_GIVEN_BACK` of that fall: a healthy run's noisy batches throw its
        loss up now and then on the way down. And ``slow`` while the rate rose within the last
        window: its remedy, a higher rate, is what the schedule is doing (a one-cycle warm-up); a
        noise floor while it fell within the window to :data:`ENDING_RATE` of its peak or less: the
        schedule is ending the run the way its remedy would (a cosine's tail). A rate still rising past
        half the run (:meth:`_long_warm_up`) is no such warm-up: ``slow`` is told there."""
        if stall.status != "diagnosed":
            return False
        if reason in ALARMS and stall.verdict not in EXPLAIN_A_RISE:
            if stall.verdict != "noise_floor":
                return True
            fell = self.plateau.fell_before_last()
            return fell is None or (fell and self._given_back() < ALARM_GIVEN_BACK)
        history, lr = self.history, self._lr()
        if stall.verdict == "noise_floor" and history.fell_at is not None and step - history.fell_at < self.window:
            return lr is not None and history.peak_lr is not None and lr <= ENDING_RATE * history.peak_lr
        return (stall.verdict == "slow" and history.rose_at is not None and step - history.rose_at < self.window
                and not self._long_warm_up(step))

    def _given_back(self) -> float:
        """The share of its fall (first tracked loss to the best) the latest tracked loss gave back."""
        history = self.history
        fall = (history.initial or 0.0) - (history.best or 0.0)
        return (history.tracked[-1][1] - history.best) / fall if fall > 0 else math.inf

    def _growing(self, step: int, tracked: float) -> bool:
        """The loop's gradient grew :data:`GROWTH_ALARM` times over the recent checks while the
        tracked loss rose above its best: an exploding gradient is diagnosed before the loss is
        non-finite, without waiting for a plateau (once per :data:`RECENT_CHECKS` checks). The
        largest norm since the last check is compared with the smallest before: an explosion
        through time in a recurrent net shows as spikes (its smallest norms need not grow)."""
        if not self._gradient_grew(step):
            return False
        best = self.history.best
        # risen by a tenth of its best and by a hundredth of the initial loss: near a zero loss a
        # tenth of the best is noise (a healthy ResNet at loss 0.0022 "rose" to 0.0025)
        rise = 0.1 * max(abs(best), 0.1 * abs(self.history.initial)) if best is not None and \
            self.history.initial is not None else 0.1 * abs(best or 0.0)
        return best is not None and tracked > best + rise

    def _bouncing(self, step: int) -> dict[str, Any] | None:
        """The tracked loss at :data:`BOUNCE_FACTOR` times its best since the last stall (before
        it, a remedy may have changed the model), giving back :data:`BOUNCE_GIVEN_BACK` of its
        fall to that best, at :data:`BOUNCE_CHECKS` of the last ``RECENT_CHECKS`` checks, and no
        alarm in the last ``RECENT_CHECKS`` checks: what was seen (``None``: not bouncing)."""
        if self._alarmed_recently(step):
            return None
        since = max(self.stalls[-1].step if self.stalls else -1, self.history.restarted_at or -1)
        scan = self._bounce_scan
        if scan is None or scan.since != since or scan.read_upto > len(self.tracked):  # a new stall, a loaded run
            scan = self._bounce_scan = BounceScan(since, BOUNCE_FACTOR, BOUNCE_GIVEN_BACK, RECENT_CHECKS)
        scan.read(self.tracked)
        high = [ratio for ratio in scan.ratios if ratio > 0]
        if len(high) < BOUNCE_CHECKS:
            return None
        return {"checks": len(high), "of": len(scan.ratios), "factor": max(high), "best": scan.best}

    def _alarmed_recently(self, step: int) -> bool:
        """An alarm (gradient growth, a bounce) in the last ``RECENT_CHECKS`` checks: once is enough."""
        return self._alarmed_at is not None and step - self._alarmed_at < RECENT_CHECKS * self.every

    def _stale_gradient(self, step: int, model: nn.Module) -> bool:
        """The loop's smallest gradient since the last check is
        :data:`~descentlab.critical.verdicts.ACCUMULATED_GROWTH` times the smallest of the first
        check and :data:`~descentlab.critical.verdicts.ACCUMULATED` times the gradient of the loss
        on the tracked samples now (that gradient taken once per ``RECENT_CHECKS`` checks at
        most): a loop that sums its gradients over the steps (no ``zero_grad``) steps ever longer
        whatever the loss does, and is told at once. The diagnosis decides, against the norm of a
        fresh *batch* gradient with its noise."""
        norms = self.history.grad_norms
        low = norms[-1][1] if norms else math.nan
        waited = self._stale_at is None or step - self._stale_at >= RECENT_CHECKS * self.every
        grown = len(norms) >= 2 and norms[0][1] > 0 and waited and math.isfinite(low) \
            and low >= ACCUMULATED_GROWTH * norms[0][1]
        # agreed before the gradient, which every rank then takes together; within the budget, as a
        # look is (a healthy run's gradient can grow 10x: it then pays for one now and then)
        if not all_agree(grown and self.budget.allows(self.diagnoser.look_cost())):
            return False
        self._stale_at = step
        return low >= ACCUMULATED * self.diagnoser.sample_gradient_norm(model)

    def _batches_astray(self, model: nn.Module, tracked: float) -> bool:
        """The loop's batch losses have fallen to :data:`~descentlab.critical.verdicts.BATCH_RATIO`
        of their first ratio to the tracked loss, which is still up (the history's record: no
        computation), and, for a model that trains batch-norm, still do beside the tracked samples'
        loss on the batch's statistics (one forward pass,
        :meth:`~descentlab.critical.diagnoser.Diagnoser.batches_confirmed`: batch-norm's running
        statistics lag its batches' early on, for a whole run at times; the diagnosis it would ask
        for cost the healthy ResNet of ``bench/scale.py`` 0.5 s to decline): a loop fitting batches
        that are not the data is named when it shows, not at a plateau two windows later. Told
        once: not while the last stall named them; asked again only once the ratio has halved
        since it last asked."""
        if self.stalls and self.stalls[-1].verdict == "biased_batches":
            return False
        record = self.history.batch_record()
        astray = biased({"batches": record, "loss": self.history.loss_record(tracked)})
        if not astray or self._batches_ratio is not None and record["ratio"] > 0.5 * self._batches_ratio:
            return False
        self._batches_ratio = record["ratio"]
        return self.diagnoser.batches_confirmed(model, self.history, tracked)

    def _network_suspect(self, tracked: float, progress: float | None, model: nn.Module) -> bool:
        """Whether to look for a cause in the network now, without a plateau: at the first check
        with :data:`EARLY_LOOK` tracked losses (on their line,
        :meth:`~descentlab.critical.plateau.PlateauTest.early_progress`) and at the end of windows
        1, 2, 4, 8, ... of the run, the loss still above
        :data:`~descentlab.critical.verdicts.STUCK_HIGH` of where it began and not surely falling
        faster than ``SPARSE_ABOVE · rel_tol`` a window (a network that cannot train is named
        before its plateau is proven; the look costs one gradient of the tracked samples). Spaced
        out as the run goes on: a healthy run that falls slowly (a transformer in its first
        hundreds of steps) would otherwise pay a look every window, 5 % of its training."""
        initial = self.history.initial
        if len(self.plateau.steps) == EARLY_LOOK and self._count < self.window:
            progress = self.plateau.early_progress()
        elif not self._doubling_window_end():
            return False
        return (self._pending is None and self.plateau.quiet_above is None
                and progress is not None and progress < SPARSE_ABOVE * self.plateau.rel_tol
                and initial is not None and initial > 0 and tracked > STUCK_HIGH * initial
                and self._high_as_trained(model, initial))

    def _floor_suspect(self, tracked: float, progress: float | None, model: nn.Module) -> bool:
        """At the end of windows 1, 2, 4, 8, ... of the run, the loss at or below
        :data:`~descentlab.critical.verdicts.STUCK_HIGH` of where it began (above it,
        :meth:`_network_suspect` looks at every row) and not surely falling faster than
        ``SPARSE_ABOVE · rel_tol`` a window: whether a bound built into the outputs holds the loss
        on its floor (:meth:`~descentlab.critical.diagnoser.Diagnoser.floor_holds`, one forward pass
        of the tracked samples). A ReLU on the digits' scores takes the loss from 2.30 to 0.99 in
        200 steps, then creeps (0.97 at 280, 0.69 at 2,000, where the MLP without it is at 0.046 by
        300), and the rows that need a loss stuck high never look."""
        initial = self.history.initial
        if not self._doubling_window_end():
            return False
        return (self._pending is None and self.plateau.quiet_above is None
                and progress is not None and progress < SPARSE_ABOVE * self.plateau.rel_tol
                and initial is not None and initial > 0 and tracked <= STUCK_HIGH * initial
                and all_agree(self.diagnoser.floor_holds(model)))

    def _copies_suspect(self, tracked: float, model: nn.Module) -> bool:
        """At the second tracked loss (after the run's first steps: a layer set to zero parts at
        the first) and at the end of windows 1, 2, 4, 8, ...: the loss still above
        :data:`~descentlab.critical.verdicts.STUCK_HIGH` of where it began, not thrown up past
        :data:`COPIES_RISE` times that (an exploding run's small rows all round to 0 beside its
        largest weights: a look for copies has nothing to say there), and a weight layer with
        :data:`~descentlab.critical.verdicts.SYMMETRIC_SHARE` of its units copies of another
        (:func:`~descentlab.critical.layer_signals.copied_units`, from the weights alone). Copies
        get equal gradients and stay copies whatever the loss does, so no plateau is waited for;
        a full diagnosis decides, within the budget (the origin of a two-layer net, the lectures'
        saddle, has every unit a copy too)."""
        if not self._weights_look_due(tracked, up_to=COPIES_RISE):
            return False
        return all_agree(copied_units(model) >= SYMMETRIC_SHARE
                         and self.budget.allows(self.diagnoser.expected_cost(model)))

    def _samples_mixed(self, tracked: float, model: nn.Module) -> bool:
        """At the second tracked loss and at the end of windows 1, 2, 4, 8, ... (as
        :meth:`_copies_suspect`), the loss still above
        :data:`~descentlab.critical.verdicts.STUCK_HIGH` of where it began: the model or the loss
        does not keep the samples apart
        (:meth:`~descentlab.critical.diagnoser.Diagnoser.samples_apart`: forward passes of at most
        64 samples and, twice, of half of them). Samples mixed stay mixed whatever the loss does, so
        no plateau is waited for (a recurrence along the batch learns something first: its loss
        falls, then stops high)."""
        return (self._weights_look_due(tracked) and self._high_as_trained(model, self.history.initial)
                and not all_agree(self.diagnoser.samples_apart(model)))

    def _high_as_trained(self, model: nn.Module, initial: float) -> bool:
        """For a model that trains batch-norm, the tracked samples' loss as training computes it
        (:meth:`~descentlab.critical.diagnoser.Diagnoser.loss_as_trained`, one forward pass, read
        once a check) is still above :data:`~descentlab.critical.verdicts.STUCK_HIGH` of where the
        run began, read the same way at its first tracked loss; ``True`` for any other model. The
        tracked loss reads the running statistics, which lag the batches' early on: the healthy
        ResNet of ``bench/scale.py`` read 1.57 of its first 2.30 at its first looks, 0.45 on the
        batches' statistics, and paid two looks (4 % of its training) for a network that trains."""
        if self._as_trained is None:
            self._as_trained = (self.diagnoser.loss_as_trained(model),)
        value, began = self._as_trained[0], self._initial_as_trained
        return value is None or all_agree(value > STUCK_HIGH * (initial if began is None else began))

    def _weights_look_due(self, tracked: float, up_to: float = math.inf) -> bool:
        """The checks of :meth:`_copies_suspect` and :meth:`_samples_mixed`, which need no plateau:
        at the second tracked loss and at the end of windows 1, 2, 4, 8, ..., nothing waiting or
        quiet, the tracked loss above :data:`~descentlab.critical.verdicts.STUCK_HIGH` of where it
        began (and at most ``up_to`` times that start)."""
        initial = self.history.initial
        early = len(self.plateau.steps) == 2 and self._count < self.window
        if not (early or self._doubling_window_end()):
            return False
        return (self._pending is None and self.plateau.quiet_above is None and initial is not None
                and initial > 0 and all_agree(STUCK_HIGH * initial < tracked <= up_to * initial))

    def _creep(self, loop: LoopState) -> Trend | None:
        """Asked at the end of a window, of a run whose length is known: the tracked loss still above
        :data:`~descentlab.critical.verdicts.STUCK_HIGH` of where it began, and creeping
        (:meth:`~descentlab.critical.plateau.PlateauTest.ends_above`: not surely falling
        ``SPARSE_ABOVE · rel_tol`` a window, and at that pace still there at the run's last step),
        at a rate that is not rising before half the run (a warm-up holds the loss where it is by
        design; one still rising past half the run is too long). Such a loss is progress to the
        plateau test, whose tolerance a steady creep of 0.14 % a window passes, yet the run will end
        where it began."""
        initial, total = self.history.initial, loop.total_steps
        if (total is None or self._pending is not None or self.plateau.quiet_above is not None
                or initial is None or not initial > 0):
            return None
        if self._rate_rising() and not self._long_warm_up(loop.step):
            return None  # a warm-up holds the loss by design
        return self.plateau.ends_above(total - loop.step, STUCK_HIGH * initial, SPARSE_ABOVE * self.plateau.rel_tol)

    def _warm_up_over(self, step: int) -> bool:
        """The rate has not risen for a window (a warm-up ended: held or decaying since)."""
        rose = self.history.rose_at
        return rose is None or step - rose >= self.window

    def _long_warm_up(self, step: int) -> bool:
        """The rate still rises (it rose at the last check: ``RunHistory.rising``) at half the run or
        later, its length known: a warm-up that long leaves the run no time at the rate it warms up
        to (a warm-up that ended, its rate held or decaying since, is none)."""
        total = self.loop.total_steps if self.loop is not None else None
        return total is not None and 2 * step >= total and self.history.rising

    def _flat_start(self) -> Trend | None:
        """At the early look: the tracked loss has not moved since the run began
        (:meth:`~descentlab.critical.plateau.PlateauTest.early_plateau`) at a rate that is not
        rising (a warm-up from ~0 holds the loss where it began by design)."""
        return None if self._rate_rising() else self.plateau.early_plateau()

    def _rate_rising(self) -> bool:
        """The rate is above the run's first (a warm-up, which holds the loss where it is by design)."""
        lr, first = self._lr(), self.history.first_lr
        return lr is not None and first is not None and lr > first

    def _crossed(self, steps: int) -> bool:
        """The latest call passed a multiple of ``steps`` steps (the loop may call every step or
        every few: the checks' cadence is in steps, not calls)."""
        return self._count // steps > self._before // steps

    def _doubling_window_end(self) -> bool:
        """The end of window 1, 2, 4, 8, ... of the run: looks spaced out as it goes on."""
        ended, windows = self._before // self.window, self._count // self.window
        return windows > ended and 1 << (windows.bit_length() - 1) > ended

    def _gradient_grew(self, step: int) -> bool:
        """The gradient half of :meth:`_growing` (no alarm in the last :data:`RECENT_CHECKS` checks)."""
        if self._alarmed_recently(step):
            return False
        recent = self.history.grad_norms[-RECENT_CHECKS:]
        lows = [low for _, low, _ in recent if math.isfinite(low)]
        return len(recent) >= 2 and bool(lows) and min(lows) > 0 and recent[-1][2] >= GROWTH_ALARM * min(lows)

    def _non_finite(self, loop: LoopState) -> None:
        """The loss became non-finite: the ``diverged`` verdict at the last good point, once;
        the loop is asked to stop."""
        if self._diverged:
            return
        self._diverged = True
        self._size_diagnosis(unwrap(loop.model), self.budget.clock(), gradient_test=False)
        loop.show(f"diagnosing stall {len(self.stalls) + 1}…")
        try:
            stall = self.diagnoser.diverged(unwrap(loop.model), self.history, step=loop.step, optimizer=self.optimizer)
        finally:
            loop.show(None)
        stall = self._roll_back(loop, stall)
        if stall.remedy_applied is None:
            self.control.request_stop(f"the loss became non-finite at step {loop.step}")
        self.stalls.append(stall)
        self._report(stall)

    def _roll_back(self, loop: LoopState, stall: Stall) -> Stall:
        """With ``apply_remedy``, the :func:`~descentlab.critical.remedies.rollback` of a diverged
        run requested (the weights of its last good point put back, the optimizer's state
        forgotten, the rate lowered), at most :data:`MAX_ROLLBACKS` times; the stall says so.
        Under ``torch.distributed`` rank 0's good point, which every rank visited (DDP keeps the
        weights equal), is put back on every rank. Not where the data holds non-finite values:
        the same batches would make the loss non-finite again."""
        if not all_agree(self.options.apply_remedy and stall.status == "diagnosed" and self.history.best_params
                         is not None and self.optimizer is not None and self._rollbacks < MAX_ROLLBACKS
                         and not non_finite_data(stall.evidence)):
            return stall
        self._diverged = False  # the next divergence is diagnosed again
        return replace(self._request_rollback(loop.step, rollback(stall.evidence), stall), remedy_applied="rollback")

    def _request_rollback(self, step: int, remedy: Remedy, stall: Stall) -> Stall:
        """Request ``remedy`` with the weights of the last good point put back first (under
        ``torch.distributed``, rank 0's, which every rank visited: DDP keeps the weights equal);
        what the run saw since is forgotten. Returns ``stall`` with the rollback in its evidence."""
        weights = tuple(w.clone() for w in self.history.best_params)
        if distributed():
            for w in weights:
                torch.distributed.broadcast(w, src=0)
        self.control.request(Request(step, remedy.name, remedy.change, seed=self.seed + step, restore=weights))
        self._unapplied_warned = False
        self._rollbacks += 1
        self._grads_seen.clear()  # the gradients of the steps since are no longer the run's
        self._grad_low = self._grad_high = None
        self._batch_sum, self._batch_count, self._batches_ratio = 0.0, 0, None
        self.plateau.reset()
        self.history.rolled_back()
        return replace(stall, evidence={**stall.evidence, "rollback": {
            "to_step": self.history.best_step, "text": remedy.text, "lr_factor": remedy.change.lr_factor,
            "count": self._rollbacks}})

    # ------------------------------------------------------------------ diagnosis and action
    def diagnose(self, model: nn.Module, *, step: int | None = None) -> Stall:
        """A verdict on demand at ``model``'s current parameters (``step``: the loop's, else 0);
        returned, not recorded, and not acted on."""
        step = (self.loop.step if self.loop is not None else 0) if step is None else int(step)
        model = unwrap(model)
        with self.budget.monitoring(), as_written(model):
            if self.history.initial is None:
                self._track(step, model)
            return self.diagnoser.diagnose(model, self.history, optimizer=self.optimizer, batch_size=self.batch_size,
                                           n_data=None if self.loop is None else self.loop.n_train,
                                           total_steps=None if self.loop is None else self.loop.total_steps,
                                           step=step, reason="on_demand", step_seconds=self._step_seconds())

    def respond(self, stall: Stall, model: nn.Module) -> Stall:
        """Act on a diagnosed stall (:func:`~descentlab.critical.policy.decide_action`): the escape
        step, and with ``apply_remedy`` the trials' winner requested through :attr:`control`.
        Returns the stall with what was done."""
        if stall.status != "diagnosed":
            return stall
        action = decide_action(stall, self.options, changes_modules=self.loop is not None and self.loop.changes_modules)
        if action.skipped is not None:
            stall = replace(stall, trials={**stall.trials, "not_applied": (
                f"{action.skipped} changes the model's modules, which this loop does not take: make that change "
                "in your model's code" + (f"; continuing with {action.remedy.name}" if action.remedy else ""))})
        if action.escape:
            stall = self.diagnoser.escape(model, stall)
        if action.remedy is not None:
            at = stall.diagnosed_at if stall.diagnosed_at is not None else stall.step
            if action.remedy.restore:  # the trials' rollback: the weights of the last good point go back too
                stall = self._request_rollback(at, action.remedy, stall)
            elif not action.remedy.change.is_empty:
                self.control.request(Request(at, action.remedy.name, action.remedy.change, seed=self.seed + at))
                if action.remedy.change.fresh_gradients:
                    self.history.forget_gradients()  # they were sums: growth since then is measured afresh
                self._unapplied_warned = False
            stall = replace(stall, remedy_applied=action.remedy.name)
        return stall

    def _warn_if_unapplied(self, loop: LoopState) -> None:
        pending = self.control.pending
        if pending is not None and pending.step < loop.step and not self._unapplied_warned:
            self._unapplied_warned = True
            _say("step %d: the remedy %r requested at step %d has not been applied: call "
                           "monitor.control.apply(loop) in the training loop (train() does)",
                           loop.step, pending.name, pending.step)

    # ------------------------------------------------------------------ measurements
    def _track(self, step: int, model: nn.Module) -> float:
        """The sample loss now, recorded with the rate."""
        began = self.budget.clock()
        value = self.diagnoser.tracked_loss(model)
        self._track_seconds, self._read_at = self.budget.clock() - began, int(step)
        if value < 0 and not self._negative_warned:
            self._negative_warned = True
            warnings.warn(f"the tracked loss is {value:.4g} at step {step}, below zero: the plateau test reads the "
                          "loss's progress relative to its distance from 0, and the creep test its logarithm, as for "
                          "losses whose floor is 0 (cross-entropy, squared errors); for a loss that goes below zero (a "
                          "Gaussian's or a flow's negative log-likelihood) a slow fall near 0 reads as fast and a "
                          "creep is not told: pass loss_fn minus a level the loss cannot go below to have both",
                          stacklevel=6)
        first = self.history.initial is None
        self.history.observe(step, value, model, self._lr())
        self._after_track = True
        if first and self.history.initial is not None:  # where the run began, as training computes the loss
            self._initial_as_trained = self.diagnoser.loss_as_trained(model)
            if step > 0 and self._opening is not None:
                self._began_lower(value)
        self._opening = None
        if self.writer is not None and math.isfinite(value):
            self.writer.add_scalar("monitor/tracked_loss", value, int(step))
        return value

    def _began_lower(self, tracked: float) -> None:
        """At the first tracked loss, read after the loop's first steps (a loop that calls
        :meth:`update` only: the start is not recorded): where the loop's batch losses rose by
        :data:`OPENING_RISE` or more from the first step's, taken at the initial parameters, to
        the last steps' (their median), the run began that many times below this reading, and the
        history's initial loss is the reading scaled back by that ratio (a ratio of the loop's own
        losses: any scale between them and the tracked loss cancels). A rate far too high throws the loss
        up in its first steps; from there its fall back to chance read as a loss half-way down
        from where it began, so the units it killed were never looked for, and its plateau was
        told to raise the rate. The ranks' losses are summed (one collective, on every rank)."""
        losses = self._opening or []
        enough = len(losses) >= 2
        first, last, ranks = summed(torch.tensor([losses[0] if enough else 0.0,
                                                  statistics.median(losses[-OPENING_LAST:]) if enough else 0.0,
                                                  1.0 if enough else 0.0], dtype=torch.float64)).tolist()
        everyone = 1 if not distributed() else torch.distributed.get_world_size()
        if ranks == everyone and first > 0 and last >= OPENING_RISE * first:
            self.history.initial = tracked * first / last

    def _size_routine(self) -> None:
        """Once, before the first measurement: the samples the tracked loss reads, from the loop's
        batch size (:func:`~descentlab.critical.budget.prior_size`: a forward pass per sample
        every ``every`` steps within :data:`TRACKING_SHARE` of the budget), or more where the
        budget's floor in seconds pays for them (one forward pass of those samples timed: the
        checks of the run, or of the longest plateau horizon when its length is unknown, within
        :data:`TRACKING_SHARE` of ``budget_seconds``: a small model's tracked loss then reads the
        whole sample and is as smooth as it can be); and the sharpness tracker's (the same).
        Without a cap (``budget=None``) or a batch size, the whole sample. Both sizes are fixed
        from then on, only the intervals paced: losses of different samples would make a false
        trend, and a smaller sample's sharpness is larger (see :mod:`descentlab.critical.sharpness`)."""
        if self.tracking is not None:
            return
        if self.loop is not None:
            self._read_per_batch(unwrap(self.loop.model))
        held, fraction = self.diagnoser.held, self.budget.fraction
        size = held if fraction is None else prior_size(TRACKING_SHARE * fraction, 1.0, self.batch_size, self.every,
                                                        low=MIN_TRACKED, high=held)
        if size < held and self.loop is not None:
            self.diagnoser.tracked_size = size
            with as_written(self.loop.model):
                for _ in range(2):  # times the forward pass per sample (the first call also builds the loss)
                    self.diagnoser.tracked_loss(unwrap(self.loop.model))
            total = self.loop.total_steps or self.plateau.max_windows * self.window
            checks = max(1, total // self.every)
            per_sample = max(self.diagnoser.forward_seconds, 1e-12)  # a clock too coarse to see it: no limit
            size = int(smallest(max(size, min(held, TRACKING_SHARE * self.budget.seconds / (checks * per_sample)))))
        self.diagnoser.tracked_size = size
        self.tracking = self._tracking_cadence(size)
        if self.sharpness is not None and fraction is not None and not self._sharpness_samples_given:
            self.sharpness.fix_size(min(self.sharpness.cadence.size, size))

    def _read_per_batch(self, model: nn.Module) -> None:
        """Once, before the first measurement: a ``loss_fn`` that sums over its batch
        (:meth:`~descentlab.critical.diagnoser.Diagnoser.sums`) is read as a batch of the loop's
        ``batch_size`` sums it, in every measurement and diagnosis
        (:meth:`~descentlab.critical.diagnoser.Diagnoser.read_per_batch`): read over the sample as
        it is, the loss, gradient and curvature are ``samples / batch_size`` times those each step
        differentiates, and every rate the monitor names that many times too small. Without a
        batch size, a warning says so."""
        with as_written(model):
            summed = all_agree(self.diagnoser.sums(model))
        if not summed:
            return
        if self.batch_size is None:
            warnings.warn(f"loss_fn sums over its batch: read over the monitor's sample of {self.diagnoser.held} "
                          "samples, its curvature is that many over the loop's batch size times what each step "
                          "differentiates, and the rates named from it too small by as much; pass batch_size (or "
                          "a loss that averages over its batch)", stacklevel=6)
            return
        self.diagnoser.read_per_batch(self.batch_size)
        if self.sharpness is not None:
            self.sharpness.loss_fn = self.diagnoser.loss_fn

    def _tracking_cadence(self, size: int) -> Cadence:
        """The tracked loss's cadence at ``size`` samples (fixed: only the interval is paced), from
        every check up to once a window, within :data:`TRACKING_SHARE` of the budget."""
        fraction = self.budget.fraction
        intervals = tuple(d for d in range(self.every, self.window + 1) if self.window % d == 0)
        return Cadence(None if fraction is None else TRACKING_SHARE * fraction, size, intervals,
                       allowance=TRACKING_SHARE * self.budget.seconds)

    def _pace(self) -> None:
        """After a check that read the tracked loss: its cost against the training since the one
        before (:class:`~descentlab.critical.budget.Cadence`); spread out, the plateau test
        restarts at the new interval."""
        step = self.loop.step if self.loop is not None else None
        if self._read_at is None or self._read_at != step:
            return  # no read at this check: its training counts with the next read's
        training = self.budget.train_time - (self._trained_at["check"] or 0.0)
        self._trained_at["check"] = self.budget.train_time
        steps, self._paced_at = (step - self._paced_at if self._paced_at is not None else self.every), step
        if self.tracking is None or not self.tracking.observe(self._track_seconds, training, steps=steps):
            return
        if self.tracking.every != self.every:
            quiet, initial = self.plateau.quiet_above, self.plateau.initial
            self.every = self.tracking.every
            self.plateau = PlateauTest(self.window, self.every, self.plateau.rel_tol)
            self.plateau.quiet_above, self.plateau.initial = quiet, initial

    def _size_diagnosis(self, model: nn.Module, started: float, gradient_test: bool = True,
                        hessian: bool = True) -> None:
        """The samples the diagnosis about to start reads: as many of the fixed sample as its
        expected cost lets the budget afford, and at least the tracked ones and
        :data:`DIAGNOSIS_BATCHES` training batches for a ``gradient_test`` (a plateau whose
        diagnosis that many do not fit waits), the same on every rank. A diagnosis that computes
        no Hessian (``hessian=False``: a cause a look saw, confirmed on gradients) reads just
        that least: its cost is not a Hessian's, and timing a product to expect one cost the
        healthy ResNet of ``bench/scale.py`` 0.55 s, 3.5 % of its training, for an alarm."""
        if self.budget.fraction is None:  # no cap: the whole sample, and nothing to expect
            self.diagnoser.size = self.diagnoser.held
            return
        least = DIAGNOSIS_BATCHES * (self.batch_size or 0) if gradient_test else 0
        if not hessian:
            self.diagnoser.size = int(smallest(self.diagnoser.sizes(least)[-1]))
            return
        fits = self.diagnoser.affordable_size(model, lambda cost: self.budget.allows(cost, started), least)
        self.diagnoser.size = int(smallest(fits))

    def _measure_sharpness(self, step: int, model: nn.Module) -> None:
        before = self._trained_at["sharpness"]
        self._trained_at["sharpness"] = self.budget.train_time
        try:
            self.sharpness.measure(step, model, self.optimizer,
                                   training=None if before is None else self.budget.train_time - before)
        except Exception as error:  # tracking must never kill the training run
            _say("step %d: sharpness tracking stopped (%s: %s)", step, type(error).__name__, error)
            self.sharpness = None

    def _lr(self) -> float | None:
        """The run's rate now, the largest of its groups' (``None`` without an optimizer):
        :func:`~descentlab.critical.stability.current_rate`."""
        optimizer = self.optimizer
        return None if optimizer is None else current_rate(optimizer)

    def _step_seconds(self) -> float:
        """The training's own seconds per step so far."""
        return self.budget.train_time / self._count if self._count else 0.0

    def _report(self, stall: Stall) -> None:
        """The stall's lines to the logger, its numbers to ``writer``."""
        _say("%s", stall.summary())
        if stall.trials_summary():
            _say("%s", stall.trials_summary())
        if self.writer is not None and rank() == 0:
            for name in ("loss", "grad_norm", "min_eigenvalue", "max_eigenvalue"):
                value = getattr(stall, name, None)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"stall/{name}", value, stall.step)
            self.writer.add_text("stall/verdict", stall.summary(), stall.step)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything the monitor's future decisions depend on (for a bit-for-bit resume)."""
        return {
            **super().state_dict(), "count": self._count, "seen": self._seen, "warm_up_quiet": self._warm_up_quiet,
            "plateau": self.plateau.state_dict(),
            "history": self.history.state_dict(), "budget": self.budget.state_dict(),
            "stalls": [s.to_dict() for s in self.stalls],
            "pending": None if self._pending is None else list(self._pending), "diverged": self._diverged,
            "rollbacks": self._rollbacks, "alarmed_at": self._alarmed_at, "stale_at": self._stale_at,
            "batches_ratio": self._batches_ratio, "initial_as_trained": self._initial_as_trained,
            "sparse": self._sparse,
            "read_at": self._read_at, "paced_at": self._paced_at,
            "diagnoser": self.diagnoser.state_dict(),
            "sharpness": None if self.sharpness is None else self.sharpness.state_dict(),
            "tracking": None if self.tracking is None else self.tracking.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        super().load_state_dict(state)
        self._count = self._before = int(state["count"])
        self._seen = state.get("seen")
        self._warm_up_quiet = state.get("warm_up_quiet")
        self._initial_as_trained = state.get("initial_as_trained")
        self.plateau.load_state_dict(state["plateau"])
        self.history.load_state_dict(state["history"])
        self.budget.load_state_dict(state["budget"])
        self.stalls = [Stall.from_dict(s) for s in state["stalls"]]
        self._pending = None if state["pending"] is None else (int(state["pending"][0]), int(state["pending"][1]))
        self._pending_trend = None
        self._diverged = bool(state["diverged"])
        self._rollbacks = int(state.get("rollbacks", 0))
        self._alarmed_at = state.get("alarmed_at")
        self._stale_at = state.get("stale_at")
        self._batches_ratio = state.get("batches_ratio")
        self._sparse = bool(state.get("sparse", False))
        self._read_at, self._paced_at = state.get("read_at"), state.get("paced_at")
        self.diagnoser.load_state_dict(state["diagnoser"])
        if state.get("tracking") is not None:  # the cadence the run had reached
            self.tracking = self._tracking_cadence(int(state["tracking"]["size"]))
            self.tracking.load_state_dict(state["tracking"])
            self.diagnoser.tracked_size, self.every = self.tracking.size, self.tracking.every
            self.plateau.every = self.every
        self._trained_at = {"check": self.budget.train_time, "sharpness": None}
        if self.sharpness is not None and state.get("sharpness") is not None:
            self.sharpness.load_state_dict(state["sharpness"])


#: "No non-finite loss": larger than any step, so the first bad step is a minimum.
_NO_STEP = torch.iinfo(torch.long).max
#: Folds of the step losses kept unread before they are read (only a monitor that stopped checking
#: gets there: a check reads them).
_MAX_FOLDS = 64


def _kept_norms(optimizer: Any) -> list[torch.Tensor] | None:
    """The last step's gradient norms, as the loop gave them, that the outermost wrapper around
    ``optimizer`` keeping them kept (:class:`~descentlab.optim.FreshGradients`, whose step forgets
    the gradients; :class:`~descentlab.optim.GradientNoise`, whose step adds its noise into them);
    ``None``: no such wrapper."""
    while optimizer is not None and not hasattr(optimizer, "last_norms"):
        optimizer = getattr(optimizer, "base", None)
    return None if optimizer is None else optimizer.last_norms


def _grad_norms(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """The norm of each gradient, one fused op where all are dense; a sparse one (an
    ``nn.Embedding(sparse=True)``'s) by its coalesced values, as its repeated rows add up."""
    if not any(g.is_sparse for g in grads):
        return list(torch._foreach_norm(grads))
    return [torch.linalg.vector_norm(g.coalesce().values() if g.is_sparse else g) for g in grads]


def _entries(shapes: Sequence[tuple[str, tuple[int, ...]]]) -> int:
    return sum(math.prod(shape) for _, shape in shapes)


def _at_once(tracked: float) -> Trend:
    """The trend of a stall raised at once, without a plateau (a gradient test, an alarm, a look
    for a cause in the network): the tracked loss now, no fitted progress."""
    return Trend(0, 1, tracked, tracked, math.nan, math.nan, 0.0)


def _alike(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``tensors`` as they are where they share a dtype and a device, else each as float32 (one
    ``stack`` or ``cat`` takes them either way)."""
    if all(t.dtype == tensors[0].dtype and t.device == tensors[0].device for t in tensors):
        return list(tensors)
    return [t.float() for t in tensors]


def _say(message: str, *args: Any) -> None:
    """A finding on the logger, once per job: from rank 0 under ``torch.distributed``."""
    if rank() == 0:
        LOGGER.warning(message, *args)


@contextlib.contextmanager
def as_written(model: nn.Module) -> Iterator[None]:
    """The monitor measures the model as its code is written, in the parameters' own precision:
    autocast (the loop's bfloat16 or float16) is off, so its losses, gradients and curvature are
    those of the parameters' dtype; and ``torch.compile``'s directives are ignored
    (``torch.compiler.set_stance("force_eager")``), so a compiled module runs eagerly: its compiled
    backward takes no second derivative (a Hessian product through it fails), and the monitor's own
    sample shapes would make it recompile, which the loop would then pay for."""
    device = next(model.parameters()).device
    with torch.autocast(device_type=device.type, enabled=False), torch.compiler.set_stance("force_eager"):
        yield
