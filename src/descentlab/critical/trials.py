"""Remedy trials: fork the run at a stall, try each remedy for the same few steps, rank them.

**Fork.** Every trial starts from a copy of the model *and* its optimizer made by one
``copy.deepcopy`` (:func:`fork`): the copy's weights and optimizer state (momentum buffers,
Adam's moments, step counts, a noise wrapper's generator) are bit-identical to the run's, and
the copied optimizer steps the copied parameters. The run itself is not touched.

**Same data, same seed.** Each trial step draws one random subset of the training data from a
generator seeded with ``seed``; every trial takes its batch as a prefix of that subset (a larger
batch contains the smaller one), so all trials see the same samples in the same order, and any
randomness a remedy adds (gradient noise) is seeded too.

**One ensemble.** Trials of one batch size run as one stacked ensemble: their parameters are
stacked and one ``torch.func.vmap`` of ``functional_call`` evaluates all of them on the shared
batch, one backward pass gives every trial its own gradient (trial k's loss depends only on
slice k), and then each trial's *own* optimizer steps its own parameters, so any optimizer
(wrappers and state included) can be tried this way. A model with buffers (batch norm) or
dropout cannot be stacked (:func:`unstackable_reason`); its trials run one after another.

**Ranking.** Every ``record_every`` steps each trial's loss on the evaluation data (all the
training data where it is in memory) is recorded from the fork (step 0) on. A trial's cost is
what a run of that remedy alone would take: its measured seconds per step (a plain, unstacked
step, the fastest of a few, timed after the trial) times the steps, plus one-time work (the
escape's line search). Trials are ranked by the loss's decrease in orders of magnitude per
second, ``ln(L_fork / L_end) / seconds`` (:func:`progress`; the plain decrease where a loss is
not positive), and those within :data:`CLOCK_NOISE` (10 %) of the best by their decrease alone;
the winner is the best one that lowered the loss. A loss's fall spans orders of magnitude: from
25.3, standardizing the inputs reached 0.084 and Adam 0.58, decreases of 25.18 and 24.68, 2 %
apart, which left the clock to decide between them (in one zoo run a loaded clock ranked Adam
first, and the run ended at 0.44 where standardizing ends at 0.059); in orders of magnitude they
are 5.7 and 3.8. Equal lengths and shared data make the decreases comparable; the seconds come
from the clock, so two trials close in progress per second can swap from run to run (Adam's
0.251 against carrying on at 0.260 after 50 steps decided a zoo run's repair: in three runs of
it Adam's decrease per second was 11 % above, 44 % below and 4 % below carrying on's); within
10 % of the best the deterministic decrease decides, and only a pair straddling that edge, or a
clock far off (the 44 %), can still swap them.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from descentlab.critical.escape import escape
from descentlab.critical.remedies import Remedy
from descentlab.curvature import EmpiricalLoss
from descentlab.curvature.batches import batch_size as count_of
from descentlab.curvature.batches import take
from descentlab.curvature.losses import apply_loss, as_data, is_model_loss
from descentlab.engine.callbacks import LoopState, restore_weights
from descentlab.engine.changes import apply_change
from descentlab.engine.stack import Stack, unstackable_reason
from descentlab.engine.steps import Joint, StepInfo, run_steps
from descentlab.engine.timing import seconds_per_step
from descentlab.ranks import distributed, total, world_size
from descentlab.ranks import largest as largest_of_ranks

__all__ = ["Trial", "Trials", "fork", "run_trials", "progress", "ranked", "prepare_member", "unstackable_reason",
           "TIMED_STEPS", "CLOCK_NOISE"]

#: Plain steps timed per trial for its cost (the fastest counts: other jobs only ever add time).
TIMED_STEPS = 5
#: Trials whose progress per second is within this fraction of the best's are ranked by their
#: decrease alone: on a shared machine the ratio of two computations' seconds moves by this much
#: and more from run to run, so the clock cannot separate them; the decreases are deterministic.
CLOCK_NOISE = 0.1


@dataclass(frozen=True)
class Trial:
    """One remedy's trial.

    Attributes:
        remedy: the :class:`~descentlab.critical.remedies.Remedy` tried.
        steps: the recorded steps since the fork (0 first).
        losses: the evaluation loss at those steps (``nan`` once non-finite).
        decrease: loss at the fork minus loss at the end (``nan`` if the trial diverged).
        seconds: the cost of a run of this remedy alone (see the module docstring).
        rate: the trial's :func:`progress` over ``seconds``.
        note: what happened to the remedy itself (``"escape: lowered the loss 2.303 -> 1.94"``), or ``""``.
    """

    remedy: Remedy
    steps: tuple[int, ...]
    losses: tuple[float, ...]
    decrease: float
    seconds: float
    rate: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (non-finite numbers as ``None``)."""
        return {"remedy": self.remedy.name, "text": self.remedy.text, "change": self.remedy.to_dict(),
                "steps": list(self.steps), "losses": [_finite(v) for v in self.losses],
                "decrease": _finite(self.decrease), "seconds": self.seconds, "rate": _finite(self.rate),
                "note": self.note}


