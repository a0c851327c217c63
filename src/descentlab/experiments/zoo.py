"""Train the zoo's cases (:mod:`descentlab.problems.zoo`) in a plain PyTorch loop with a stall
monitor attached, and score the monitor: right verdicts, false alarms, repairs, overhead.

:func:`run_case` is the loop a user writes (``zero_grad``, loss, ``backward``, ``step``, the
scheduler's ``step``), with a :class:`~descentlab.critical.StallMonitor` attached through the
callback protocol: ``on_train_start(loop)``, ``on_step_end(loop, loss)`` after every step, and
with ``apply_remedy`` the monitor's request applied (``monitor.control.apply(loop)``), after
which the loop steps ``loop.optimizer`` and ``loop.scheduler`` on batches of
``loop.batch_size``. The monitor has the settings a user would give it (its defaults; with
``apply_remedy``, ``remedies=True, apply_remedy=True``).

:func:`run_zoo` runs many cases and :class:`ZooSummary` counts:

* **right** — a broken case whose *first* diagnosed stall names its cause;
* **false alarm** — a healthy run with a diagnosed stall that names a fault: any verdict but
  ``minimum`` at the best loss seen (a run that reached its minimum stopped for the right
  reason; a minimum "stuck high" is an alarm). Stalls the budget left undiagnosed or whose
  diagnosis failed are counted apart, not as alarms;
* **repaired** — the run with the monitor's remedies applied ends, at equal steps, within
  :data:`REPAIR_TOLERANCE` (10 %) of the final loss of the case's healthy counterpart (the
  documented repair, trained unmonitored), or lower; where that loss is near zero, a gap
  below :data:`NEAR_ZERO` of the counterpart's initial loss counts too. Losses are on all the
  case's training data, in eval mode. Cases with nothing to repair (a run converged to its
  minimum) are left out;
* **inside the counterpart's spread** — for a case not repaired, and only with
  ``spread_seeds``: the counterpart is trained again at the next seeds (other initial weights
  and batches), and the repaired run's loss is no higher than the highest of them. The repair
  rule compares one seed with one seed; where the counterpart's own final loss moves by more
  than 10 % from seed to seed (a mini-batch RNN ends 0.096-0.29 over seeds 0-4), a miss inside
  that spread is the measure's noise, not a remedy's failure. Said beside the repair rate, never
  counted in it;
* **within reach** — for a case not repaired whose remedy was applied at step k: the
  counterpart trained again for only the steps left (``steps - k``, its recipe as written), and
  whether that run ends within :data:`REPAIR_TOLERANCE` of the counterpart's full run. Where it
  does not, no remedy made at step k could count as repaired at the counterpart's own pace: the
  step, the diagnosis's, fell short, not the remedy. Said beside the repair rate, never counted
  in it;
* **helped** — weaker: the remedied run ends, at equal steps, :data:`REPAIR_TOLERANCE` below
  the same broken run left alone (the unmonitored run of the overhead pair), or finite where
  that one is not;
* **overhead** — the monitored run's wall time against the same loop without the monitor,
  run next to it (paired, the order alternating from case to case), the median over cases;
  beside it the monitor's own clock (``monitor.spent`` against the rest of the loop).
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from descentlab.checks import check_int
from descentlab.critical import StallMonitor
from descentlab.engine.callbacks import LoopState
from descentlab.problems.zoo import ZooCase, select_cases

__all__ = ["CaseRun", "CaseOutcome", "ZooSummary", "run_case", "run_zoo", "build_optimizer", "build_scheduler",
           "data_loss", "REPAIR_TOLERANCE", "NEAR_ZERO", "BENIGN", "TARGETS"]

#: A repaired run ends within this fraction of its healthy counterpart's final loss.
REPAIR_TOLERANCE = 0.10
#: ... or, where that loss is near zero, within this fraction of the counterpart's initial loss.
NEAR_ZERO = 1e-3
#: The verdicts that are no alarm on a healthy run (``minimum`` only at the best loss seen).
BENIGN = ("minimum",)
#: The issue's targets: share of right verdicts, false alarms, share of repaired runs.
TARGETS: Mapping[str, float] = {"right": 0.95, "false_alarms": 0, "repaired": 0.90}


@dataclass(frozen=True)
class CaseRun:
    """One training run of a case.

    Attributes:
        case: the case's name.
        monitored, apply_remedy: how it ran.
        verdict: the verdict of the first diagnosed stall (``None``: none).
        stalls: every stall, as plain data (``step``, ``status``, ``verdict``, ``stuck_high``,
            ``remedy_applied``, ``summary``).
        applied: the remedies the loop applied (``"name at step N"``).
        losses: the mini-batch loss of every step taken.
        grad_norms: the norm of every step's whole gradient, before any clipping.
        initial_loss, final_loss: the loss on all the training data before the first step and
            after the last (NaN where it is not finite).
        steps: steps taken; ``status``: ``"completed"``, ``"non_finite"`` (stopped at the first
            non-finite loss) or ``"stopped"`` (the monitor asked).
        seconds: wall time of the loop, the monitor's calls included; ``monitor_seconds``: the
            monitor's own (``monitor.spent``).
        model: the trained model (not part of :meth:`to_dict`).
    """

    case: str
    monitored: bool
    apply_remedy: bool
    verdict: str | None
    stalls: tuple[Mapping[str, Any], ...]
    applied: tuple[str, ...]
    losses: tuple[float, ...] = field(repr=False)
    grad_norms: tuple[float, ...] = field(repr=False)
    initial_loss: float
    final_loss: float
    steps: int
    status: str
    seconds: float
    monitor_seconds: float
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def first_remedy_step(self) -> int | None:
        """The step the loop applied its first remedy at (``None``: none applied)."""
        return int(self.applied[0].rsplit(" at step ", 1)[1]) if self.applied else None

    def alarms(self) -> list[Mapping[str, Any]]:
        """The diagnosed stalls that name a fault (every verdict but a minimum at the best loss)."""
        return [s for s in self.stalls if s["status"] == "diagnosed" and s["verdict"] is not None
                and not (s["verdict"] in BENIGN and not s.get("stuck_high"))]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (NaN as ``None``, for JSON)."""
        return {"case": self.case, "monitored": self.monitored, "apply_remedy": self.apply_remedy,
                "verdict": self.verdict, "stalls": [dict(s) for s in self.stalls], "applied": list(self.applied),
                "losses": [_finite_or_none(v) for v in self.losses],
                "grad_norms": [_finite_or_none(v) for v in self.grad_norms],
                "initial_loss": _finite_or_none(self.initial_loss),
                "final_loss": _finite_or_none(self.final_loss), "steps": self.steps, "status": self.status,
                "seconds": self.seconds, "monitor_seconds": self.monitor_seconds}


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------- one run
def build_optimizer(recipe: Any, parameters: Any) -> torch.optim.Optimizer:
    """``torch.optim.<recipe.name>(parameters, lr=recipe.lr, **recipe.options)``."""
    return getattr(torch.optim, recipe.name)(parameters, lr=recipe.lr, **dict(recipe.options))


