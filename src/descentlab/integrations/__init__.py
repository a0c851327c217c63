"""The stall monitor inside the trainers people use: optional adapters, one module per trainer.

``descentlab.integrations.lightning``: :class:`StallMonitorCallback` for
``lightning.pytorch.Trainer`` (``pip install descentlab[lightning]``);
``descentlab.integrations.huggingface``: :class:`StallMonitorCallback` for Hugging Face
``transformers.Trainer`` (``pip install descentlab[huggingface]``). Each turns the trainer's
hooks into the :class:`~descentlab.engine.Callback` events of a
:class:`~descentlab.critical.StallMonitor`, logs every stall through the trainer's own loggers,
and makes the monitor's requests with the trainer's own controls (its optimizer and scheduler
slots, its stop flag). Importing this package imports neither trainer.
"""
