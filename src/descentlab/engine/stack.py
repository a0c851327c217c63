"""K models of one architecture evaluated as one: stacked parameters, one vmapped forward.

Every parameter of the K members is stacked along a new leading dimension ``[K, ...]`` and one
``torch.func.vmap`` of ``torch.func.functional_call`` evaluates all of them, each member on its
own batch (inputs ``[K, B, ...]``) or all on one shared batch. Member k's output and loss depend
only on slice k of every stacked tensor, so the gradient of the *sum* of the member losses at
slice k is exactly member k's gradient: one backward pass trains K models.

The stacked tensors come in two kinds, for the two ways the project trains members:

- :meth:`Stack.stack`: ``torch.stack`` of the members' live parameters, differentiable, so the
  gradient lands on each model's own parameters and each member keeps its *own* optimizer
  (remedy trials: any optimizer, wrappers and state included);
- :meth:`Stack.leaves`: detached copies as new leaf tensors, for *one* optimizer over the
  stacked tensors (ensembles: exact when the optimizer is element-wise), in blocks of members
  (a param group per learning rate), joined again for the forward by :meth:`Stack.join`.

A model with buffers (batch norm) or dropout cannot be stacked (:func:`unstackable_reason`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from descentlab.params import sparse_embeddings

__all__ = ["Stack", "unstackable_reason"]

Params = Mapping[str, torch.Tensor]


def unstackable_reason(model: nn.Module) -> str:
    """Why ``model`` cannot be vmapped as a member of a :class:`Stack` ('' when it can): buffers
    (batch-norm statistics) would have to be updated per member, which a stacked forward cannot
    do; dropout's random masks would differ from those of a separate run; torch's fused
    recurrent kernels (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) have no ``vmap`` batching rule; and an
    embedding built with ``sparse=True`` gives a sparse gradient, which a stacked weight's cannot be."""
    if any(True for _ in model.buffers()):
        return "the model has buffers (e.g. batch-norm statistics) that a stacked forward cannot update"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
        return "the model uses dropout, whose random masks differ between a stacked and a separate run"
    if any(isinstance(m, nn.RNNBase) for m in model.modules()):
        return "the model has a recurrent layer (nn.LSTM, nn.GRU, nn.RNN), which torch.func.vmap cannot batch"
    if sparse_embeddings(model):
        return "the model has an embedding with sparse=True, whose sparse gradient a stacked weight cannot take"
    return ""


class Stack:
    """K same-architecture models (see the module docstring).

    Args:
        models: the members, in the order of every ``[K, ...]`` row; the first is the skeleton
            :func:`~torch.func.functional_call` runs (its own parameters are never read).
        loss_fn: ``loss_fn(output, target)`` of one member, a scalar (for :meth:`losses` and
            :meth:`total_loss`).

    Raises:
        ValueError: no models, a model :func:`unstackable_reason` refuses, or models whose
            parameters differ in names, shapes or dtypes.
    """

    def __init__(self, models: Sequence[nn.Module], loss_fn: Callable[[Any, Any], torch.Tensor] | None = None) -> None:
        self.models = tuple(models)
        if not self.models:
            raise ValueError("models must not be empty")
        reason = unstackable_reason(self.models[0])
        if reason:
            raise ValueError(f"models: cannot stack them: {reason}")
        layout = _layout(self.models[0])
        if any(_layout(m) != layout for m in self.models[1:]):
            raise ValueError("models must share one architecture (parameter names, shapes and dtypes)")
        self.names = tuple(name for name, _, _ in layout)
        self.skeleton = self.models[0]
        self.loss_fn = loss_fn
        self._flat: bool | None = None
        self._outputs = {False: vmap(self._output), True: vmap(self._output, in_dims=(0, None))}
        self._losses = {False: vmap(self._loss), True: vmap(self._loss, in_dims=(0, None, None))}

    def __len__(self) -> int:
        return len(self.models)

    # ------------------------------------------------------------------ stacking
    def stack(self) -> dict[str, torch.Tensor]:
        """``[K, ...]`` per parameter name, stacked from the members' current parameters with
        ``torch.stack``: differentiable, so a backward pass fills each model's own ``.grad``."""
        params = [dict(m.named_parameters()) for m in self.models]
        return {name: torch.stack([p[name] for p in params]) for name in self.names}

    def leaves(self, sizes: Sequence[int] | None = None) -> list[dict[str, torch.Tensor]]:
        """Copies of the members' parameters as new stacked leaf tensors (``requires_grad``), one
        dict per block of consecutive members (``sizes``: members per block, default one block
        of all): one optimizer steps them, a param group per block."""
        sizes = [len(self)] if sizes is None else [int(s) for s in sizes]
        if any(s < 1 for s in sizes) or sum(sizes) != len(self):
            raise ValueError(f"sizes must be positive and add up to {len(self)} members, got {sizes}")
        blocks, start = [], 0
        for size in sizes:
            stacked, _ = stack_module_state(list(self.models[start:start + size]))
            blocks.append({name: stacked[name].detach().clone().requires_grad_(True) for name in self.names})
            start += size
        return blocks

    @staticmethod
    def join(blocks: Sequence[Params]) -> Params:
        """Blocks of :meth:`leaves` as one ``[K, ...]`` per name (differentiable concatenation;
        one block is returned as it is)."""
        if len(blocks) == 1:
            return blocks[0]
        return {name: torch.cat([block[name] for block in blocks]) for name in blocks[0]}

    def unstack(self, params: Params) -> list[dict[str, torch.Tensor]]:
        """Member k's parameters (row k of every stacked tensor, detached copies), k = 0..K-1:
        ``model.load_state_dict(rows[k])`` puts them into a model of the architecture."""
        return [{name: params[name][k].detach().clone() for name in self.names} for k in range(len(self))]

    # ------------------------------------------------------------------ evaluating
    def outputs(self, params: Params, inputs: Any, *, shared: bool = False) -> torch.Tensor:
        """Every member's output, ``[K, ...]``: member k on ``inputs[k]`` (``shared=False``;
        inputs ``[K, B, ...]``) or every member on the same ``inputs`` (``shared=True``).
        Inputs that are a tuple or list are the model's several arguments."""
        return self._outputs[bool(shared)](params, inputs)

    def losses(self, params: Params, inputs: Any, target: Any, *, shared: bool = False) -> torch.Tensor:
        """Every member's loss ``loss_fn(output_k, target_k)``, ``[K]`` (``shared``: as in
        :meth:`outputs`, the target shared too)."""
        self._need_loss()
        return self._losses[bool(shared)](params, inputs, target)

    def total_loss(self, params: Params, inputs: Any, target: Any, *, shared: bool = False) -> torch.Tensor:
        """The sum of the member losses (its gradient at slice k is member k's gradient).

        Where ``loss_fn`` is a mean of per-example losses, ``Σ_k mean_k = K · mean over all K·B
        examples``, and one plain ``loss_fn`` call on all the outputs is much cheaper than a
        vmapped one. Whether this *flat* form agrees with the vmapped sum is checked once, on
        the first batch (a tolerance from the dtype); where it does not, the vmapped sum is used.
        """
        self._need_loss()
        if self._flat is None:
            self._flat = self._flat_agrees(params, inputs, target, shared)
        if not self._flat:
            return self.losses(params, inputs, target, shared=shared).sum()
        return self._flat_total(params, inputs, target, shared)

    # ------------------------------------------------------------------ parts
    def _output(self, params: Params, inputs: Any) -> torch.Tensor:
        args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        return functional_call(self.skeleton, params, args)

    def _loss(self, params: Params, inputs: Any, target: Any) -> torch.Tensor:
        return self.loss_fn(self._output(params, inputs), target)

    def _need_loss(self) -> None:
        if self.loss_fn is None:
            raise ValueError("loss_fn: this Stack was made without one")

    def _flat_total(self, params: Params, inputs: Any, target: Any, shared: bool) -> torch.Tensor:
        out = self.outputs(params, inputs, shared=shared)
        target = target.expand(out.shape[0], *target.shape) if shared else target
        return self.loss_fn(out.reshape(-1, *out.shape[2:]), target.reshape(-1, *target.shape[2:])) * out.shape[0]

    def _flat_agrees(self, params: Params, inputs: Any, target: Any, shared: bool) -> bool:
        with torch.no_grad():
            exact = self.losses(params, inputs, target, shared=shared).sum()
            fast = self._flat_total(params, inputs, target, shared)
        tol = 1e-4 if exact.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-10
        return bool(torch.isfinite(exact) and torch.allclose(fast, exact, rtol=tol, atol=tol))


def _layout(model: nn.Module) -> list[tuple[str, torch.Size, torch.dtype]]:
    return [(name, p.shape, p.dtype) for name, p in model.named_parameters()]