def build_scheduler(schedule: Any, optimizer: torch.optim.Optimizer) -> Any:
    """``torch.optim.lr_scheduler.<schedule.name>(optimizer, **schedule.options)``, or ``None``."""
    if schedule is None:
        return None
    return getattr(torch.optim.lr_scheduler, schedule.name)(optimizer, **dict(schedule.options))


@torch.no_grad()
def data_loss(model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor) -> float:
    """The loss of ``model`` on all of ``(X, y)`` in eval mode (its mode restored), NaN if not finite."""
    was_training = model.training
    model.eval()
    try:
        value = float(loss_fn(model(X), y))
    finally:
        model.train(was_training)
    return value if math.isfinite(value) else math.nan


def _batches(n: int, loop: LoopState, generator: torch.Generator,
             kind: str = "shuffled") -> Iterator[torch.Tensor | None]:
    """Indices of the next mini-batch, a fresh permutation every epoch (``None``: all the data);
    ``kind="fixed"``: the first batch drawn, at every step, until a remedy sets ``loop.shuffle``.
    The batch size is read from the loop every step, so a changed one applies at once."""
    order, position, first = None, n, None
    while True:
        size = loop.batch_size or n
        if size >= n:
            yield None
            continue
        if kind == "fixed" and first is not None and not loop.shuffle:
            yield first
            continue
        if position + size > n:
            order, position = torch.randperm(n, generator=generator), 0
        first = order[position:position + size] if first is None else first
        yield order[position:position + size]
        position += size


def run_case(case: ZooCase, *, seed: int = 0, monitor: bool = True, apply_remedy: bool = False,
             monitor_options: Mapping[str, Any] | None = None) -> CaseRun:
    """Train ``case`` for its steps in a plain PyTorch loop (see the module docstring), with a
    default :class:`~descentlab.critical.StallMonitor` attached when ``monitor`` (and its
    remedies applied when ``apply_remedy``); ``monitor_options`` are further
    ``StallMonitor`` arguments. ``seed`` fixes the initial weights, the batches and the
    monitor's sample. The loop stops at the first non-finite loss (after the monitor has seen it),
    unless the monitor's remedy rolls the run back."""
    check_int("seed", seed, low=0)
    if apply_remedy and not monitor:
        raise ValueError("apply_remedy needs monitor=True (the remedies come from the monitor)")
    data = case.dataset()
    X, y = data.X, data.y
    torch.manual_seed(seed)
    model = case.make_model()
    optimizer = build_optimizer(case.optimizer, [p for p in model.parameters() if p.requires_grad])
    scheduler = build_scheduler(case.schedule, optimizer)
    # the model lives in this loop only, so a remedy that swaps its modules can be made on it
    loop = LoopState(model, optimizer, scheduler, batch_size=case.batch_size or len(X), n_train=len(X),
                     total_steps=case.steps, changes_modules=True)
    initial = data_loss(model, case.loss_fn, X, y)
    watcher = None
    if monitor:
        options = {"seed": seed, **({"remedies": True, "apply_remedy": True} if apply_remedy else {}),
                   **dict(monitor_options or {})}
        watcher = StallMonitor(case.loss_fn, (X, y), **options)
    batches = _batches(len(X), loop, torch.Generator().manual_seed(seed), case.batches)
    losses: list[float] = []
    grad_norms: list[float] = []
    applied: list[str] = []
    status = "completed"
    model.train()
    started = time.perf_counter()
    if watcher is not None:
        watcher.on_train_start(loop)
    for step in range(1, case.steps + 1):
        index = next(batches)
        xb, yb = (X, y) if index is None else (X[index], y[index])
        if case.zero_grad:
            loop.optimizer.zero_grad()
        loss = case.loss_fn(loop.model(xb), yb)
        loss.backward()
        grad_norms.append(_gradient_norm(loop.model))
        if case.clip is not None:
            torch.nn.utils.clip_grad_norm_(loop.model.parameters(), case.clip)
        value = loss.item()
        loop.step = step
        if not math.isfinite(value):  # the step is not taken; the monitor hears of the loss
            if watcher is not None:
                watcher.on_step_end(loop, value)
                if apply_remedy and watcher.control.pending and not watcher.control.should_stop:
                    request = watcher.control.pending  # rolled back to the last good point
                    watcher.control.apply(loop)
                    applied.append(f"{request.name} at step {step}")
                    continue
            status = "non_finite"
            break
        loop.optimizer.step()
        if loop.scheduler is not None:
            loop.scheduler.step()
        losses.append(value)
        if watcher is not None:
            watcher.on_step_end(loop, loss.detach())
            if apply_remedy and watcher.control.pending:
                request = watcher.control.pending
                watcher.control.apply(loop)
                applied.append(f"{request.name} at step {step}")
            if watcher.control.should_stop:
                status = "stopped"
                break
    if watcher is not None:
        watcher.on_train_end(loop)
    seconds = time.perf_counter() - started
    stalls = tuple(_stall_record(s) for s in watcher.stalls) if watcher is not None else ()
    first = next((s["verdict"] for s in stalls if s["status"] == "diagnosed"), None)
    final = data_loss(loop.model, case.loss_fn, X, y) if status != "non_finite" else math.nan
    return CaseRun(case.name, monitor, apply_remedy, first, stalls, tuple(applied), tuple(losses), tuple(grad_norms),
                   initial, final,
                   loop.step if status != "completed" else case.steps, status, seconds,
                   watcher.spent if watcher is not None else 0.0, loop.model)