@dataclass(frozen=True)
class Trials:
    """Every trial at one stall, ranked.

    Attributes:
        trials: in the order the remedies were given.
        ranking: remedy names, best first (by ``rate``, those within :data:`CLOCK_NOISE` of the best by
            ``decrease``; diverged trials last).
        winner: the best remedy that lowered the loss (``None`` if none did).
        steps: each trial's length.
        batch_size: the run's batch size (``None``: full batch).
        stacked: the trials ran as stacked ensembles (else one after another, ``reason`` says why).
        eval_samples: samples of the evaluation data.
        seconds: wall time of all the trials together.
        logarithmic: the rates are :func:`progress` in orders of magnitude (every loss positive), else
            plain decreases, per second.
    """

    trials: tuple[Trial, ...]
    ranking: tuple[str, ...]
    winner: str | None
    steps: int
    batch_size: int | None
    stacked: bool
    reason: str
    eval_samples: int
    seconds: float
    logarithmic: bool = True

    def get(self, name: str) -> Trial:
        """The trial of remedy ``name``."""
        return next(t for t in self.trials if t.remedy.name == name)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``stalls.json``."""
        return {"steps": self.steps, "batch_size": self.batch_size, "stacked": self.stacked, "reason": self.reason,
                "eval_samples": self.eval_samples, "seconds": self.seconds, "winner": self.winner,
                "ranking": list(self.ranking), "logarithmic": self.logarithmic,
                "trials": [t.to_dict() for t in self.trials]}


def fork(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A copy of ``model`` and ``optimizer`` with bit-identical weights and state, the copied
    optimizer stepping the copied parameters (one ``deepcopy`` of the pair maps one to the other)."""
    return copy.deepcopy((model, optimizer))


@dataclass
class _Member:
    remedy: Remedy
    model: nn.Module
    optimizer: Any
    scheduler: Any
    batch: int
    one_time: float = 0.0
    note: str = ""
    losses: list[float] = field(default_factory=list)
    evaluation: EmpiricalLoss | None = None  # the data layer over the evaluation data, at the member's parameters

    def eval_loss(self, loss_fn: Callable, data: tuple[Any, torch.Tensor]) -> float:
        """The member's loss on ``data`` now, through the data layer (eval mode, the fork's
        buffers read but not updated)."""
        if self.evaluation is None:
            self.evaluation = EmpiricalLoss(self.model, loss_fn, as_data(loss_fn, *data), eval_mode=True)
        else:
            self.evaluation = self.evaluation.refreshed()
        return float(self.evaluation.loss())


def prepare_member(remedy: Remedy, model: nn.Module, optimizer: Any, *, loss_fn: Callable, sample: Any = None,
                   point: Any = None, batch_size: int, seed: int = 0, escape_options: dict | None = None,
                   restore: Sequence[torch.Tensor] | None = None) -> _Member:
    """Make ``remedy``'s change on a forked ``model``/``optimizer`` (the weights of ``restore`` put
    back where the remedy starts from the last good point, the escape step, then
    :func:`~descentlab.engine.changes.apply_change`: the one function the run itself uses) and
    return the trial member. Its one-time cost is the escape's line search (a run of that remedy
    pays it once); making a change costs microseconds, which would only let the clock's noise rank
    remedies whose steps cost the same."""
    one_time, note = 0.0, ""
    if remedy.restore:
        if restore is None:
            raise ValueError(f"restore: the remedy {remedy.name!r} starts from the last good point; pass its weights")
        restore_weights(model, tuple(restore))
    if remedy.escape:
        t0 = time.perf_counter()
        result = escape(model, loss_fn, sample, point, **dict(escape_options or {}))
        one_time = time.perf_counter() - t0
        note = (f"escape: lowered the loss {result.loss_before:.4g} -> {result.loss_after:.4g}" if result.applied
                else f"escape: {result.reason}")
    applied = apply_change(remedy.change, optimizer, None, model=model, seed=seed)
    return _Member(remedy, model, applied.optimizer, applied.scheduler, applied.batch_size or batch_size,
                   one_time, note)


