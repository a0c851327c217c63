"""The two forms a loss takes: ``loss_fn(output, target)`` on ``(X, y)`` batches, and a loss that
runs the model itself, ``ModelLoss(fn)`` with ``fn(model, batch)`` on batches of any form.

The first is the textbook one: ``F.cross_entropy(model(X), y)``. The second is what language
models and models that compute their own loss need: a batch of token ids whose targets are the
same tokens shifted, a Hugging Face batch ``{"input_ids", "attention_mask", "labels"}`` passed as
``model(**batch).loss``, several inputs and a mask. Everything above :mod:`descentlab.curvature`
takes either: the data layer (:class:`~descentlab.curvature.EmpiricalLoss`) evaluates ``fn`` with
the model bound to the parameters it is taken at, so Hessian products, the stall monitor and
the landscape work the same way; only what needs the model's output apart from its loss (the
Gauss-Newton matrix) needs the first form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from descentlab.curvature.batches import as_batches, batch_size, call

__all__ = ["ModelLoss", "is_model_loss", "apply_loss", "one_number", "as_data", "read_batches", "token_cross_entropy",
           "per_batch"]


class ModelLoss:
    """A loss that runs the model: ``fn(model, batch)``, a scalar, the mean (or sum) over the
    batch's samples.

    Args:
        fn: called with the model (a callable: ``model(x)``, ``model(**batch)``) and one batch as
            the data gives it (a tensor, a tuple, a dict).

    Example, a character-level language model on batches of token ids ``(B, T + 1)``::

        loss = ModelLoss(lambda model, tokens: token_cross_entropy(model(tokens[:, :-1]), tokens[:, 1:]))

    and a Hugging Face model on its own batches: ``ModelLoss(lambda model, batch: model(**batch).loss)``.
    """

    def __init__(self, fn: Callable[[Any, Any], torch.Tensor]) -> None:
        if not callable(fn):
            raise ValueError("fn must be callable as fn(model, batch)")
        self.fn = fn
        #: ``fn`` differentiates inside itself (adversarial inputs, a physics-informed residual,
        #: a gradient penalty), so it runs with gradients on even where its value alone is read
        self.needs_grad = False

    def __call__(self, model: Any, batch: Any) -> torch.Tensor:
        """``fn(model, batch)``. Where gradients are off (a value read without a graph) and ``fn``
        fails for want of one, it runs again with them on and its value is detached: the
        gradients it takes are of its own inputs, never left on the model's parameters."""
        if torch.is_grad_enabled():
            return self.fn(model, batch)
        if self.needs_grad:
            with torch.enable_grad():
                return self.fn(model, batch).detach()
        try:
            return self.fn(model, batch)
        except RuntimeError as error:
            try:
                with torch.enable_grad():
                    value = self.fn(model, batch).detach()
            except Exception:
                raise error from None
            self.needs_grad = True
            return value

    def __repr__(self) -> str:
        return f"ModelLoss({getattr(self.fn, '__name__', type(self.fn).__name__)})"


def is_model_loss(loss_fn: Any) -> bool:
    """``loss_fn`` runs the model itself (:class:`ModelLoss`)."""
    return isinstance(loss_fn, ModelLoss)


def apply_loss(loss_fn: Any, model: Any, X: Any, y: Any) -> torch.Tensor:
    """One batch's loss in either form: ``loss_fn(model, X)`` for a :class:`ModelLoss` (``X`` is
    the whole batch), else ``loss_fn(model(X), y)``."""
    return one_number(loss_fn(model, X) if isinstance(loss_fn, ModelLoss) else loss_fn(call(model, X), y))


class _PerBatch:
    """``loss_fn(output, target)``, a sum over its batch, divided by the samples it is given and
    times ``size`` (see :func:`per_batch`)."""

    reduction = "mean"  # what it is now: batches of any size combine by their size

    def __init__(self, loss_fn: Callable[[Any, Any], torch.Tensor], size: int) -> None:
        self.loss_fn, self.size = loss_fn, int(size)

    def __call__(self, output: Any, target: Any) -> torch.Tensor:
        return self.loss_fn(output, target) * (self.size / batch_size(output, target))


class _ModelPerBatch:
    """:class:`_PerBatch` for the ``fn(model, batch)`` of a :class:`ModelLoss`."""

    def __init__(self, fn: Callable[[Any, Any], torch.Tensor], size: int) -> None:
        self.fn, self.size = fn, int(size)

    def __call__(self, model: Any, batch: Any) -> torch.Tensor:
        return self.fn(model, batch) * (self.size / batch_size(batch))


def per_batch(loss_fn: Any, size: int) -> Any:
    """``loss_fn``, which sums over its batch, as the loss a batch of ``size`` samples sums to on
    average: on ``n`` samples, ``loss_fn · size / n``. A measurement over a sample of another size
    than the loop's batches then reads the loss, gradient and curvature each step of the loop
    differentiates (over the sample as it is, ``n / size`` times them). A :class:`ModelLoss`
    stays one."""
    if is_model_loss(loss_fn):
        scaled = ModelLoss(_ModelPerBatch(loss_fn.fn, size))
        scaled.needs_grad = loss_fn.needs_grad
        return scaled
    return _PerBatch(loss_fn, size)


def one_number(value: Any) -> torch.Tensor:
    """A batch's loss as a 0-d tensor: ``loss_fn`` must give one number for the batch (a loss of
    shape ``(1,)`` is taken as that number); per-sample losses (``reduction="none"``) are a
    ``ValueError`` saying so, not a shape error deep inside a sum."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"loss_fn must return a tensor (the batch's loss); it returned {type(value).__name__}")
    if value.numel() != 1:
        raise ValueError(f"loss_fn must return one number for the batch (its mean, as reduction='mean' gives); "
                         f"it returned a tensor of shape {tuple(value.shape)}")
    return value.reshape(())


def as_data(loss_fn: Any, X: Any, y: Any) -> Any:
    """One batch as data for ``loss_fn``: the pair ``(X, y)``, or for a :class:`ModelLoss` a list
    holding the batch ``X`` (unambiguous whatever the batch is: a list of tensors, as a
    ``DataLoader`` gives, is one batch there, not several)."""
    return [X] if isinstance(loss_fn, ModelLoss) else (X, y)


def read_batches(loss_fn: Any, data: Any) -> list:
    """``data`` read once into a list of batches in the form ``loss_fn`` takes them (``(X, y)``
    pairs, or the batches themselves for a :class:`ModelLoss`): every later pass over the list
    sees the same data in the same order, and it can be handed to any operator as its data."""
    batches = as_batches(data, model_loss=is_model_loss(loss_fn))
    return [X if is_model_loss(loss_fn) else (X, y) for X, y in batches]


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy of per-position logits ``(..., V)`` against token ids ``(...)``, the mean over
    every position (``F.cross_entropy`` wants the classes in dimension 1; a language model gives
    them last)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index)