def _gradient_norm(model: nn.Module) -> float:
    """The norm of all the gradients together (the norm of the per-tensor norms, no joined copy)."""
    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))) if grads else 0.0


def _stall_record(stall: Any) -> dict[str, Any]:
    loss = (stall.evidence or {}).get("loss") or {}
    return {"step": stall.step, "status": stall.status, "verdict": stall.verdict,
            "stuck_high": loss.get("stuck_high"), "remedy_applied": stall.remedy_applied, "summary": stall.summary()}


# ---------------------------------------------------------------------------------------- the zoo
@dataclass(frozen=True)
class CaseOutcome:
    """A case's runs and what they say.

    Attributes:
        name, expected, family: the case's name, cause (``None``: healthy) and family.
        watched: the run with the monitor (reporting only).
        plain: the same run without the monitor (for the overhead), or ``None``.
        repaired: the run with the monitor's remedies applied, or ``None``.
        healthy: the case's healthy counterpart, unmonitored, or ``None``.
    """

    name: str
    expected: str | None
    family: str
    watched: CaseRun
    plain: CaseRun | None = None
    repaired: CaseRun | None = None
    healthy: CaseRun | None = None
    spread: tuple[float, ...] = ()
    left: float | None = None

    @property
    def right(self) -> bool | None:
        """The first diagnosed verdict is the expected cause (``None`` for a healthy run)."""
        return None if self.expected is None else self.watched.verdict == self.expected

    @property
    def false_alarm(self) -> bool | None:
        """A healthy run with a stall that names a fault (``None`` for a broken case)."""
        return None if self.expected is not None else bool(self.watched.alarms())

    @property
    def repair_ok(self) -> bool | None:
        """The repaired run ends within the tolerance of the healthy counterpart (``None``: not measured)."""
        if self.repaired is None or self.healthy is None:
            return None
        return repaired_within(self.repaired.final_loss, self.healthy.final_loss, self.healthy.initial_loss)

    @property
    def inside_spread(self) -> bool | None:
        """Not repaired, but no higher than the healthy counterpart's final loss at one of the other
        seeds of :attr:`spread` (``None``: repaired, or the spread not measured)."""
        if self.repair_ok is not False or not self.spread:
            return None
        final = self.repaired.final_loss
        return math.isfinite(final) and any(final <= other for other in self.spread)

    @property
    def within_reach(self) -> bool | None:
        """Not repaired: whether the healthy counterpart trained only for the steps left after the
        first remedy (:attr:`left`) ends within the repair tolerance of its full run (``None``:
        repaired, or not measured)."""
        if self.repair_ok is not False or self.left is None:
            return None
        return repaired_within(self.left, self.healthy.final_loss, self.healthy.initial_loss)

    @property
    def helped(self) -> bool | None:
        """The remedied run ends better than the same broken run left alone (:attr:`plain`, at equal
        steps): finite where that one is not, or lower by :data:`REPAIR_TOLERANCE` of its loss
        (``None``: not measured). Weaker than :attr:`repair_ok`: a remedy made at a plateau has
        fewer steps left than the healthy counterpart, which starts right."""
        if self.repaired is None or self.plain is None:
            return None
        broken, final = self.plain.final_loss, self.repaired.final_loss
        if not math.isfinite(final):
            return False
        return not math.isfinite(broken) or final < broken - REPAIR_TOLERANCE * abs(broken)

    @property
    def overhead(self) -> float | None:
        """Monitored wall time / unmonitored wall time - 1 (``None``: no unmonitored run)."""
        if self.plain is None or self.plain.seconds <= 0:
            return None
        return self.watched.seconds / self.plain.seconds - 1.0

    @property
    def monitor_share(self) -> float:
        """The monitor's own seconds against the rest of the monitored loop's."""
        rest = self.watched.seconds - self.watched.monitor_seconds
        return self.watched.monitor_seconds / rest if rest > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the verdict, the scores and every run."""
        return {"name": self.name, "expected": self.expected, "family": self.family, "verdict": self.watched.verdict,
                "right": self.right, "false_alarm": self.false_alarm, "repair_ok": self.repair_ok, "helped": self.helped,
                "inside_spread": self.inside_spread, "spread": list(self.spread),
                "counterpart_steps_left": self.left, "within_reach": self.within_reach,
                "overhead": self.overhead, "monitor_share": _finite_or_none(self.monitor_share),
                "runs": {key: run.to_dict() for key, run in (("watched", self.watched), ("plain", self.plain),
                                                             ("repaired", self.repaired), ("healthy", self.healthy))
                         if run is not None}}


def repaired_within(final: float, healthy: float, healthy_initial: float) -> bool:
    """``final`` within :data:`REPAIR_TOLERANCE` of ``healthy`` (or lower), or within
    :data:`NEAR_ZERO` of ``healthy_initial`` of it; a non-finite ``final`` never is."""
    if not math.isfinite(final):
        return False
    if not math.isfinite(healthy):
        return True  # the counterpart itself failed: anything finite is as good
    slack = max(REPAIR_TOLERANCE * abs(healthy), NEAR_ZERO * abs(healthy_initial) if math.isfinite(healthy_initial)
                else 0.0)
    return final <= healthy + slack


@dataclass(frozen=True)
class ZooSummary:
    """The zoo's score over its outcomes (see the module docstring for what counts)."""

    outcomes: tuple[CaseOutcome, ...]
    seed: int = 0

    @property
    def broken(self) -> tuple[CaseOutcome, ...]:
        return tuple(o for o in self.outcomes if o.expected is not None)

    @property
    def healthy_runs(self) -> tuple[CaseOutcome, ...]:
        return tuple(o for o in self.outcomes if o.expected is None)

    def per_verdict(self) -> dict[str, tuple[int, int]]:
        """Expected cause -> (cases whose first verdict names it, cases), in order of first appearance."""
        table: dict[str, list[int]] = {}
        for outcome in self.broken:
            entry = table.setdefault(outcome.expected, [0, 0])
            entry[0] += bool(outcome.right)
            entry[1] += 1
        return {verdict: (right, total) for verdict, (right, total) in table.items()}

    @property
    def right(self) -> int:
        return sum(bool(o.right) for o in self.broken)

    @property
    def false_alarms(self) -> int:
        return sum(bool(o.false_alarm) for o in self.healthy_runs)

    @property
    def repairable(self) -> int:
        """Broken cases whose repair was measured."""
        return sum(o.repair_ok is not None for o in self.broken)

    @property
    def repaired(self) -> int:
        return sum(bool(o.repair_ok) for o in self.broken)

    @property
    def inside_spread(self) -> int:
        """Broken cases not repaired whose repaired run is inside the counterpart's seed spread."""
        return sum(bool(o.inside_spread) for o in self.broken)

    @property
    def beyond_reach(self) -> int:
        """Broken cases not repaired that no remedy at the step it was made could have repaired
        (:attr:`CaseOutcome.within_reach` ``False``)."""
        return sum(o.within_reach is False for o in self.broken)

    @property
    def reach_measured(self) -> int:
        """Broken cases not repaired whose counterpart was trained for the steps left."""
        return sum(o.within_reach is not None for o in self.broken)

    @property
    def spread_measured(self) -> int:
        """Broken cases not repaired whose counterpart was run at other seeds."""
        return sum(o.inside_spread is not None for o in self.broken)

    @property
    def helped(self) -> int:
        """Broken cases whose remedied run ended better than the run left alone (:attr:`CaseOutcome.helped`)."""
        return sum(bool(o.helped) for o in self.broken)

    @property
    def help_measured(self) -> int:
        """Broken cases with a remedied run and a run left alone to compare it with."""
        return sum(o.helped is not None for o in self.broken)

    @property
    def overhead(self) -> float | None:
        """The median over cases of the monitored / unmonitored wall time - 1 (``None``: not measured)."""
        return _median([o.overhead for o in self.outcomes])

    @property
    def healthy_overhead(self) -> float | None:
        """:attr:`overhead` over the healthy runs alone (the monitor's cost where nothing goes wrong)."""
        return _median([o.overhead for o in self.healthy_runs])

    @property
    def monitor_share(self) -> float | None:
        """The median over cases of the monitor's own seconds against the rest of the loop's."""
        return _median([o.monitor_share for o in self.outcomes])

    @property
    def healthy_monitor_share(self) -> float | None:
        """:attr:`monitor_share` over the healthy runs alone."""
        return _median([o.monitor_share for o in self.healthy_runs])

    def met(self) -> dict[str, bool | None]:
        """Each of :data:`TARGETS`: met, not met, or ``None`` (nothing measured)."""
        broken, healthy = len(self.broken), len(self.healthy_runs)
        return {"right": self.right / broken >= TARGETS["right"] if broken else None,
                "false_alarms": self.false_alarms <= TARGETS["false_alarms"] if healthy else None,
                "repaired": self.repaired / self.repairable >= TARGETS["repaired"] if self.repairable else None}

    def to_dict(self) -> dict[str, Any]:
        """The counts and targets as plain data (the outcomes apart: ``[o.to_dict() for o in outcomes]``)."""
        return {"seed": self.seed, "cases": len(self.outcomes), "broken": len(self.broken), "right": self.right,
                "per_verdict": {k: {"right": r, "cases": n} for k, (r, n) in self.per_verdict().items()},
                "healthy": len(self.healthy_runs), "false_alarms": self.false_alarms,
                "repairable": self.repairable, "repaired": self.repaired, "helped": self.helped,
                "inside_spread": self.inside_spread, "spread_measured": self.spread_measured,
                "beyond_reach": self.beyond_reach, "reach_measured": self.reach_measured,
                "help_measured": self.help_measured, "overhead": self.overhead,
                "monitor_share": self.monitor_share, "healthy_overhead": self.healthy_overhead,
                "healthy_monitor_share": self.healthy_monitor_share, "targets": dict(TARGETS), "met": self.met()}


