"""The stall monitor as a Hugging Face ``TrainerCallback``: ``StallMonitorCallback`` for ``transformers.Trainer``.

::

    monitor = StallMonitor(ModelLoss(lambda model, batch: model(**batch).loss), batches,
                           remedies=True, apply_remedy=True)
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    trainer.add_callback(StallMonitorCallback(monitor, trainer=trainer))
    trainer.train()

The trainer's events become the monitor's (:class:`~descentlab.engine.Callback`), with one
:class:`~descentlab.engine.LoopState` kept in step with the trainer: the model the callback is
passed, the optimizer inside the trainer's ``AcceleratedOptimizer`` (the torch optimizer that steps,
whose type decides the stability limit), its ``lr_scheduler``, the batch size
``args.train_batch_size × gradient_accumulation_steps × world_size``, the total steps
``state.max_steps``, the step ``state.global_step``.

* ``on_train_begin`` → ``on_train_start``; ``on_step_end`` (after each optimizer step, not the
  accumulated micro-steps) → ``on_step_end``; ``on_evaluate`` → ``on_eval_end`` with the
  evaluation's metrics; ``on_train_end`` → ``on_train_end``.
* **The loss.** A ``TrainerCallback`` is not passed the step's loss, so the monitor gets none and
  sees a non-finite loss at its own next check of its tracked loss (every ``window // 5`` steps):
  it is then diagnosed as ``diverged`` and training stops. The trainer zeroes the gradients
  before ``on_step_end``, so the monitor's alarm on a growing gradient norm, which reads the loop's
  own gradients, does not fire here; the plateau test and the diagnoses are unaffected.
* **Logged through the trainer's log**: each stall's numbers and its verdict
  (:func:`~descentlab.integrations.bridge.stall_metrics`) go through ``trainer.log``, so
  ``state.log_history`` and every ``report_to`` integration (TensorBoard, W&B, MLflow, ...) get
  them, and every finding goes to the ``descentlab.monitor`` Python logger.
* **Requests made with the trainer's controls**: ``Trainer`` reads ``trainer.optimizer`` and
  ``trainer.lr_scheduler`` at every step, and a callback is passed only the objects, which cannot
  be replaced in place. So the callback needs the trainer itself (``trainer=``): a new rate is a
  :class:`~descentlab.engine.RemedyLR` set as ``trainer.lr_scheduler`` (your scheduler composed
  inside it where the remedy is relative: its rate times the remedy's), a new optimizer is
  prepared by the trainer's ``accelerator`` and set as ``trainer.optimizer`` (with a constant
  ``RemedyLR`` when the remedy has no schedule, since the trainer steps a scheduler every step),
  and the callback handler is pointed at both. A stop sets ``control.should_training_stop``.

What cannot be applied, and is said instead of faked: without ``trainer=``, any request (the
stalls then go to ``state.log_history`` only, not to the ``report_to`` integrations); another
batch size (the trainer builds its loader from ``args``); changes to the model's modules (the
monitor reports them). Requests not made are logged and kept in
:attr:`StallMonitorCallback.not_applied`. A checkpoint taken after a remedy holds the remedy's
optimizer and scheduler state, which ``resume_from_checkpoint`` loads into the trainer's own:
make the same change (``optimizers=(optimizer, scheduler)``) before resuming from it. The
monitor's own state is not in the trainer's checkpoints: a resumed run starts with a fresh monitor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from accelerate.optimizer import AcceleratedOptimizer
from transformers import TrainerCallback

from descentlab.critical.monitor import LOGGER, StallMonitor
from descentlab.critical.stall import Stall
from descentlab.engine.callbacks import LoopState
from descentlab.engine.changes import RemedyLR
from descentlab.integrations.bridge import BridgedCallback, MonitorBridge, dataset_size, make_monitor, stall_metrics

__all__ = ["StallMonitorCallback"]

#: Why a request is not made when the callback has no trainer.
NO_TRAINER = ("the callback has no trainer to set the new optimizer or scheduler on: "
              "create it as StallMonitorCallback(monitor, trainer=trainer)")


class StallMonitorCallback(BridgedCallback, TrainerCallback):
    """A :class:`~descentlab.critical.StallMonitor` in a Hugging Face ``Trainer`` (see the module docstring).

    Args:
        monitor: the monitor to drive; or ``None`` and the arguments to build one:
        trainer: the ``Trainer`` whose optimizer and scheduler the monitor's requests replace,
            and whose ``log`` the stalls go through (add the callback with
            ``trainer.add_callback``); ``None``: requests are reported, not made.
        loss_fn: ``loss_fn(output, target)`` or a :class:`~descentlab.curvature.ModelLoss`
            (``ModelLoss(lambda model, batch: model(**batch).loss)`` for a model that returns its loss).
        data: the training data the monitor draws its fixed sample from (a ``DataLoader`` or a
            list of batches, as the model takes them).
        **monitor_args: any other keyword argument of :class:`StallMonitor`.

    Attributes:
        monitor: the monitor (``monitor.stalls``: what it found).
        trainer: the trainer, or ``None``.
        not_applied: the requests not made, each with the reason.
    """

    def __init__(self, monitor: StallMonitor | None = None, *, trainer: Any = None, loss_fn: Any = None,
                 data: Any = None, **monitor_args: Any) -> None:
        self.monitor = make_monitor(monitor, loss_fn, data, monitor_args)
        self.trainer = trainer
        self._bridge = MonitorBridge(self.monitor)

    # ------------------------------------------------------------------ the trainer's events
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """The loop state from the trainer; the monitor's ``on_train_start``."""
        loader = kwargs.get("train_dataloader")
        self._bridge.loop = LoopState(kwargs["model"], n_train=dataset_size(loader), total_steps=int(state.max_steps),
                                      batch_size=args.train_batch_size * args.gradient_accumulation_steps
                                      * args.world_size, changes_modules=False)
        self._sync(state, kwargs)
        self.monitor.on_train_start(self.loop)
        return self._after_event(state, control)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """After an optimizer step (and the scheduler's): the monitor's ``on_step_end``."""
        if self.loop is None:
            return control
        self._sync(state, kwargs)
        self.monitor.on_step_end(self.loop, None)
        return self._after_event(state, control)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None,
                    **kwargs: Any) -> Any:
        """The monitor's ``on_eval_end`` with the evaluation's numbers."""
        if self.loop is None:
            return control
        self._sync(state, kwargs)
        numbers = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        self.monitor.on_eval_end(self.loop, numbers)
        return self._after_event(state, control)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """The monitor's ``on_train_end``; the stalls it still finds are logged."""
        if self.loop is None:
            return control
        self._sync(state, kwargs)
        self.monitor.on_train_end(self.loop)
        self._log_new_stalls(state)
        return control

    # ------------------------------------------------------------------ the loop state and the requests
    def _sync(self, state: Any, objects: Mapping[str, Any]) -> None:
        """The loop state as the trainer is now."""
        loop = self.loop
        loop.step = int(state.global_step)
        if objects.get("model") is not None:
            loop.model = objects["model"]
        loop.optimizer = _torch_optimizer(objects.get("optimizer"))
        loop.scheduler = objects.get("lr_scheduler")

    def _after_event(self, state: Any, control: Any) -> Any:
        """Log the new stalls; make a pending request with the trainer; pass a stop on."""
        self._log_new_stalls(state)
        if self._bridge.applicable_request(None if self.trainer is not None else NO_TRAINER) is not None:
            self._apply()
        if self.monitor.control.should_stop and not control.should_training_stop:
            control.should_training_stop = True
            LOGGER.warning("step %d: stopping the trainer: %s", state.global_step, self.monitor.control.stop_reason)
        return control

    def _apply(self) -> None:
        """:meth:`Control.apply <descentlab.engine.Control.apply>` on the loop state, then its
        optimizer and scheduler set on the trainer (and its callback handler)."""
        loop, trainer = self.loop, self.trainer
        old_optimizer, old_scheduler = loop.optimizer, loop.scheduler
        self.monitor.control.apply(loop)
        request, text = self.monitor.control.applied[-1]
        if loop.optimizer is not old_optimizer:
            trainer.optimizer = trainer.accelerator.prepare_optimizer(loop.optimizer)
        if loop.scheduler is None:  # the trainer steps a scheduler every step
            loop.scheduler = RemedyLR(loop.optimizer, base_lrs=[float(g["lr"]) for g in loop.optimizer.param_groups])
        if loop.scheduler is not old_scheduler:
            trainer.lr_scheduler = loop.scheduler
        trainer.callback_handler.optimizer = trainer.optimizer
        trainer.callback_handler.lr_scheduler = trainer.lr_scheduler
        LOGGER.warning("step %d: applied the remedy %r in the trainer%s", loop.step, request.name,
                       f" ({text})" if text else "")

    def _log_new_stalls(self, state: Any) -> None:
        for stall in self._bridge.new_stalls():
            self._log_stall(state, stall)

    def _log_stall(self, state: Any, stall: Stall) -> None:
        """One stall through ``trainer.log`` (its history and every ``report_to`` integration);
        without a trainer, into ``state.log_history`` only."""
        metrics = stall_metrics(stall)
        if self.trainer is not None:
            self.trainer.log(metrics)
        else:
            state.log_history.append({**metrics, "step": state.global_step})


def _torch_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside the trainer's ``AcceleratedOptimizer``."""
    return optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer

