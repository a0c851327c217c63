"""A quantity of the loss over the data at θ: the one place that loops over the data.

For a model f(·; θ), a loss ℓ and data in batches B_1..B_m of n_b samples (N in all), the
loss over the data is

    L(θ) = Σ_b w_b · ℓ_b(θ),    w_b = n_b / N  when ``loss_fn`` is a mean over its batch,
                                w_b = 1        when it is a sum,

so that L is the loss of all the data taken as one batch, whatever the batching. Everything
above this layer that is "of the loss over the data" (the loss, its gradient, Hessian and
Gauss-Newton products, landscape points) is such a weighted sum over batches, and
:class:`EmpiricalLoss` owns what they share (as curvlinops' ``_EmpiricalRisk`` and
``CurvatureLinearOperator`` do):

* **the batch loop**: batches moved to the model's device and floating dtype; one ``(X, y)``
  pair, a list, a generator (read once into a list) or a re-iterable source such as a
  ``DataLoader`` (read again on every pass, one batch in memory);
* **the data check**: a re-iterable source is fingerprinted on its first pass
  (:class:`~descentlab.curvature.batches.Fingerprint`) and checked after every later one; if
  its samples change (``drop_last=True`` with shuffling, random augmentation) every pass would
  see another function, so the pass raises ``ValueError`` naming the fix. Shuffling alone is
  accepted: the sums run over the same samples;
* **the weighting**: whether ``loss_fn`` is a mean or a sum over its batch is measured, not
  assumed: on a batch of ≥ 2 samples, ℓ(all) is compared with the size-weighted mean and with
  the sum of ℓ over its two halves. A loss that is neither (a weighted mean such as
  ``cross_entropy(weight=...)``, a loss whose samples interact) cannot be combined across
  batches exactly and is refused, unless ``reduction`` says how to combine it anyway;
* **the eval-mode policy**: every module is evaluated in eval mode, each restored to its own
  mode afterwards. Not only the known layers whose behaviour depends on ``training`` (dropout,
  batch/instance norm with running statistics, recurrent layers and attention with dropout):
  a module of the user's own reads ``self.training`` too (attention dropout written
  ``dropout_p=p if self.training else 0``), and would make every quantity random. A model that
  draws random numbers whatever its mode (``F.dropout(x, training=True)``, a sampled latent) is
  evaluated with torch's generator seeded alike at every evaluation and restored after: each
  quantity is of one fixed draw (the same at every reading and every product), and the run's own
  draws are where they were;
  :meth:`EmpiricalLoss.with_batch_statistics` gives the quantity of the function training
  differentiates instead: batch-norm layers the model trains normalise by each batch's own
  statistics (their running statistics, the user's and any copy's, untouched), and everything
  else is still in eval mode, so nothing is random;
* **sparse embeddings**: an ``nn.Embedding`` or ``nn.EmbeddingBag`` built with ``sparse=True``
  gives dense gradients for the while (the same values; products, flat vectors and
  ``torch.func`` need dense tensors), its flag restored after;
* **attention kernels**: a forward that may be differentiated (grad mode on) runs
  ``F.scaled_dot_product_attention`` on its math backend, the one kernel with a double backward
  (the flash and memory-efficient kernels have none, so a Hessian product through them fails);
  an ``nn.EmbeddingBag`` runs as an embedding lookup reduced per bag
  (:mod:`descentlab.curvature.bags`: torch has no derivative of its backward);
* **the all-reduce**: under ``torch.distributed`` every rank holds its own share of the data
  (possibly none) and every sum is all-reduced, so every rank sees the quantity of all data;
* **the parameters**: which ones (names, module prefixes or tensors), a snapshot of their
  values at construction (the point θ), ``flatten``/``unflatten`` between the flat vector
  and per-parameter tensors (the package's one flattener, :class:`descentlab.params.Layout`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from descentlab.checks import check_choice
from descentlab.errors import AdviceWarning
from descentlab.curvature.batches import Fingerprint, as_batches, batch_size, concat, take
from descentlab.curvature.bags import twice_differentiable_bags
from descentlab.curvature.losses import apply_loss, is_model_loss, one_number
from descentlab.openmp import threads_for
from descentlab.params import Layout, sparse_embeddings

__all__ = ["EmpiricalLoss", "NotPerSample", "REDUCTIONS", "UPCAST", "mode_dependent_modules", "select_parameters",
           "trains_batch_norm", "writes_its_weights"]


class NotPerSample(ValueError):
    """``loss_fn`` is neither a mean nor a sum of per-sample losses over its batch, so batches cannot
    be combined exactly (a weighted mean, samples that interact in the loss or the model)."""

#: ``reduction`` values: how ``loss_fn`` reduces over the samples of its batch.
REDUCTIONS = ("mean", "sum")
#: Parameters held in these dtypes are measured in float32: a half-precision loss is quantized
#: (bfloat16 spaces its numbers 0.0156 apart at a loss of 2.3, so a plateau test reads a flat line),
#: and a Hessian-vector product or a Lanczos run in it is noise. What the model computes in
#: training (its rounding, the steps it rounds away) is the loop's; what is measured is the loss at
#: the same point in float32, as a loop under autocast keeps its master weights.
UPCAST = (torch.float16, torch.bfloat16)

_CHANGED_DATA = (
    "data gave different samples on pass {passes} than on the first ({now} vs {first} samples, or the same count "
    "with other values): a shuffled DataLoader with drop_last=True, or random augmentation, changes the function "
    "between passes, so products would not come from one matrix. Use a fixed-order loader (shuffle=False) or "
    "drop_last=False, without random transforms, or pass a list of batches"
)


class EmpiricalLoss:
    """The loss of ``model`` over all of ``data`` at a snapshot of its parameters.

    Args:
        model: any ``nn.Module``; its device and dtype (of the first selected parameter) are used,
            float32 for a half-precision one (:data:`UPCAST`).
        loss_fn: ``loss_fn(output, target)``, the mean (or the sum, see ``reduction``) of the
            per-sample losses of a batch.
        data: one ``(X, y)`` pair, or an iterable of ``(X, y)`` batches (a ``DataLoader``).
            ``X`` may be a tuple of tensors (passed as ``model(*X)``).
        params: which parameters are the variables: ``None`` (every parameter that requires
            grad) or names, each a full parameter name (``"0.weight"``) or a module prefix
            (``"0"`` = every parameter of sub-module ``0``), or the parameter tensors
            themselves. Named parameters are used even when frozen.
        eval_mode: ``None`` (default): evaluate every module in eval mode, and warn if the
            model has modules in training mode that behave randomly there (dropout, batch-norm:
            the quantity would be random). ``True``: the same, silently. ``False``: keep every
            module's mode.
        reduction: ``None`` (default): measured on the data (see the module docstring) when
            there is more than one batch; ``"mean"`` or ``"sum"``: how ``loss_fn`` reduces, so
            batches are weighted by ``n_b / N`` or by 1.

    Raises:
        ValueError: bad arguments, no samples, a loss that is neither a mean nor a sum over
            its batch (with several batches and no ``reduction``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        data: Any,
        params: Iterable[str | torch.Tensor] | None = None,
        *,
        eval_mode: bool | None = None,
        reduction: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError("loss_fn must be callable as loss_fn(output, target), or a ModelLoss")
        if reduction is not None:
            check_choice("reduction", reduction, REDUCTIONS)
        if getattr(loss_fn, "reduction", None) == "none":
            raise ValueError("loss_fn has reduction='none': it must return one number per batch ('mean' or 'sum')")
        scripted = next((f"its module {n!r}" if n else "the model" for n, m in model.named_modules()
                         if isinstance(m, torch.jit.ScriptModule)), None)
        if scripted is not None:
            raise ValueError(f"{scripted} is a TorchScript module (torch.jit.script or trace): torch.func cannot run "
                             "it with other parameters, which every measurement here does; pass the module as it was "
                             "before scripting (it computes the same function)")
        self.model = model
        self.loss_fn = loss_fn
        self.model_loss = is_model_loss(loss_fn)
        self._select(select_parameters(model, params), {n: p for n, p in [*model.named_parameters(),
                                                                          *model.named_buffers()]})
        self._switched = _decide_eval_mode(model, eval_mode)
        self._sparse = sparse_embeddings(model)
        self._bags = [m for m in model.modules() if isinstance(m, nn.EmbeddingBag)]
        self._draws = [False]  # whether an evaluation drew random numbers (shared with the copies)
        #: batch-norm layers in training mode normalise by the batch (:meth:`with_batch_statistics`)
        self.batch_statistics = False
        self._batches = as_batches(data, stream=True, allow_empty=_distributed(), model_loss=self.model_loss)
        self._streamed = not isinstance(self._batches, list)
        self._first_pass: Fingerprint | None = None
        self._passes = 0

        probe: list[tuple[Any, Any]] = []
        n_local = n_batches = 0
        for X, y in self._pass():
            n_local += batch_size(X, y)
            n_batches += 1
            if sum(batch_size(*b) for b in probe) < 2 and len(probe) < 2:
                probe.append((X, y))
        outputs = self._probe_outputs(probe)
        votes = [0.0, 0.0, 0.0]  # mean, sum, neither
        if reduction is None and (n_batches > 1 or _distributed()):
            found = (self._measure_model_reduction(probe) if self.model_loss
                     else self._measure_reduction(outputs, [y for _, y in probe]))
            if found in _VOTE:
                votes[_VOTE[found]] = 1.0
        counts = torch.tensor([float(n_local), float(n_batches), *votes], dtype=torch.float64, device=self.device)
        counts = self.allreduce(counts).tolist()
        self.n_samples = int(counts[0])
        self.n_batches = int(counts[1])
        if self.n_samples == 0:
            raise ValueError("data has no samples")
        self.reduction = reduction or _decide_reduction(counts[2:], loss_fn)
        self._options: dict[str, Any] = {}  # the subclass options, kept for refreshed()

    def with_batch_statistics(self) -> "EmpiricalLoss":
        """The same quantity, at the same point, of the function a training step differentiates:
        every batch-norm layer the model has in training mode normalises each batch by that
        batch's own mean and variance (so a sample taken as one batch is normalised by its own
        statistics), where this one uses the running statistics. Running statistics are neither
        read nor updated (the user's buffers and this quantity's copies stay as they are), and
        every other module is in this quantity's modes, so the function is deterministic. The
        sharpness a rate meets in training is this function's: with batch statistics the loss
        is invariant to the scale of the weights before each normalisation, which the running
        statistics' function is not. Without batch-norm layers in training mode (or with
        ``eval_mode=False``, which already keeps them) it is the same function."""
        new = type(self)._sharing(self, self.names, {**self._fixed, **dict(zip(self.names, self._point))},
                                  self._options)
        new.batch_statistics = bool(self._switched)
        return new

    # ------------------------------------------------------------------ parameters
    def _select(self, names: tuple[str, ...], values: dict[str, torch.Tensor]) -> None:
        """Take ``names`` as the variables and snapshot them and everything else the model reads."""
        self.names: tuple[str, ...] = names
        chosen = set(names)
        complex_ = [n for n in names if values[n].is_complex()]
        if complex_:
            raise ValueError(f"parameter {complex_[0]!r} is complex ({values[complex_[0]].dtype}): the curvature here is "
                             "of real parameters; hold its real and imaginary parts as two real parameters "
                             "(torch.complex(re, im) in forward), the same function of the same numbers")
        #: the dtype the model holds its variables in; :attr:`dtype` is the one measured in
        self.params_dtype = values[names[0]].dtype
        # The snapshot: the quantity is taken at these values, whatever the model does next.
        self._point = tuple(_measured(values[n]) for n in names)
        self._fixed = {n: _measured(t) for n, t in values.items() if n not in chosen}
        #: how the flat vector splits into the variables (:mod:`descentlab.params`)
        self.layout = Layout(names, tuple(p.shape for p in self._point))
        self.param_shapes: tuple[torch.Size, ...] = self.layout.shapes
        self.n_params = self.layout.n_params
        self.dtype = self._point[0].dtype
        self.device = self._point[0].device

    @classmethod
    def like(cls, other: "EmpiricalLoss", params: Iterable[str | torch.Tensor] | None = None, **options: Any):
        """The same model, loss, data, weighting and point as ``other``, without reading the data again.

        ``params`` selects other variables among the model's parameters (``None``: the same
        as ``other``); every value comes from ``other``'s snapshot. ``options`` are the
        keyword arguments of ``cls`` beyond :class:`EmpiricalLoss`'s own.
        """
        values = {**other._fixed, **dict(zip(other.names, other._point))}
        names = other.names if params is None else select_parameters(other.model, params)
        return cls._sharing(other, names, values, options)

    def refreshed(self) -> "EmpiricalLoss":
        """The same quantity at the model's *current* parameter values (after optimizer steps).

        Model, loss, data, weighting, eval-mode policy, variables and options are this one's;
        the data is not read again and the model not probed, so a tracker that measures every
        few training steps pays for little beyond the products (what building the operator
        anew costs on the digits MLP is in ``bench/RESULTS.md``).
        """
        values = {n: t for n, t in [*self.model.named_parameters(), *self.model.named_buffers()]}
        return type(self)._sharing(self, self.names, values, self._options)

    def at(self, point: Sequence[torch.Tensor] | torch.Tensor) -> "EmpiricalLoss":
        """The same quantity at other values of the variables: ``point`` is a flat vector or one
        tensor per variable (in :attr:`names` order); everything else is this one's snapshot.

        For a point the model no longer holds (a run's last good parameters) without copying
        the model."""
        flat = torch.is_tensor(point) and point.ndim == 1
        if flat and point.shape != (self.n_params,):
            raise ValueError(f"point must have shape ({self.n_params},), got {tuple(point.shape)}")
        parts = self.split(point) if flat else tuple(point)
        if len(parts) != len(self.names) or any(p.shape != s for p, s in zip(parts, self.param_shapes)):
            raise ValueError("point must hold one tensor per variable, shaped like it")
        values = {**self._fixed, **{n: p.detach().to(self.device, self.dtype) for n, p in zip(self.names, parts)}}
        return type(self)._sharing(self, self.names, values, self._options)

    @classmethod
    def _sharing(cls, other: "EmpiricalLoss", names: tuple[str, ...], values: dict[str, torch.Tensor],
                 options: dict[str, Any]) -> "EmpiricalLoss":
        """A new ``cls`` on ``other``'s model, loss, data and weighting, at ``values``."""
        new = cls.__new__(cls)
        shared = ("model", "loss_fn", "model_loss", "_switched", "_sparse", "_bags", "_draws", "batch_statistics",
                  "_batches", "_streamed", "_first_pass", "_passes", "n_samples", "n_batches", "reduction", "work")
        for name in shared:
            setattr(new, name, getattr(other, name))
        new._select(names, values)
        new._options = dict(options)
        new._configure(**options)
        return new

    def _configure(self, **options: Any) -> None:
        """Subclasses set their own options here (called by ``__init__``, :meth:`like` and
        :meth:`refreshed`)."""
        if options:
            raise TypeError(f"unexpected options: {', '.join(options)}")

    @property
    def draws(self) -> bool:
        """The model drew random numbers in an evaluation of this quantity or a copy of it, whatever
        its mode (each evaluation draws alike: see the module docstring)."""
        return self._draws[0]

    @property
    def point(self) -> torch.Tensor:
        """The flat parameter values (the snapshot) at which the quantity is taken."""
        return self.flatten(self._point)

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector into ``{parameter name: tensor of that parameter's shape}``."""
        if v.shape != (self.n_params,):
            raise ValueError(f"v must have shape ({self.n_params},), got {tuple(v.shape)}")
        return self.layout.unflatten(v)

    def split(self, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The per-parameter views of a flat vector ``(n,)``, or of rows ``(b, n)`` as ``(b, *shape)``."""
        return self.layout.split(v)

    def flatten(self, tensors: Sequence[torch.Tensor | None] | Mapping[str, torch.Tensor], *,
                batch_shape: Sequence[int] = ()) -> torch.Tensor:
        """Concatenate per-parameter tensors (in ``names`` order, or a mapping by name; ``None`` is
        zero) into one vector, or rows ``(*batch_shape, n)`` from tensors ``(*batch_shape, *shape)``."""
        return self.layout.flatten(tensors, batch_shape=batch_shape, dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ the data
    def batches(self) -> Iterator[tuple[Any, Any, float]]:
        """One pass over this rank's data: ``(X, y, weight)`` on the model's device and dtype,
        ``weight`` = ``n_b / N`` (mean) or 1 (sum), ``N`` counted over all ranks. A source that
        gives other samples than on its first pass raises ``ValueError`` at the end of the pass."""
        for X, y in self._pass():
            yield X, y, self.weight(batch_size(X, y))

    def weight(self, n_b: int) -> float:
        """The weight of a batch of ``n_b`` samples in the sum over batches."""
        return n_b / self.n_samples if self.reduction == "mean" else 1.0

    def _pass(self) -> Iterator[tuple[Any, Any]]:
        print_ = Fingerprint() if self._streamed else None
        for X, y in self._batches:
            X, y = self._to_model(X), self._to_model(y)
            if print_ is not None:
                print_.add(X, y)
            yield X, y
        if print_ is None:
            return
        self._passes += 1
        if self._first_pass is None:
            self._first_pass = print_
        elif not print_.matches(self._first_pass):
            raise ValueError(_CHANGED_DATA.format(passes=self._passes, now=print_.count, first=self._first_pass.count))

    def one_batch(self) -> tuple[Any, Any]:
        """This rank's data as one ``(X, y)`` pair on the model's device and dtype (``(batch,
        None)`` for a :class:`~descentlab.curvature.losses.ModelLoss`; data held in memory only:
        a streamed source raises ``ValueError``)."""
        if self._streamed:
            raise ValueError("the data is streamed from a loader; one batch needs it in memory")
        batches = [(self._to_model(X), self._to_model(y)) for X, y in self._batches]
        if len(batches) == 1:
            return batches[0]
        return concat([b[0] for b in batches]), concat([b[1] for b in batches])

    def data(self, X: Any, y: Any) -> Any:
        """One batch as data another operator over it is built from: ``(X, y)``, or for a
        :class:`~descentlab.curvature.losses.ModelLoss` a list holding the batch (a list of
        batches: a batch that is itself a list of tensors, as a ``DataLoader`` gives, stays one)."""
        return [X] if self.model_loss else (X, y)

    def _to_model(self, t: Any) -> Any:
        if isinstance(t, dict):
            return {k: self._to_model(v) for k, v in t.items()}
        if isinstance(t, (tuple, list)):
            return type(t)(self._to_model(x) for x in t)
        if not torch.is_tensor(t):
            return t
        dtype = self.dtype if t.is_floating_point() else t.dtype
        return t.to(self.device, dtype)

    # ------------------------------------------------------------------ one batch
    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """A context in which the model has the modes the quantity is taken in (see ``eval_mode``
        and :meth:`with_batch_statistics`), and attention runs on a kernel with every derivative
        when grad mode is on (see the module docstring)."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(_switched_off(self._switched, batch_statistics=self.batch_statistics))
            stack.enter_context(_dense_gradients(self._sparse))
            stack.enter_context(_fixed_draws(self.device, self._draws))
            if torch.is_grad_enabled():
                stack.enter_context(sdpa_kernel(SDPBackend.MATH))
                stack.enter_context(twice_differentiable_bags(self._bags))
            yield

    def output(self, theta: Sequence[torch.Tensor], X: Any) -> Any:
        """The model's output on ``X`` with ``theta`` (per-parameter tensors) as the variables
        (not for a :class:`~descentlab.curvature.losses.ModelLoss`, whose batch the model reads
        its own way)."""
        if self.model_loss:
            raise ValueError("loss_fn is a ModelLoss: the model's output is not taken apart from its loss "
                             "(use loss_fn(output, target) for what needs the output, such as the GGN)")
        with self.evaluation():
            return self.bound(theta)(*(tuple(X) if isinstance(X, (tuple, list)) else (X,)))

    def bound(self, theta: Sequence[torch.Tensor]) -> Callable[..., Any]:
        """The model as a function with ``theta`` as its variables (and this quantity's snapshot
        of everything else): ``bound(theta)(x)``, ``bound(theta)(**batch)``."""
        state = {**self._fixed, **dict(zip(self.names, theta))}
        return lambda *args, **kwargs: functional_call(self.model, state, args, kwargs)

    @torch.no_grad()
    def forward(self, X: Any) -> Any:
        """The model run on batch ``X`` at the snapshot, without a graph, in this quantity's modes
        (forward hooks on the model's modules see this call as any other): its output, or for a
        :class:`~descentlab.curvature.losses.ModelLoss` the loss ``fn`` returns."""
        X = self._to_model(X)
        if self.model_loss:
            return self.batch_loss(self._point, X, None)
        return self.output(self._point, X)

    def batch_loss(self, theta: Sequence[torch.Tensor], X: Any, y: Any) -> torch.Tensor:
        """``loss_fn`` on one batch with ``theta`` as the variables (a graph if they require grad)."""
        if self.model_loss:
            with self.evaluation():
                return one_number(self.loss_fn(self.bound(theta), X))
        return one_number(self.loss_fn(self.output(theta, X), y))

    def leaves(self) -> tuple[torch.Tensor, ...]:
        """Fresh leaf tensors at the snapshot that require grad (one graph per use)."""
        return tuple(p.detach().requires_grad_(True) for p in self._point)

    # ------------------------------------------------------------------ the loss over the data
    def loss(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """The loss over all data at the flat point ``theta`` (default: the snapshot), a 0-d tensor."""
        point = self._point if theta is None else self.split(torch.as_tensor(theta).to(self.device, self.dtype))
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        with torch.no_grad(), threads_for(self.work):
            for X, y, w in self.batches():
                total += w * self.batch_loss(point, X, y)
        return self.allreduce(total)

    def live_loss(self) -> torch.Tensor:
        """The loss over all data at the model's *current* parameters, read in place: not at the
        snapshot, and without one (no copy, no functional call), in this quantity's modes. What
        a monitor reads at every check: on a small model the snapshot's copy and the functional
        call cost several times the forward pass itself (``bench/RESULTS.md``, zoo). A model that
        holds its variables in half precision is read at a float32 snapshot instead (see
        :data:`UPCAST`), and a model whose forward pass writes its own weights (an embedding with
        ``max_norm`` renormalises the rows it reads, in place) at a snapshot too: read in place, the
        rows of the samples read would be renormalised in the user's model, a step the run never
        took."""
        if self.params_dtype != self.dtype or writes_its_weights(self.model):
            return self.refreshed().loss()
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        with torch.no_grad(), threads_for(self.work):
            for X, y, w in self.batches():
                with self.evaluation():
                    total += w * apply_loss(self.loss_fn, self.model, X, y)
        return self.allreduce(total)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """``loss(theta)``: the loss as a function of the flat parameter vector."""
        return self.loss(theta)

    def loss_and_gradient(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L, ∇L)`` at the snapshot: a 0-d tensor and a flat vector, in one pass."""
        total = torch.zeros(1 + self.n_params, dtype=self.dtype, device=self.device)
        with threads_for(self.work):
            for X, y, w in self.batches():
                theta = self.leaves()
                with torch.enable_grad():
                    loss = self.batch_loss(theta, X, y)
                    grads = torch.autograd.grad(loss, theta, allow_unused=True)
                total[0] += w * loss.detach()
                total[1:].add_(self.flatten(grads), alpha=w)
        total = self.allreduce(total)
        return total[0], total[1:]

    def gradients(self, parts: Sequence[tuple[Any, Any]]) -> torch.Tensor:
        """The gradient of ``loss_fn`` on each batch ``(X, y)`` of ``parts`` at the snapshot, one row
        each: ``(len(parts), n)``, in this quantity's modes. Each row is one batch's own mean (or
        sum), not weighted or all-reduced: the rows of per-batch statistics such as the gradient
        noise (:func:`descentlab.critical.noise.gradient_noise`)."""
        rows = []
        with threads_for(self.work):
            for X, y in parts:
                theta = self.leaves()
                with torch.enable_grad():
                    loss = self.batch_loss(theta, self._to_model(X), self._to_model(y))
                    rows.append(self.flatten(torch.autograd.grad(loss, theta, allow_unused=True)))
        return torch.stack(rows)

    def losses(self, points: torch.Tensor) -> torch.Tensor:
        """The loss over all data at each row of ``points`` ``(m, n)``: ``(m,)``, all-reduced."""
        return self.allreduce(self.local_losses(points))

    def local_losses(self, points: torch.Tensor) -> torch.Tensor:
        """This rank's share of :meth:`losses` (for worker processes, which must not all-reduce).

        The model runs once per batch under ``torch.func.vmap`` over the points; a model vmap
        cannot batch (data-dependent control flow, ``.item()``) falls back, with a warning, to
        one call per point.
        """
        points = torch.as_tensor(points).to(self.device, self.dtype)
        if points.ndim != 2 or points.shape[1] != self.n_params:
            raise ValueError(f"points must have shape (m, {self.n_params}), got {tuple(points.shape)}")
        parts = self.split(points)
        total = torch.zeros(len(points), dtype=self.dtype, device=self.device)
        with torch.no_grad(), threads_for(self.work * len(points)):
            for X, y, w in self.batches():
                total.add_(self._batch_losses(parts, X, y).reshape(-1), alpha=w)
        return total

    def _batch_losses(self, parts, X, y) -> torch.Tensor:
        try:
            return torch.func.vmap(lambda *theta: self.batch_loss(theta, X, y))(*parts)
        except (RuntimeError, ValueError, NotImplementedError) as error:
            warnings.warn(f"vmap could not batch this model ({error}); evaluating one point at a time",
                          RuntimeWarning, stacklevel=4)
        return torch.stack([self.batch_loss([p[i] for p in parts], X, y).reshape(())
                            for i in range(parts[0].shape[0])])

    # ------------------------------------------------------------------ ranks
    @staticmethod
    def allreduce(t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the ranks of ``torch.distributed`` (when initialised), in place if it
        is contiguous. Gloo reduces the raw storage, so a tensor whose strides differ from the
        other ranks' (a transposed view) would be summed element by element out of order: the
        result is always a fresh contiguous tensor of the same shape on every rank."""
        if _distributed():
            t = t.contiguous()
            torch.distributed.all_reduce(t)
        return t

    def _probe_outputs(self, probe: list[tuple[Any, Any]]) -> list[Any]:
        """The model's outputs on the first batch(es) at the snapshot; sets ``work``, the FLOPs
        of the first batch's forward (2 x each parameter's size x the positions it is applied
        at, from its module's output: exact for linear and convolution layers), which decides
        how many threads a product gets (:func:`descentlab.openmp.threads_for`)."""
        flops = [0.0]

        def count(module, inputs, output):
            own = [p for p in module.parameters(recurse=False)]
            if own and torch.is_tensor(output) and own[0].ndim > 0:
                positions = output.numel() / max(1, own[0].shape[0])
                flops[0] += 2.0 * sum(p.numel() for p in own) * positions

        outputs = []
        with torch.no_grad():
            for i, (X, _) in enumerate(probe):
                handles = [m.register_forward_hook(count) for m in self.model.modules()] if i == 0 else []
                try:
                    outputs.append(self.batch_loss(self._point, X, None) if self.model_loss
                                   else self.output(self._point, X))
                finally:
                    for handle in handles:
                        handle.remove()
        self.work = flops[0]
        return outputs

    def _measure_reduction(self, outs: list[Any], ys: list[Any]) -> str:
        """``"mean"``, ``"sum"``, ``"neither"`` or ``"unknown"``: how ``loss_fn`` reduces over
        samples, from this rank's first batch(es) at the snapshot (see the module docstring)."""
        if not outs:
            return "unknown"
        if not all(torch.is_tensor(t) and t.ndim > 0 for t in (*outs, *ys)):
            return "unknown"
        try:
            out, y = torch.cat(outs), torch.cat(ys)
        except RuntimeError:  # batches of different shapes (sequences of other lengths)
            return "unknown"
        if len(out) < 2 or len(y) != len(out):
            return "unknown"
        found = _reduction_of(self.loss_fn, out, y)
        if found == "ambiguous":  # every loss ~0 (a perfect fit): move the outputs off it
            gen = torch.Generator().manual_seed(0)
            noise = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device, out.dtype)
            try:
                found = _reduction_of(self.loss_fn, out + noise * (out.abs().mean() + 1), y)
            except Exception:  # a loss that takes only some outputs (probabilities): keep the convention
                found = "unknown"
        return "unknown" if found == "ambiguous" else found

    def measured_reduction(self) -> str:
        """How ``loss_fn`` reduces over the samples of a batch, measured on this rank's data held
        as one batch at the snapshot (its loss whole and in two halves, as the batches' weighting
        is measured): ``"mean"``, ``"sum"``, ``"neither"`` or ``"unknown"`` (a batch the loss
        cannot be read in halves). :attr:`reduction` is how batches are combined, measured only
        where there are several; this is measured whatever the batching."""
        X, y = self.one_batch()
        if self.model_loss:
            return self._measure_model_reduction([(X, y)])
        return self._measure_reduction([self.forward(X)], [y])

    def _measure_model_reduction(self, probe: list[tuple[Any, Any]]) -> str:
        """As :meth:`_measure_reduction`, for a :class:`~descentlab.curvature.losses.ModelLoss`:
        its ``fn`` on the first batch of two or more samples, whole and in two halves."""
        batch = next((X for X, _ in probe if batch_size(X) >= 2), None)
        if batch is None:
            return "unknown"
        n = batch_size(batch)
        h = n // 2
        try:
            with torch.no_grad():
                whole, first, second = (float(self.batch_loss(self._point, take(batch, part), None))
                                        for part in (slice(None), slice(0, h), slice(h, None)))
        except Exception:  # a batch the model cannot read in halves (a fixed-size input): keep the convention
            return "unknown"
        found = _classify_reduction(whole, first, second, h, n, self.dtype)
        return "unknown" if found == "ambiguous" else found


# ---------------------------------------------------------------------- helpers
_VOTE = {"mean": 0, "sum": 1, "neither": 2}


def writes_its_weights(model: nn.Module) -> bool:
    """Whether ``model``'s forward pass changes its own weights: an embedding with ``max_norm``."""
    return any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.max_norm is not None for m in model.modules())


def _reduction_of(loss_fn: Callable, out: torch.Tensor, y: torch.Tensor) -> str:
    """Compare ℓ(all) with the size-weighted mean and with the sum of ℓ over the two halves."""
    n, h = len(out), len(out) // 2
    with torch.no_grad():
        whole, first, second = (float(loss_fn(out[s], y[s])) for s in (slice(None), slice(0, h), slice(h, None)))
    return _classify_reduction(whole, first, second, h, n, out.dtype if out.is_floating_point() else None)


def _classify_reduction(whole: float, first: float, second: float, h: int, n: int, dtype: torch.dtype | None) -> str:
    """A mean, a sum or neither, from the loss of a batch of ``n`` and of its halves ``h, n - h``."""
    scale = max(abs(whole), abs(first), abs(second))
    if not scale > 0 or scale == float("inf"):
        return "ambiguous"
    # the two candidates differ by a factor ~n/2 >= 1; the tolerance only has to cover rounding
    # of a mean or sum of n terms in the model's dtype
    tol = max(1e-6, 1e3 * torch.finfo(dtype).eps) * scale if dtype is not None else 1e-6 * scale
    is_mean = abs(whole - (h * first + (n - h) * second) / n) <= tol
    is_sum = abs(whole - (first + second)) <= tol
    if is_mean and is_sum:
        return "ambiguous"
    return "mean" if is_mean else "sum" if is_sum else "neither"


def _decide_reduction(votes: list[float], loss_fn: Callable) -> str:
    mean, total, neither = votes
    if neither or (mean and total):
        raise NotPerSample(
            "loss_fn is neither a mean nor a sum of per-sample losses over its batch (checked by splitting a batch "
            "in two: a weighted mean such as cross_entropy(weight=...), or samples that interact), so batches "
            "cannot be combined exactly; pass the data as one batch, or reduction='mean' (or 'sum') to weight "
            "batches by their size (or by 1) anyway"
        )
    if total:
        return "sum"
    if mean:
        return "mean"
    return "sum" if getattr(loss_fn, "reduction", None) == "sum" else "mean"


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def select_parameters(model: nn.Module, params) -> tuple[str, ...]:
    """The names of the parameters ``params`` selects (see :class:`EmpiricalLoss`), in the model's order."""
    named = dict(model.named_parameters())
    if not named:
        raise ValueError("model has no parameters")
    if params is None:
        names = tuple(n for n, p in named.items() if p.requires_grad)
        if not names:
            raise ValueError("no parameter of the model requires grad; pass params= to choose some")
        return names
    if isinstance(params, (str, torch.Tensor)):
        params = [params]
    by_id = {id(p): n for n, p in named.items()}
    chosen: list[str] = []
    for item in params:
        if torch.is_tensor(item):
            if id(item) not in by_id:
                raise ValueError("params contains a tensor that is not a parameter of the model")
            found = [by_id[id(item)]]
        elif isinstance(item, str):
            found = [n for n in named if n == item or n.startswith(item + ".")]
            if not found:
                raise ValueError(f"params: no parameter or module named {item!r} (parameters: {', '.join(named)})")
        else:
            raise ValueError(f"params must hold names or parameter tensors, got {type(item).__name__}")
        chosen += [n for n in found if n not in chosen]
    if not chosen:
        raise ValueError("params selects no parameter")
    order = list(named)
    return tuple(sorted(chosen, key=order.index))


def mode_dependent_modules(model: nn.Module) -> list[nn.Module]:
    """The sub-modules whose output depends on ``training``: dropout with p > 0, batch and
    instance norm that keep running statistics, recurrent layers and attention with dropout."""
    found = []
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            random = m.p > 0
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            random = m.track_running_stats
        elif isinstance(m, (nn.RNNBase, nn.MultiheadAttention)):
            random = m.dropout > 0
        else:
            random = False
        if random:
            found.append(m)
    return found


def trains_batch_norm(model: nn.Module) -> bool:
    """Some batch-norm layer of ``model`` is in training mode: a training step normalises by the
    batch there, so its function is :meth:`EmpiricalLoss.with_batch_statistics`'s, not eval mode's."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def _measured(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` to measure with: float32 for a half-precision tensor (:data:`UPCAST`)."""
    return t.detach().float() if t.dtype in UPCAST else t.detach().clone()


def _decide_eval_mode(model: nn.Module, eval_mode: bool | None) -> list[nn.Module]:
    """The modules to switch to eval mode while evaluating: every one (the quantity is the one
    of the model as it is now, in eval mode, whatever it is later switched to; a module of the
    user's own may read ``training`` too), or none with ``eval_mode=False``."""
    if eval_mode is False:
        return []
    training = [m for m in mode_dependent_modules(model) if m.training]
    if eval_mode is None and training:
        names = ", ".join(sorted({type(m).__name__ for m in training}))
        warnings.warn(AdviceWarning(
            f"the model has {names} in training mode, which makes the quantity random; evaluating those in eval "
            "mode", "call model.eval() first to silence this, or pass eval_mode=False to keep training mode"),
            stacklevel=4,
        )
    return list(model.modules())


#: What torch's generator is seeded with for every evaluation (see :func:`_fixed_draws`).
DRAW_SEED = 0


@contextlib.contextmanager
def _fixed_draws(device: torch.device, drew: list[bool]):
    """Torch's generator (the CPU's, and ``device``'s where it is a GPU) seeded with
    :data:`DRAW_SEED` for the while and restored after: a model that draws random numbers in every
    forward pass is one function of its parameters, and the run's generator is left as it was
    (``torch.random.fork_rng`` does the same at ~40x the cost: a small model is evaluated at every
    check). ``drew[0]`` becomes ``True`` where a generator moved."""
    generators = [torch.default_generator]
    if device.type == "cuda":
        generators.append(torch.cuda.default_generators[device.index if device.index is not None
                                                        else torch.cuda.current_device()])
    states = [g.get_state() for g in generators]
    for g in generators:
        g.manual_seed(DRAW_SEED)
    try:
        yield
    finally:
        if not drew[0]:
            drew[0] = any(not torch.equal(g.get_state(), _seeded(g)) for g in generators)
        for g, state in zip(generators, states):
            g.set_state(state)


_SEEDED: dict[Any, torch.Tensor] = {}


def _seeded(generator: torch.Generator) -> torch.Tensor:
    """``generator``'s state just after ``manual_seed(DRAW_SEED)`` (read once per generator)."""
    key = (generator.device.type, generator.device.index)
    if key not in _SEEDED:
        saved = generator.get_state()
        generator.manual_seed(DRAW_SEED)
        _SEEDED[key] = generator.get_state()
        generator.set_state(saved)
    return _SEEDED[key]


@contextlib.contextmanager
def _dense_gradients(embeddings: list[nn.Module]):
    """``sparse=False`` on ``embeddings`` for the while, each restored to its own flag after."""
    saved = [m.sparse for m in embeddings]
    for m in embeddings:
        m.sparse = False
    try:
        yield
    finally:
        for m, flag in zip(embeddings, saved):
            m.sparse = flag


@contextlib.contextmanager
def _switched_off(modules: list[nn.Module], *, batch_statistics: bool = False):
    """Set ``training=False`` on ``modules`` (each by its own flag, not through its children), and
    restore each one's own flag. With ``batch_statistics``, the batch-norm layers among them that
    were in training mode stay there with ``track_running_stats`` off for the while: they
    normalise by the batch and neither read nor update running statistics."""
    saved = [m.training for m in modules]
    norms = [m for m, training in zip(modules, saved)
             if batch_statistics and training and isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracking = [m.track_running_stats for m in norms]
    for m in modules:
        m.training = False
    for m in norms:
        m.training, m.track_running_stats = True, False
    try:
        yield
    finally:
        for m, training in zip(modules, saved):
            m.training = training
        for m, track in zip(norms, tracking):
            m.track_running_stats = track