def _median(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(finite) if finite else None


@contextlib.contextmanager
def _quiet_and_single_threaded(quiet: bool, threads: int | None) -> Iterator[None]:
    """Torch on ``threads`` threads (the zoo's models are small) and, when ``quiet``, the
    monitor's lines and library warnings held back; everything restored afterwards."""
    logger = logging.getLogger("descentlab.monitor")
    level, before = logger.level, torch.get_num_threads()
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
            logger.setLevel(logging.ERROR)
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)
            logger.setLevel(level)


def run_outcome(case: ZooCase, *, seed: int = 0, repair: bool = False, overhead: bool = True,
                plain_first: bool = False, monitor_options: Mapping[str, Any] | None = None,
                spread_seeds: int = 1) -> CaseOutcome:
    """Every run one case needs: monitored, unmonitored beside it (``overhead``; first when
    ``plain_first``), and with ``repair`` the run with remedies applied and the healthy counterpart;
    where that repair falls short, the counterpart for the steps left after the first remedy
    (:attr:`CaseOutcome.left`) and again at seeds ``seed + 1`` to ``seed + spread_seeds - 1``
    (:attr:`CaseOutcome.spread`)."""
    plain = None
    if overhead and plain_first:
        plain = run_case(case, seed=seed, monitor=False)
    watched = run_case(case, seed=seed, monitor_options=monitor_options)
    if overhead and not plain_first:
        plain = run_case(case, seed=seed, monitor=False)
    repaired = healthy = None
    if repair and case.fixed is not None:
        repaired = run_case(case, seed=seed, apply_remedy=True, monitor_options=monitor_options)
        healthy = run_case(case.fixed, seed=seed, monitor=False)
    outcome = CaseOutcome(case.name, case.verdict, case.family, watched, plain, repaired, healthy)
    first = repaired.first_remedy_step if repaired is not None else None
    if outcome.repair_ok is False and first is not None:
        shorter = replace(case.fixed, steps=case.steps - first)
        outcome = replace(outcome, left=run_case(shorter, seed=seed, monitor=False).final_loss)
    if outcome.repair_ok is False and spread_seeds > 1:
        others = tuple(run_case(case.fixed, seed=seed + k, monitor=False).final_loss for k in range(1, spread_seeds))
        outcome = replace(outcome, spread=(healthy.final_loss, *others))
    return outcome


