"""What the stall monitor remembers of a run: the tracked loss, its best point, the rate's peak,
the parameters at the last two readings of it and the gradient norms.

The tracked loss is the loss on the monitor's fixed sample at every check that reads it. The
best one's parameters are kept (a copy, updated in place) as the *last good point*: where a run whose
loss becomes non-finite is diagnosed. The largest rate seen and the step since which the rate
has been ~0 decide the ``no_learning_rate`` verdict. The parameters of the check before the
last give each layer's relative update (``‖ΔW‖ / ‖W‖`` per step), and the loop's own gradient
norms (read from ``.grad`` at every step on the device, no extra pass, and their smallest and
largest read at each check) show a gradient that grows, or spikes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from descentlab.critical.verdicts import LR_ZERO

__all__ = ["RunHistory", "SECOND_NEAR"]

#: A second check whose batches are at least this share of the tracked loss still reads them as a
#: sample of the data (their mean over 10 steps varies by ~10 %): the first check's excess above 1
#: was the loss's scale or its fall within the first interval.
SECOND_NEAR = 0.5


class RunHistory:
    """The tracked losses of a run and its best point (see the module docstring).

    Attributes:
        tracked: ``(step, loss)`` at every check that read it.
        initial, best, best_step, best_lr: the first finite tracked loss, the lowest, its step and
            the rate then.
        best_params: the trainable parameters at ``best_step`` (copies), or ``None``.
        peak_lr: the largest rate of the optimizer's first group seen at a check, or when the
            monitor was given the optimizer (:meth:`attached_at`).
        first_lr: that rate at the first check (a rate above it is rising: a warm-up).
        last_lr, rose_at, fell_at: that rate at the last check, and the last checks at which it was
            above and below the check's before (``None``: never).
        rate_at: the last check the rate was read at (``rose_at`` there: :attr:`rising`).
        lr_zero_since: the first check since which the rate has been ~0 (``None``: it is not).
        batch_losses: ``(step, the mean of the losses the loop passed since the check before, the
            tracked loss)`` at every check that read both: batches drawn from the data have, on
            average, the data's loss (cleared by the monitor where its remedy shuffled them: the
            ratio is measured again on the shuffled batches).
        stepped_elsewhere: the share of the trainable entries that the monitor's optimizer does not
            hold and that moved between its first two checks (another optimizer steps them: a
            sparse embedding's ``SparseAdam`` beside the rest's ``Adam``); ``None``: none seen.
        restarted_at: the step from which the record is another model's (:meth:`restart`;
            ``None``: one model all along).
    """

    def __init__(self) -> None:
        self.tracked: list[tuple[int, float]] = []
        self.initial: float | None = None
        self.best: float | None = None
        self.best_step: int | None = None
        self.best_lr: float | None = None
        self.best_params: list[torch.Tensor] | None = None
        self.peak_lr: float | None = None
        self.first_lr: float | None = None
        self.last_lr: float | None = None
        self.rate_at: int | None = None
        self.rose_at: int | None = None
        self.fell_at: int | None = None
        self.lr_zero_since: int | None = None
        self.latest: list[torch.Tensor] | None = None  # the parameters at the last check
        self.latest_step: int | None = None
        self.before: list[torch.Tensor] | None = None  # ... and at the check before it
        self.before_step: int | None = None
        # the parameters' norms and sums one step after the last check, and one step after the check
        # before it: weights equal at two checks may have moved in between (:meth:`moved_after`)
        self.after: list[torch.Tensor] | None = None
        self.since_before: list[torch.Tensor] | None = None
        self.grad_norms: list[tuple[int, float, float]] = []  # (step, smallest, largest) since the last check
        self.batch_losses: list[tuple[int, float, float]] = []
        self.batch_samples: int | None = None  # the samples the last interval's batches held
        self.stepped_elsewhere: float | None = None
        self.restarted_at: int | None = None

    def observe(self, step: int, value: float, model: nn.Module, lr: float | None) -> None:
        """Record the tracked loss ``value`` at ``step`` (with the rate then, ``None`` without an optimizer)."""
        self.tracked.append((int(step), float(value)))
        params = [p.detach() for p in model.parameters() if p.requires_grad]
        self.since_before, self.after = self.after, None
        if self.latest is not None and [t.shape for t in self.latest] == [p.shape for p in params]:
            with torch.no_grad():
                if self.before is None:
                    self.before = [t.clone() for t in self.latest]
                else:
                    torch._foreach_copy_(self.before, self.latest)
                torch._foreach_copy_(self.latest, params)
            self.before_step = self.latest_step
        else:
            self.latest, self.before, self.before_step = [p.clone() for p in params], None, None
        self.latest_step = int(step)
        self.observe_rate(step, lr)
        if not math.isfinite(value):
            return
        if self.initial is None:
            self.initial = float(value)
        if self.best is None or value < self.best:
            self.best, self.best_step, self.best_lr = float(value), int(step), lr
            if self.best_params is None or [t.shape for t in self.best_params] != [p.shape for p in params]:
                self.best_params = [p.clone() for p in params]
            else:
                with torch.no_grad():
                    torch._foreach_copy_(self.best_params, params)

    def observe_after(self, model: nn.Module) -> None:
        """The parameters' norms and sums at the first step after a check, kept on their device (read
        only where :meth:`moved_after` is asked, after the next check; two passes over the weights a
        window)."""
        params = [p.detach() for p in model.parameters() if p.requires_grad]
        self.after = _fingerprint(params) if params else None

    def moved_after(self) -> list[bool] | None:
        """For each parameter, whether it changed from the first step after the check before to the
        last check (its norm or its sum); ``None`` where that was not read."""
        start, latest = self.since_before, self.latest
        if start is None or latest is None or len(start) != 2 * len(latest):
            return None
        same = [torch.equal(a, b) for a, b in zip(start, _fingerprint(latest))]
        return [not (norm and total) for norm, total in zip(same[:len(latest)], same[len(latest):])]

    def returned(self) -> bool:
        """Whether a parameter is equal at the last two checks though it moved in between: a cycle
        whose period divides the steps between the checks (a full-batch rate past its limit settles
        into a 2-cycle, exact to the bit on some CPUs; on one, the weight exact and its bias drifting
        by one rounding a window), no still weights."""
        moved = self.moved_after()
        if moved is None or self.before is None:
            return False
        return any(step and torch.equal(a, b) for step, a, b in zip(moved, self.before, self.latest))

    def attached_at(self, lr: float | None) -> None:
        """The rate the optimizer had when the monitor was given it, before the first check (``None``:
        no optimizer yet): part of the rate's peak (a scheduler that cuts the rate at every step, as
        ``ReduceLROnPlateau`` with ``patience=0`` fed noisy batch losses does, has it at 1e-9 of its
        start by the first check, and a peak read at the checks alone would never see the start)."""
        if lr is not None:
            self.peak_lr = lr if self.peak_lr is None else max(self.peak_lr, lr)

    def observe_rate(self, step: int, lr: float | None) -> None:
        """Record the rate at ``step`` (``None``: no optimizer): its peak, and since when it is ~0."""
        if lr is None:
            return
        if self.first_lr is None:
            self.first_lr = lr
        if self.last_lr is not None and lr > self.last_lr:
            self.rose_at = int(step)
        elif self.last_lr is not None and lr < self.last_lr:
            self.fell_at = int(step)
        self.last_lr, self.rate_at = lr, int(step)
        self.peak_lr = lr if self.peak_lr is None else max(self.peak_lr, lr)
        if lr > LR_ZERO * self.peak_lr:
            self.lr_zero_since = None
        elif self.lr_zero_since is None:
            self.lr_zero_since = int(step)

    @property
    def rising(self) -> bool:
        """The rate rose at the last check it was read at (a schedule raising it now: a warm-up)."""
        return self.rose_at is not None and self.rose_at == self.rate_at

    def rolled_back(self) -> None:
        """The run was put back to its best point at a lower rate: what it saw since (its rates,
        the gradient norms and batch losses of the steps that diverged, the parameters at the last
        checks) is no longer its own; the rate's peak restarts from the next one observed."""
        self.peak_lr, self.lr_zero_since = None, None
        self.grad_norms.clear()
        self.batch_losses.clear()
        self.latest = self.latest_step = self.before = self.before_step = None
        self.after = self.since_before = None

    def restart(self, step: int) -> None:
        """Another model from ``step`` on (the loop changed its parameters): its losses, best point,
        parameters and gradients start afresh, and the tracked losses before ``step`` stay in
        :attr:`tracked` as the record, not as this model's (:attr:`restarted_at`). The rate's record
        stays: the optimizer is the same."""
        self.restarted_at = int(step)
        self.initial = self.best = self.best_step = self.best_lr = None
        self.best_params = self.latest = self.latest_step = self.before = self.before_step = None
        self.after = self.since_before = None
        self.grad_norms.clear()
        self.batch_losses.clear()
        self.batch_samples = self.stepped_elsewhere = None

    def forget_gradients(self) -> None:
        """The loop's gradient norms so far measured something it no longer steps with (sums over
        steps, before the ``zero-grad`` remedy): forgotten, so growth is measured afresh."""
        self.grad_norms.clear()

    def observe_gradient(self, step: int, low: float, high: float) -> None:
        """Record the smallest and the largest gradient norm the loop had over the steps up to ``step``
        since the last check."""
        self.grad_norms.append((int(step), float(low), float(high)))

    def observe_batches(self, step: int, batch_loss: float, tracked: float, samples: int | None = None) -> None:
        """Record the mean loss the loop's batches had over the steps up to ``step`` since the last
        check, beside the tracked loss there, and how many samples those batches held (``None``:
        not known)."""
        self.batch_losses.append((int(step), float(batch_loss), float(tracked)))
        self.batch_samples = samples

    def batch_record(self) -> dict[str, float] | None:
        """The loop's batch losses against the tracked loss (:attr:`batch_losses`): the latest mean batch
        loss and tracked loss, the first check's ratio of the two, and ``ratio``, the larger of the last two
        checks' ratios over that first one (a loss the loop scales, a sum or a mean, or in training mode
        with dropout, keeps its ratio from the start); ``None`` before three checks have read both;
        ``samples``, what the last interval's batches held. Where the first ratio is above 1 and the second
        check's is smaller but at least :data:`SECOND_NEAR`, the second is the first: a loss that fell
        steeply over the first interval (from 8,000 at a large initialisation to 2.7 by step 10) has a mean
        of its batches far above the tracked loss at the interval's end, which no later interval repeats;
        batches already far below the data at the second check (one batch repeated: 1.55, then 0.073) are
        fitted, and the first ratio stands."""
        if len(self.batch_losses) < 3:
            return None
        _, batch0, tracked0 = self.batch_losses[0]
        recent = [batch / tracked for _, batch, tracked in self.batch_losses[-2:] if tracked > 0]
        if not (batch0 > 0 and tracked0 > 0) or len(recent) < 2:
            return None
        first = batch0 / tracked0
        _, batch1, tracked1 = self.batch_losses[1]
        second = batch1 / tracked1 if tracked1 > 0 else math.nan
        if first > 1 and SECOND_NEAR <= second < first:  # batches above the data at the first check (the loss's
            first = second  # scale, or a fall within the first interval), and near it or above it at the second
        _, batch, tracked = self.batch_losses[-1]
        return {"batch_loss": batch, "tracked": tracked, "first_ratio": first, "ratio": max(recent) / first,
                "samples": self.batch_samples}

    def loss_record(self, value: float | None) -> dict[str, float | None]:
        """``value``, the best and the initial tracked loss (the ``minimum`` verdict's evidence),
        and the rate at the best (a loss a rate rise threw up: ``unstable``)."""
        return {"value": value, "best": self.best, "initial": self.initial, "best_lr": self.best_lr}

    def state_dict(self) -> dict[str, Any]:
        """Plain data and the best parameters' tensors."""
        return {"tracked": [list(t) for t in self.tracked], "initial": self.initial, "best": self.best,
                "best_step": self.best_step, "best_lr": self.best_lr, "best_params": self.best_params,
                "peak_lr": self.peak_lr,
                "first_lr": self.first_lr, "last_lr": self.last_lr, "rose_at": self.rose_at, "fell_at": self.fell_at,
                "rate_at": self.rate_at,
                "lr_zero_since": self.lr_zero_since, "latest": self.latest,
                "latest_step": self.latest_step,
                "before": self.before, "before_step": self.before_step,
                "grad_norms": [list(g) for g in self.grad_norms],
                "batch_losses": [list(b) for b in self.batch_losses], "batch_samples": self.batch_samples,
                "restarted_at": self.restarted_at}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.tracked = [(int(step), float(value)) for step, value in state["tracked"]]
        self.initial, self.best, self.best_step = state["initial"], state["best"], state["best_step"]
        self.best_params, self.best_lr = state["best_params"], state.get("best_lr")
        self.peak_lr, self.lr_zero_since = state["peak_lr"], state["lr_zero_since"]
        self.first_lr = state.get("first_lr")
        self.last_lr, self.rose_at, self.fell_at = state.get("last_lr"), state.get("rose_at"), state.get("fell_at")
        self.rate_at = state.get("rate_at")
        self.latest, self.latest_step = state.get("latest"), state.get("latest_step")
        self.before, self.before_step = state.get("before"), state.get("before_step")
        self.grad_norms = [(int(s), float(low), float(high)) for s, low, high in state.get("grad_norms", [])]
        self.batch_losses = [(int(s), float(b), float(t)) for s, b, t in state.get("batch_losses", [])]
        self.batch_samples = state.get("batch_samples")
        self.restarted_at = state.get("restarted_at")


def _fingerprint(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor's norm and sum: a step changes one or the other (a 2-cycle's w -> -w keeps the
    norm; cross-entropy's last layer under SGD keeps the sum)."""
    return [*torch._foreach_norm(params), *(p.sum() for p in params)]