def run_trials(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    data: tuple[Any, torch.Tensor],
    remedies: Sequence[Remedy],
    *,
    steps: int,
    batch_size: int | None,
    seed: int = 0,
    sample: Any = None,
    point: Any = None,
    eval_data: tuple[Any, torch.Tensor] | None = None,
    record_every: int | None = None,
    escape_options: dict | None = None,
    stack: bool = True,
    restore: Sequence[torch.Tensor] | None = None,
    clip_to: float | None = None,
) -> Trials:
    """Try every remedy for ``steps`` steps from a fork of ``model``/``optimizer`` and rank them
    (see the module docstring).

    Args:
        data: the training data as one in-memory ``(X, y)`` pair (the trials' batches come from it).
        remedies: what to try (:func:`~descentlab.critical.remedies.remedies_for`).
        batch_size: the run's batch size (``None``: full batch).
        sample: the data the escape's line search reads (default ``data``).
        point: the :class:`~descentlab.critical.CriticalPoint` at the model's parameters (for ``escape``).
        eval_data: where the losses are measured (default ``data``).
        record_every: record the losses every this many steps (default: about 25 points).
        stack: run trials of one batch size as one stacked ensemble where the model allows.
        restore: the weights of the run's last good point (the trainable parameters, in order),
            where a remedy starts from there (``rollback``).
        clip_to: every trial's gradients clipped to this global norm before its step, as the run's
            own loop was measured to do to its gradients (``None``: not clipped): a trial that ran
            on gradients the loop never steps with would rank remedies for another run.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not remedies:
        raise ValueError("remedies must not be empty")
    t_start = time.perf_counter()
    X, y = data
    n = count_of(X, y)
    batch = n if batch_size is None else min(int(batch_size), n)
    eval_data = data if eval_data is None else eval_data
    record_every = record_every or max(1, steps // 25)
    # every trial starts here, whatever its remedy does first
    start = float(EmpiricalLoss(model, loss_fn, as_data(loss_fn, *eval_data), eval_mode=True).loss())
    members = [prepare_member(r, *fork(model, optimizer), loss_fn=loss_fn, sample=sample if sample is not None else data,
                              point=point, batch_size=batch, seed=seed, escape_options=escape_options,
                              restore=restore)
               for r in remedies]
    for m in members:
        m.batch = min(m.batch, n)
    reason = unstackable_reason(model) if stack else "stacking switched off by the caller"
    if not reason and is_model_loss(loss_fn):
        reason = "the loss runs the model itself (a ModelLoss): one forward per trial"
    groups = _groups(members, loss_fn, stacked=not reason)
    gen = torch.Generator().manual_seed(int(seed))
    largest = max(m.batch for m in members)
    recorded = [0]
    for m in members:
        m.losses.append(start)

    def batches():
        while True:
            yield None if largest >= n else torch.randperm(n, generator=gen)[:largest]

    def record(loop: LoopState, info: StepInfo) -> None:
        if info.step % record_every == 0 or info.step == steps:
            recorded.append(info.step)
            _record(groups, loss_fn, eval_data)

    def after_backward(loop: LoopState, loss: torch.Tensor) -> None:
        if distributed():
            _averaged_over_ranks(loop, loss)
        if clip_to is not None:
            for m in members:
                torch.nn.utils.clip_grad_norm_([p for p in m.model.parameters() if p.grad is not None], clip_to)

    # one backward pass of the summed losses gives every member its own gradients; each steps its own optimizer
    forks = nn.ModuleList([m.model for m in members])
    run_steps(LoopState(forks, Joint((m.optimizer, m.scheduler) for m in members)),
              lambda index: sum(_group_loss(group, stacked, loss_fn, X, y, index) for group, stacked in groups),
              batches(), steps=steps, after_step=record,
              after_backward=after_backward if distributed() or clip_to is not None else None)
    trials, timed = [], {}
    logarithmic = start > 0 and all(m.losses[-1] > 0 for m in members if math.isfinite(m.losses[-1]))
    for m in members:
        key = _computation(m)  # the same computation costs the same: timed once, so clock noise cannot rank them
        if key not in timed:  # a plain (unstacked) step on a batch of the member's size, the fastest of a few
            index = None if m.batch >= n else torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[
                :m.batch]
            timed[key] = largest_of_ranks(seconds_per_step(m.model, m.optimizer, loss_fn,
                                                  itertools.repeat(_batch(X, y, index, m.batch)),
                                                  repeats=TIMED_STEPS, warmup=1))  # one clock for every rank
        seconds = steps * timed[key] + largest_of_ranks(m.one_time)
        first, last = m.losses[0], m.losses[-1]
        decrease = first - last if math.isfinite(last) else math.nan
        gained = progress(first, last, logarithmic=logarithmic)
        trials.append(Trial(m.remedy, tuple(recorded), tuple(m.losses), decrease, seconds,
                            gained / seconds if seconds > 0 and math.isfinite(gained) else math.nan, m.note))
    ranking = ranked(trials)
    winner = next((t.remedy.name for t in ranking if math.isfinite(t.rate) and t.decrease > 0), None)
    return Trials(tuple(trials), tuple(t.remedy.name for t in ranking), winner, steps,
                  None if batch >= n else batch, not reason, reason, int(total(count_of(*eval_data))),
                  time.perf_counter() - t_start, logarithmic)


def progress(start: float, end: float, *, logarithmic: bool) -> float:
    """How far a trial lowered the loss from ``start`` to ``end``: in orders of magnitude,
    ``ln(start / end)``, when ``logarithmic`` (every trial's loss positive), else ``start - end``;
    ``nan`` for a trial that diverged."""
    if not math.isfinite(end):
        return math.nan
    return math.log(start / end) if logarithmic else start - end


def ranked(trials: Sequence[Trial]) -> list[Trial]:
    """``trials`` best first: by progress per second, those within :data:`CLOCK_NOISE` of the
    best by their decrease alone (the clock cannot separate them), diverged trials last."""
    ranking = sorted(trials, key=lambda t: -t.rate if math.isfinite(t.rate) else math.inf)
    best = ranking[0].rate if ranking else math.nan
    if not (math.isfinite(best) and best > 0):
        return ranking
    tied = [t for t in ranking if math.isfinite(t.rate) and t.rate >= (1 - CLOCK_NOISE) * best]
    return sorted(tied, key=lambda t: -t.decrease) + ranking[len(tied):]


def _averaged_over_ranks(loop: LoopState, loss: torch.Tensor) -> None:
    """Under ``torch.distributed``: every fork's gradients averaged over the ranks, as
    ``DistributedDataParallel`` does for the run itself, so the forks stay one model per remedy
    on every rank and the trials end the same everywhere."""
    grads = [p.grad for p in loop.model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world_size()
    for g, part in zip(grads, torch.split(flat, [g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def _groups(members: list[_Member], loss_fn: Callable, *, stacked: bool) -> list[tuple[list[_Member], Stack | None]]:
    """Members of one batch size together, with their :class:`~descentlab.engine.stack.Stack`
    (``None`` for a group of one), or one member per group when not ``stacked``."""
    if not stacked:
        return [([m], None) for m in members]
    sizes: dict[int, list[_Member]] = {}
    alone = []  # a member whose modules changed (an activation, an input transform) runs another forward
    for m in members:
        if m.remedy.change.changes_modules:
            alone.append(([m], None))
        else:
            sizes.setdefault(m.batch, []).append(m)
    return [(group, Stack([m.model for m in group], loss_fn) if len(group) > 1 else None)
            for group in sizes.values()] + alone


def _batch(X: Any, y: Any, index: torch.Tensor | None, size: int) -> tuple[Any, Any]:
    """The first ``size`` samples of ``index`` (``None``: all the data)."""
    part = None if index is None else index[:size]
    return take(X, part), take(y, part)


def _group_loss(group: list[_Member], stacked: Stack | None, loss_fn: Callable, X: Any, y: torch.Tensor,
                index: torch.Tensor | None) -> torch.Tensor:
    """The sum of the group's member losses on their (shared) batch: member k's gradient is its own."""
    xb, yb = _batch(X, y, index, group[0].batch)
    if stacked is None:
        return sum(apply_loss(loss_fn, m.model, xb, yb) for m in group)
    return stacked.losses(stacked.stack(), xb, yb, shared=True).sum()


@torch.no_grad()
def _record(groups: list[tuple[list[_Member], Stack | None]], loss_fn: Callable,
            data: tuple[Any, torch.Tensor]) -> None:
    """Append every member's loss on ``data`` (in eval mode; stacked groups in one vmapped pass)."""
    X, y = data
    for group, stacked in groups:
        if stacked is not None:
            values = stacked.losses(stacked.stack(), X, y, shared=True).double()
            if distributed():  # each rank's mean over its share, weighted by the share: the mean of all
                n = count_of(X, y)
                values = (EmpiricalLoss.allreduce(values * n) / total(n))
            values = values.tolist()
        else:
            values = [m.eval_loss(loss_fn, data) for m in group]
        for m, value in zip(group, values):
            m.losses.append(float(value) if math.isfinite(value) else math.nan)


def _computation(member: _Member) -> tuple:
    """What a step of ``member`` computes: its optimizer classes (through wrappers), momentum, batch size."""
    chain, optimizer = [], member.optimizer
    while optimizer is not None and len(chain) < 8:
        chain.append(type(optimizer).__name__)
        optimizer = getattr(optimizer, "base", None)
    momentum = any(g.get("momentum", 0) for g in member.optimizer.param_groups)
    return tuple(chain), momentum, member.batch


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
