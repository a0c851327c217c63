"""The stall monitor as a Lightning callback: ``StallMonitorCallback`` for ``lightning.pytorch.Trainer``.

::

    monitor = StallMonitor(F.cross_entropy, (X, y), remedies=True, apply_remedy=True)
    trainer = lightning.pytorch.Trainer(max_steps=300, callbacks=[StallMonitorCallback(monitor)])
    trainer.fit(module, loader)

The trainer's hooks become the monitor's events (:class:`~descentlab.engine.Callback`), with one
:class:`~descentlab.engine.LoopState` kept in step with the trainer: the model is the
``LightningModule`` (the monitor calls ``pl_module(x)``, its ``forward``, or runs a
:class:`~descentlab.curvature.ModelLoss`), the optimizer ``trainer.optimizers[0]``, the scheduler the
per-step one of ``trainer.lr_scheduler_configs`` on that optimizer, the batch size the loader's
times ``accumulate_grad_batches`` times the world size, the total steps
``trainer.estimated_stepping_batches``, the step ``trainer.global_step``.

* ``on_train_start`` → ``on_train_start``; ``on_train_batch_end`` → ``on_step_end`` once per
  *optimizer* step (under ``accumulate_grad_batches`` the micro-batches in between only add their
  loss, kept on its device: the step gets their mean, and the monitor reads it only at its own
  checks); ``on_validation_end`` → ``on_eval_end`` with ``trainer.callback_metrics`` (not during
  the sanity check); ``on_train_end`` → ``on_train_end``.
* **Logged through the trainer's loggers**: each stall's numbers and its verdict
  (:func:`~descentlab.integrations.bridge.stall_metrics`) go to every logger's ``log_metrics`` at
  the stall's step, its one-line summary to a TensorBoard logger's ``add_text`` (``stall/verdict``),
  and every finding to the ``descentlab.monitor`` Python logger.
* **Checkpoints** hold the monitor's state (``state_dict``), so a fit resumed with ``ckpt_path``
  has a monitor that continues where it was.
* **Requests made with the trainer's controls**: a new optimizer goes into
  ``trainer.strategy.optimizers`` (where Lightning's loop reads it every step, wrapped again as a
  ``LightningOptimizer``); a new rate is a :class:`~descentlab.engine.RemedyLR` put into
  ``trainer.strategy.lr_scheduler_configs`` at ``interval="step"`` in place of the schedulers of
  the old optimizer (a per-step scheduler of yours is *composed* inside it, its rate times the
  remedy's; an epoch-interval or plateau scheduler cannot be stepped per step, so it is *replaced*,
  and the log says so); a stop sets ``trainer.should_stop``.

What cannot be applied, and is said instead of faked: another batch size (the trainer builds its
loader from your code: the request is logged and kept in :attr:`StallMonitorCallback.not_applied`),
and changes to the model's modules (a swapped activation, standardized inputs: the monitor reports
them, since a checkpoint's ``state_dict`` does not record them). Only the first optimizer is
watched and changed. A checkpoint taken after a remedy holds the remedy's optimizer and scheduler
state, which Lightning loads into what ``configure_optimizers`` builds on resume: make the same
change there before resuming from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.types import LRSchedulerConfig

from descentlab.critical.monitor import LOGGER, StallMonitor
from descentlab.critical.sample import loader_batch_size
from descentlab.critical.stall import Stall
from descentlab.engine.callbacks import LoopState
from descentlab.integrations.bridge import BridgedCallback, MonitorBridge, dataset_size, make_monitor, stall_metrics

__all__ = ["StallMonitorCallback"]


class StallMonitorCallback(BridgedCallback, Callback):
    """A :class:`~descentlab.critical.StallMonitor` in a ``lightning.pytorch.Trainer`` (see the module docstring).

    Args:
        monitor: the monitor to drive; or ``None`` and the arguments to build one:
        loss_fn: ``loss_fn(output, target)`` or a :class:`~descentlab.curvature.ModelLoss`.
        data: the training data the monitor draws its fixed sample from (an ``(X, y)`` pair, a
            ``DataLoader``, any iterable of batches).
        **monitor_args: any other keyword argument of :class:`StallMonitor`.

    Attributes:
        monitor: the monitor (``monitor.stalls``: what it found).
        not_applied: the requests the trainer could not make, each with the reason.
    """

    def __init__(self, monitor: StallMonitor | None = None, *, loss_fn: Any = None, data: Any = None,
                 **monitor_args: Any) -> None:
        super().__init__()
        self.monitor = make_monitor(monitor, loss_fn, data, monitor_args)
        self._bridge = MonitorBridge(self.monitor)
        self._step_seen: int | None = None
        self._loss_sum: torch.Tensor | None = None  # the micro-batches' losses since the last optimizer step
        self._micro_batches = 0

    # ------------------------------------------------------------------ Lightning's hooks
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """The loop state from the trainer; the monitor's ``on_train_start``."""
        self._bridge.loop = LoopState(pl_module, n_train=dataset_size(trainer.train_dataloader),
                                      total_steps=_total_steps(trainer), changes_modules=False)
        self._sync(trainer, pl_module)
        self._step_seen = trainer.global_step
        self.monitor.on_train_start(self.loop)
        self._after_event(trainer)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """The monitor's ``on_step_end`` once the optimizer has stepped (``trainer.global_step`` moved)."""
        if self.loop is None:
            return
        loss = _loss_of(outputs)
        if loss is not None:
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._micro_batches += 1
        if trainer.global_step == self._step_seen:
            return  # a micro-batch of an accumulated step: the optimizer has not stepped
        self._step_seen = trainer.global_step
        mean = None if self._loss_sum is None else self._loss_sum / self._micro_batches
        self._loss_sum, self._micro_batches = None, 0
        self._sync(trainer, pl_module)
        self.monitor.on_step_end(self.loop, mean)
        self._after_event(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """The monitor's ``on_eval_end`` with the trainer's scalar metrics (not in the sanity check)."""
        if self.loop is None or trainer.sanity_checking:
            return
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()
                   if torch.is_tensor(value) and value.numel() == 1 or isinstance(value, (int, float))}
        self._sync(trainer, pl_module)
        self.monitor.on_eval_end(self.loop, metrics)
        self._after_event(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """The monitor's ``on_train_end``; the stalls it still finds are logged."""
        if self.loop is None:
            return
        self._sync(trainer, pl_module)
        self.monitor.on_train_end(self.loop)
        self._log_new_stalls(trainer)

    # ------------------------------------------------------------------ the loop state and the requests
    def _sync(self, trainer: Any, pl_module: Any) -> None:
        """The loop state as the trainer is now (another callback may have changed its optimizer)."""
        loop = self.loop
        loop.model, loop.step = pl_module, int(trainer.global_step)
        loop.optimizer = trainer.optimizers[0] if trainer.optimizers else None
        config = _own_config(trainer, loop.optimizer)
        loop.scheduler = None if config is None or not _per_step(config) else config.scheduler
        loop.batch_size = _batch_size(trainer)

    def _after_event(self, trainer: Any) -> None:
        """Log the new stalls; make a pending request with the trainer's controls; pass a stop on."""
        self._log_new_stalls(trainer)
        if self._bridge.applicable_request() is not None:
            self._apply(trainer)
        if self.monitor.control.should_stop and not trainer.should_stop:
            trainer.should_stop = True
            LOGGER.warning("step %d: stopping the trainer: %s", trainer.global_step, self.monitor.control.stop_reason)

    def _apply(self, trainer: Any) -> None:
        """:meth:`Control.apply <descentlab.engine.Control.apply>` on the loop state, then its
        optimizer and scheduler into the trainer's slots."""
        loop, strategy = self.loop, trainer.strategy
        old_optimizer, old_scheduler = loop.optimizer, loop.scheduler
        others = [c.scheduler for c in strategy.lr_scheduler_configs  # not the loop's: not composable per step
                  if _on(c, old_optimizer) and c.scheduler is not old_scheduler]
        self.monitor.control.apply(loop)
        request, text = self.monitor.control.applied[-1]
        notes = [text] if text else []
        if loop.optimizer is not old_optimizer:
            strategy.optimizers = [loop.optimizer, *strategy.optimizers[1:]]
        if loop.scheduler is not old_scheduler:
            new = [LRSchedulerConfig(loop.scheduler, interval="step")] if loop.scheduler is not None else []
            kept = [c for c in strategy.lr_scheduler_configs if not _on(c, old_optimizer)]
            strategy.lr_scheduler_configs = new + kept
            fate = ("ended with the old optimizer" if loop.optimizer is not old_optimizer
                    else "not stepped every step, was replaced by the remedy's rate")
            notes += [f"your {type(scheduler).__name__}, {fate}" for scheduler in others]
        LOGGER.warning("step %d: applied the remedy %r in the trainer%s", loop.step, request.name,
                       f" ({'; '.join(notes)})" if notes else "")

    def _log_new_stalls(self, trainer: Any) -> None:
        for stall in self._bridge.new_stalls():
            _log_stall(trainer, stall)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """The monitor's state (Lightning saves it in its checkpoints)."""
        return self.monitor.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (a resumed run's monitor continues where it was)."""
        self.monitor.load_state_dict(state_dict)
        self._bridge.new_stalls()  # those were logged before the checkpoint


def _log_stall(trainer: Any, stall: Stall) -> None:
    """One stall to every logger of the trainer: its numbers as metrics, its summary as text
    where the logger takes text (TensorBoard)."""
    metrics = stall_metrics(stall)
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=stall.step)
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text("stall/verdict", stall.summary(), stall.step)


def _on(config: LRSchedulerConfig, optimizer: Any) -> bool:
    """The config's scheduler sets ``optimizer``'s rate."""
    return getattr(config.scheduler, "optimizer", None) is optimizer


def _own_config(trainer: Any, optimizer: Any) -> LRSchedulerConfig | None:
    """The first scheduler config on ``optimizer``."""
    return next((config for config in trainer.lr_scheduler_configs if _on(config, optimizer)), None)


def _per_step(config: LRSchedulerConfig) -> bool:
    """Lightning steps the scheduler once per optimizer step, as a loop state's scheduler is."""
    return config.interval == "step" and config.frequency == 1 and not config.reduce_on_plateau


def _loss_of(outputs: Any) -> torch.Tensor | None:
    """The loss in ``training_step``'s output (a tensor, or a mapping's ``"loss"``), detached."""
    if isinstance(outputs, Mapping):
        outputs = outputs.get("loss")
    return outputs.detach() if torch.is_tensor(outputs) else None


def _batch_size(trainer: Any) -> int | None:
    """Samples behind one optimizer step: the loader's batch × accumulated batches × processes."""
    size = loader_batch_size(trainer.train_dataloader)
    if size is None:
        return None
    return size * int(trainer.accumulate_grad_batches) * int(trainer.world_size)


def _total_steps(trainer: Any) -> int | None:
    steps = trainer.estimated_stepping_batches
    return int(steps) if isinstance(steps, int) or (isinstance(steps, float) and steps != float("inf")) else None