def run_zoo(only: Sequence[str] | None = None, family: str | None = None, verdict: str | None = None, *,
            cases: Sequence[ZooCase] | None = None, seed: int = 0, repair: bool = False, overhead: bool = True,
            progress: bool = True, quiet: bool = True, threads: int | None = 1,
            monitor_options: Mapping[str, Any] | None = None, spread_seeds: int = 1,
            on_outcome: Callable[[CaseOutcome], Any] | None = None) -> ZooSummary:
    """Run the zoo's cases (:func:`~descentlab.problems.zoo.select_cases` of ``only``,
    ``family``, ``verdict``; or ``cases`` as given) and score them (:class:`ZooSummary`).

    ``repair``: also the runs with the monitor's remedies applied and the healthy counterparts
    (about twice the time). ``overhead``: each case also unmonitored, paired. ``threads``:
    torch's threads meanwhile (``None``: as they are). ``quiet``: the monitor's lines and
    warnings held back. ``spread_seeds``: where a repair falls short, the counterpart's final
    loss over this many seeds from ``seed`` (:attr:`CaseOutcome.inside_spread`; 1: not
    measured). ``on_outcome`` is called with each case's outcome as it finishes.
    """
    from tqdm.auto import tqdm

    check_int("seed", seed, low=0)
    check_int("spread_seeds", spread_seeds)
    if threads is not None:
        check_int("threads", threads)
    chosen = tuple(cases) if cases is not None else select_cases(only, family, verdict)
    outcomes: list[CaseOutcome] = []
    with _quiet_and_single_threaded(quiet, threads):
        bar = tqdm(chosen, desc="zoo", unit="case", file=sys.stderr, disable=not progress, leave=False)
        for index, case in enumerate(bar):
            bar.set_postfix_str(case.name)
            outcome = run_outcome(case, seed=seed, repair=repair, overhead=overhead, plain_first=index % 2 == 1,
                                  monitor_options=monitor_options, spread_seeds=spread_seeds)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
        bar.close()
    return ZooSummary(tuple(outcomes), seed)
