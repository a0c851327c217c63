"""The diagnosis at a stall: evidence on the data layer, a verdict, the remedy trials.

A :class:`Diagnoser` holds the monitor's fixed sample of the training data (and all of it,
where it is in memory) and measures every quantity through the one data layer,
:class:`~descentlab.curvature.EmpiricalLoss`: the tracked loss, the gradient, the gradient
noise, the Hessian's extremes, the loss along the escape direction. The data layer evaluates
the model functionally at a snapshot of its parameters and buffers, with dropout and
batch-norm in eval mode, so measuring leaves the model as it was: parameters, buffers
(batch-norm statistics), training flags. The remedy trials train forks of the model and its
optimizer; they run under :func:`torch.random.fork_rng`, so torch's global generator is where
it was too. Only an escape step (:meth:`Diagnoser.escape`) changes the model, and only when
asked.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, replace
from typing import Any

import torch
from torch import nn

from descentlab.critical.diagnosis import (FULL_DATA_LIMIT, batches_evidence, examine, examine_divergence,
                                          look_evidence, lowest_direction, standardized_rate)
from descentlab.critical.escape import Escape, escape
from descentlab.critical.history import RunHistory
from descentlab.critical.options import DiagnosisOptions
from descentlab.critical.plateau import Trend
from descentlab.critical.product_check import CHECK_SAMPLES, PRODUCTS_AGREE, check_products, weight_normed
from descentlab.critical.remedies import ROLLBACK_ABOVE, remedies_for
from descentlab.critical.sample import first_batch, fixed_sample, in_memory_batches, in_memory_pair, order_evidence
from descentlab.critical.stall import Stall
from descentlab.critical.trials import Trials, run_trials
from descentlab.critical.verdicts import (biased, bounded, decide_without_curvature, mixed, quoted, shrunk,
                                          unpaired)
from descentlab.critical.layer_signals import first_floating
from descentlab.critical.mixing import MIXING_SAMPLES, per_sample_forward, sample_mixing
from descentlab.critical.output_floor import last_bounded, output_bound
from descentlab.critical.pairing import target_pairing
from descentlab.curvature import EmpiricalLoss, HessianOperator
from descentlab.curvature.empirical import NotPerSample, trains_batch_norm, writes_its_weights
from descentlab.curvature.losses import is_model_loss, per_batch
from descentlab.curvature.batches import batch_size as count_of
from descentlab.curvature.batches import move, take
from descentlab.engine.model_changes import InputStandardizer, reinitialize
from descentlab.params import sparse_embeddings
from descentlab.ranks import distributed, smallest, summed, total

__all__ = ["Diagnoser", "plain", "RECENT_CHECKS", "ALARMS"]

#: The reasons a stall is diagnosed at once, without a plateau: the gradient grew, the loss bounced.
ALARMS = ("growth", "bounce")
#: The loop's gradient norms at this many recent checks are evidence (their growth, their median).
RECENT_CHECKS = 10
#: Before the first diagnosis, one is expected to cost this many Hessian-vector products on the
#: samples it reads, one product timed on the tracked samples (Lanczos at both ends, 10-40
#: products; the stability test; the gradient, its noise and the layers' signals, a few more; a
#: ResNet's saddle took ~70: 42 s at 0.6 s a product on 128 images). Only the first diagnosis
#: is expected this way; the next ones from the last one's measured cost.
DIAGNOSIS_PRODUCTS = 60
#: Whether the loss sums over its batch is measured on this many samples of the fixed sample.
REDUCTION_SAMPLES = 16


class Diagnoser:
    """Evidence, verdict and trials on a fixed sample of ``data`` (see the module docstring).

    Args:
        loss_fn: ``loss_fn(output, target)``, a mean (or sum) over its batch.
        data: the training data: one ``(X, y)`` pair or an iterable of batches.
        sample_size: samples in the fixed sample (``None``: all).
        options: what a diagnosis measures and does.
        seed: seeds the sample, Lanczos, the probes, the noise batches and the trials.
    """

    def __init__(self, loss_fn: Callable, data: Any, *, sample_size: int | None, options: DiagnosisOptions,
                 seed: int = 0) -> None:
        self.loss_fn = loss_fn
        self.options = options
        self.seed = int(seed)
        self.model_loss = is_model_loss(loss_fn)
        self.sample, self.n_data = fixed_sample(data, sample_size, seed, model_loss=self.model_loss)
        self._data = data  # read again only to tell a loss that fails on taken samples (_cut_batch_error)
        self.order = order_evidence(data, self.sample, model_loss=self.model_loss)  # a loader read in order
        self._local_n_data = self.n_data if distributed() and self.n_data is not None else None
        self._full_batches = in_memory_batches(data, FULL_DATA_LIMIT, sample_size, model_loss=self.model_loss)
        # what trials draw their batches from: all the data in memory, else (a loader) the sample
        self.train_data = in_memory_pair(data, FULL_DATA_LIMIT, model_loss=self.model_loss)
        self.trials_on_sample = self.train_data is None
        if self.trials_on_sample:
            self.train_data = (self.sample, None) if self.model_loss else self.sample
        self._sample_loss: tuple[EmpiricalLoss, int] | None = None  # (the loss, its samples)
        self._full_loss: EmpiricalLoss | None = None
        self.v0: torch.Tensor | None = None  # the last stall's eigenvectors: the next Lanczos' warm start
        self.last_cost: float | None = None  # seconds of the last diagnosis that computed a Hessian ...
        self._last_size: int | None = None  # ... and the samples it read
        #: the samples of the fixed sample the loss is tracked on, and a diagnosis reads (the first
        #: ones: smaller samples are prefixes of larger ones); the monitor sizes both to its budget
        self.held = count_of(*((self.sample, None) if self.model_loss else self.sample))
        self.tracked_size = self.size = self.held
        self._tracked: tuple[EmpiricalLoss, int] | None = None
        self._forward: float | None = None  # seconds per sample of the tracked loss's forward pass
        self._product: float | None = None  # ... and of a Hessian-vector product (timed once, see expected_cost)
        # the model checked, its products' error (or what torch cannot differentiate twice) and its gradient's
        # unsteadiness (products_wrong)
        self._products: tuple[nn.Module, float | str | None, float | None] | None = None

    def forget_model(self) -> None:
        """The loop's model changed its parameters: the losses built on the old ones, their
        timings, the last eigenvectors and the products' check are not the new model's."""
        self._sample_loss = self._tracked = self._full_loss = self._products = None
        self.v0 = self.last_cost = self._last_size = self._forward = self._product = None

    @property
    def sample_data(self) -> Any:
        """The fixed sample as data for the operators: the ``(X, y)`` pair, or for a loss that runs
        the model a list holding the one batch (so a batch that is a list of tensors stays one)."""
        return [self.sample] if self.model_loss else self.sample

    def first(self, size: int) -> Any:
        """The first ``size`` samples of the fixed sample, as :attr:`sample_data` is."""
        if size >= self.held:
            return self.sample_data
        part = slice(0, size)
        return [take(self.sample, part)] if self.model_loss else (take(self.sample[0], part), take(self.sample[1], part))

    # ------------------------------------------------------------------ the data layer
    def sample_loss(self, model: nn.Module) -> EmpiricalLoss:
        """The loss over the first :attr:`size` samples of the fixed sample at ``model``'s current
        parameters (built once per size, then refreshed: the data is not read again). The first
        call moves the sample (and the data kept in memory) to the model's device, once, so no
        check copies it again."""
        self._sample_loss = self._over(self._sample_loss, model, self.size)
        return self._sample_loss[0]

    def _over(self, built: tuple[EmpiricalLoss, int] | None, model: nn.Module,
              size: int, *, refresh: bool = True) -> tuple[EmpiricalLoss, int]:
        """``(loss, size)``: the loss ``built`` refreshed at the model's parameters (as it is with
        ``refresh=False``, for a reader of the live model), or built anew on the first ``size``
        samples."""
        if built is not None and built[0].model is model and built[1] == size:
            return (built[0].refreshed() if refresh else built[0]), size
        if self._local_n_data is not None:  # the whole job's training set (each rank holds a share)
            self.n_data = int(total(self._local_n_data))
            self._local_n_data = None
        device = next(model.parameters()).device
        self.sample, self.train_data = move(self.sample, device), move(self.train_data, device)
        self._full_batches = move(self._full_batches, device)
        try:
            return _loss_over(model, self.loss_fn, self.first(size)), size
        except Exception as error:
            raise _cut_batch_error(error, model, self.loss_fn, self._data) from error

    def full_loss(self, model: nn.Module) -> EmpiricalLoss | None:
        """The loss over all the training data at ``model``'s current parameters, where it is in
        memory (``None`` otherwise)."""
        if self._full_batches is None:
            return None
        if self._full_loss is None or self._full_loss.model is not model:
            self._full_loss = _loss_over(model, self.loss_fn, self._full_batches)
        else:
            self._full_loss = self._full_loss.refreshed()
        return self._full_loss

    def tracked_loss(self, model: nn.Module) -> float:
        """The loss on the first :attr:`tracked_size` samples of the fixed sample now (its forward
        pass is timed: what a diagnosis of a given size is expected to cost follows from it)."""
        started = time.perf_counter()
        self._tracked = self._over(self._tracked, model, self.tracked_size, refresh=False)
        value = float(self._tracked[0].live_loss())  # the model as it is: no snapshot to take
        per_sample = (time.perf_counter() - started) / self.tracked_size
        self._forward = per_sample if self._forward is None else min(per_sample, 2 * self._forward)
        return value

    def look_cost(self) -> float:
        """Seconds :meth:`look` is expected to take: a gradient of the tracked samples,
        three of their forward passes."""
        return 3.0 * (self._forward or 0.0) * self.tracked_size

    @property
    def forward_seconds(self) -> float | None:
        """Seconds per sample of the tracked loss's forward pass (``None`` before the first)."""
        return self._forward

    def sizes(self, least: int = 0) -> list[int]:
        """The sizes a diagnosis may read, largest first: the whole fixed sample, halved down to
        :attr:`tracked_size` or ``least``, whichever is more (at most the whole sample)."""
        floor = min(self.held, max(self.tracked_size, int(least)))
        out = [self.held]
        while out[-1] // 2 > floor:
            out.append(out[-1] // 2)
        return out + ([floor] if floor < out[-1] else [])

    def sample_gradient_norm(self, model: nn.Module) -> float:
        """``||∇L||`` of the loss on the fixed sample now."""
        return float(self.sample_loss(model).loss_and_gradient()[1].norm())

    # ------------------------------------------------------------------ diagnoses
    def diagnose(self, model: nn.Module, history: RunHistory, *, optimizer: Any = None, batch_size: int | None = None,
                 n_data: int | None = None, total_steps: int | None = None, step: int, reason: str = "loss",
                 trend: Trend | None = None, at: int | None = None, step_seconds: float = 0.0,
                 trials_fit: Callable[[float], bool] = lambda expected: True,
                 afford: Callable[[int], bool] | None = None) -> Stall:
        """The stall at ``model``'s current parameters: its verdict and evidence, at a saddle the
        loss along the escape direction, and (with ``options.remedies``) the remedy trials if
        ``trials_fit(expected seconds)``, expecting ``step_seconds`` per trial step (the run's
        own). ``afford(products)`` is asked before each costly stage, once the verdicts that need
        none are ruled out; ``False`` gives a stall ``"skipped (budget)"`` with the evidence so
        far. The model is not changed (see :meth:`escape`)."""
        t0 = time.perf_counter()
        sample = self.sample_loss(model)
        tracked = self.tracked_loss(model)  # on the plateau test's sample: comparable with the history's losses
        try:
            wrong = self.products_wrong(model)
            if wrong is not None:  # the verdicts that need no product only
                allowed = afford
                afford = lambda products: products == 0 and (allowed is None or allowed(0))  # noqa: E731
            finding = examine(sample, full=self.full_loss(model), optimizer=optimizer, batch_size=batch_size,
                              n_data=n_data if n_data is not None else self.n_data, peak_lr=history.peak_lr,
                              lr_zero_since=history.lr_zero_since, total_steps=total_steps,
                              first_lr=history.first_lr, rate_rising=history.rising, options=self.options,
                              v0=self.v0, seed=self.seed, afford=afford, step_test=reason not in ALARMS,
                              **self._read(history, tracked))
            point = finding.point
            evidence = dict(finding.evidence)
            if trend is not None:
                evidence["plateau"] = trend.to_dict()
            if finding.verdict is None:
                status = "skipped (budget)" if wrong is None else f"failed: {wrong}"
                products = {"error": self._products[1], "unsteady": self._products[2], "agree_within": PRODUCTS_AGREE}
                return Stall(step, tracked, (evidence.get("gradient") or {}).get("norm"), reason, status,
                             evidence=plain({**evidence, "products": products}), seconds=time.perf_counter() - t0)
            fields: dict[str, Any] = {}
            if point is not None:
                fields = dict(kind=point.kind, degenerate=bool(point.degenerate),
                              min_eigenvalue=float(point.min_eigenvalue), max_eigenvalue=float(point.max_eigenvalue),
                              minimum_ratio=float(point.minimum_ratio), eigenvalues=_floats(point.eigenpairs.values),
                              spectrum=None if point.spectrum is None else _floats(point.spectrum), point=point)
                if point.method == "lanczos":
                    self.v0 = point.eigenpairs.vectors.detach().clone()
            stall = Stall(step, tracked, (evidence.get("gradient") or {}).get("norm"), reason, "diagnosed",
                          finding.verdict, finding.remedy, plain(evidence), diagnosed_at=step if at is None else at,
                          **fields)
            direction = lowest_direction(point) if stall.verdict == "saddle" else None
            if direction is not None and self.options.slice_radius > 0:
                stall = replace(stall, **self._slice(sample, direction))
            if self.options.remedies:
                lost = (history.best_params is not None and history.best is not None and history.best > 0
                        and tracked >= ROLLBACK_ABOVE * history.best and not distributed())
                record, result = self._trials(stall, model, optimizer, batch_size, step_seconds, trials_fit,
                                              restore=history.best_params if lost else None,
                                              elsewhere=history.stepped_elsewhere)
                stall = replace(stall, trials=record, trial_result=result)
        except Exception as error:  # a diagnosis must never kill the training run
            stall = Stall(step, tracked, None, reason, f"failed: {type(error).__name__}: {error}")
        seconds = time.perf_counter() - t0
        if (stall.evidence or {}).get("curvature") is not None:  # what the next Hessian will cost
            self.last_cost, self._last_size = seconds, self.size
        return replace(stall, seconds=seconds)

    def _read(self, history: RunHistory, tracked: float) -> dict[str, Any]:
        """:func:`_from_history`, the loader's order (:attr:`order`) beside the batches' record."""
        read = _from_history(history, tracked)
        if self.order is not None:
            read["batches"] = {**(read["batches"] or {}), "order": self.order}
        return read

    def look(self, model: nn.Module, history: RunHistory, tracked: float, *,
             optimizer: Any = None) -> tuple[str | None, float | None]:
        """A look at the network now (:func:`~descentlab.critical.diagnosis.look_evidence` on the
        tracked samples, the routine's own; the tracked loss ``tracked`` against the history's):
        the cause it shows in the optimizer's weight decay (with ``optimizer``), the network or its
        inputs (``None``: none), which a diagnosis on its own samples confirms, and the tracked
        samples' gradient norm."""
        self._tracked = self._over(self._tracked, model, self.tracked_size)
        evidence = look_evidence(self._tracked[0], **self._read(history, tracked), optimizer=optimizer)
        return decide_without_curvature(evidence), evidence["layers"]["gradient_norm"]

    def samples_apart(self, model: nn.Module) -> bool:
        """Whether the model and the loss keep the samples apart on the first
        :data:`~descentlab.critical.mixing.MIXING_SAMPLES` tracked samples
        (:func:`~descentlab.critical.verdicts.mixed`, :func:`~descentlab.critical.verdicts.unpaired`):
        forward passes of at most that many samples and, twice, of half of them, no gradient of the
        model. ``True`` for a loss the model computes itself (``loss_fn(model, batch)``: no outputs
        to read)."""
        self._tracked = self._over(self._tracked, model, self.tracked_size)
        loss = self._tracked[0]
        if loss.model_loss:
            return True
        X, y = take(loss.one_batch(), slice(0, MIXING_SAMPLES))
        forward = per_sample_forward(loss)
        with preserved_rng(model):  # a forward pass that draws noise leaves torch's generator as it was
            out = forward(X)
            mixing, pairing = sample_mixing(forward, X, whole=out), target_pairing(loss.loss_fn, out, y)
        layers = {"mixing": None if mixing is None else asdict(mixing),
                  "pairing": None if pairing is None else asdict(pairing)}
        return not (mixed({"layers": layers}) or unpaired({"layers": layers}))

    def floor_holds(self, model: nn.Module) -> bool:
        """Whether a bound built into the model's outputs holds the tracked samples' loss on its
        floor (:func:`~descentlab.critical.verdicts.bounded`, ``layers.outputs`` of
        :func:`~descentlab.critical.output_floor.output_bound`): one forward pass, no gradient, as
        training computes it for a model that trains batch-norm. ``False`` for a loss the model
        computes itself (no outputs to read)."""
        self._tracked = self._over(self._tracked, model, self.tracked_size)
        loss = self._tracked[0]
        if loss.model_loss:
            return False
        if trains_batch_norm(model):
            loss = loss.with_batch_statistics()
        X, y = loss.one_batch()
        with preserved_rng(model), torch.no_grad(), last_bounded(loss.model) as last:
            found = output_bound(loss.forward(X), y, loss.loss_fn, last[0])
        return bounded({"layers": {"outputs": None if found is None else asdict(found)}})

    def batches_confirmed(self, model: nn.Module, history: RunHistory, tracked: float) -> bool:
        """Whether the batches' record, which reads biased on its own, still does beside the data's
        loss as training computes it, batch-norm on the batch's statistics, on the tracked samples
        (:func:`~descentlab.critical.diagnosis.batches_evidence`, the check the look and the
        examination make: one forward pass, asked before a diagnosis is). ``True`` at once for a
        model that does not train batch-norm."""
        if not trains_batch_norm(model):
            return True
        self._tracked = self._over(self._tracked, model, self.tracked_size)
        loss = history.loss_record(tracked)
        return biased({"batches": batches_evidence(history.batch_record(), loss, self._tracked[0]), "loss": loss})

    def sums(self, model: nn.Module) -> bool:
        """Whether ``loss_fn`` sums over its batch, measured on the first
        :data:`REDUCTION_SAMPLES` samples of the fixed sample
        (:meth:`~descentlab.curvature.EmpiricalLoss.measured_reduction`: the loss whole and in
        two halves; ``False`` where that cannot be read)."""
        try:
            return _loss_over(model, self.loss_fn, self.first(REDUCTION_SAMPLES)).measured_reduction() == "sum"
        except Exception:  # a loss that cannot be read in halves: the convention, a mean
            return False

    def read_per_batch(self, size: int) -> None:
        """Read ``loss_fn``, a sum over its batch, as a batch of ``size`` samples sums it
        (:func:`~descentlab.curvature.losses.per_batch`), from now on: the losses built on it
        are forgotten."""
        self.loss_fn = per_batch(self.loss_fn, size)
        self.forget_model()

    def loss_as_trained(self, model: nn.Module) -> float | None:
        """The tracked samples' loss as a training step computes it, batch-norm on the batch's
        statistics (one forward pass; the running statistics neither read nor updated), for a model
        that trains batch-norm; ``None`` for any other, whose tracked loss is that loss already."""
        if not trains_batch_norm(model):
            return None
        self._tracked = self._over(self._tracked, model, self.tracked_size)
        return float(self._tracked[0].with_batch_statistics().loss())

    def diverged(self, model: nn.Module, history: RunHistory, *, step: int, optimizer: Any = None) -> Stall:
        """The ``diverged`` stall of a loss that became non-finite at ``step``, measured at the
        last good point (the best tracked loss's parameters), not where the model is now."""
        t0 = time.perf_counter()
        try:
            good = self.sample_loss(model)
            if history.best_params is not None:
                good = good.at(history.best_params)
            finding = examine_divergence(good, step=step, checkpoint_step=history.best_step, optimizer=optimizer,
                                         peak_lr=history.peak_lr, loss=history.loss_record(history.best),
                                         seed=self.seed, full=self.full_loss(model))
            stall = Stall(step, history.best if history.best is not None else math.inf, None, "non_finite",
                          "diagnosed", finding.verdict, finding.remedy, plain(finding.evidence), diagnosed_at=step)
        except Exception as error:  # a diagnosis must never hide the run's own error
            stall = Stall(step, history.best or 0.0, None, "non_finite", f"failed: {type(error).__name__}: {error}")
        return replace(stall, seconds=time.perf_counter() - t0)

    def escape(self, model: nn.Module, stall: Stall) -> Stall:
        """Step ``model`` along the stall's most negative eigenvector (a line search that never
        raises the loss): the one change a diagnosis makes to the model. Returns the stall with
        what the escape did; the kept slice is signed as the step was taken."""
        result: Escape = escape(model, self.loss_fn, self.sample_data, stall.point, max_step=self.options.max_step)
        changes: dict[str, Any] = dict(escape=result, escaped=bool(result.applied),
                                       escape_loss_before=float(result.loss_before),
                                       escape_loss_after=float(result.loss_after),
                                       escape_predicted=float(result.predicted_decrease),
                                       escape_step=float(result.step_size))
        direction = lowest_direction(stall.point)
        if result.applied and result.direction is not None and direction is not None and stall.slice_loss:
            if float(torch.dot(result.direction.to(direction), direction)) < 0:  # L(θ + t s u), s = -1
                changes["slice_loss"] = tuple(reversed(stall.slice_loss))
        return replace(stall, **changes)

    # ------------------------------------------------------------------ the budget's estimate
    def expected_cost(self, model: nn.Module, size: int | None = None, products: int | None = None) -> float:
        """Seconds a diagnosis on the first ``size`` samples (default :attr:`size`) is expected to
        take: the last diagnosis that computed a Hessian, scaled to ``size`` samples (its cost
        grows with the samples it reads), or before the first, :data:`DIAGNOSIS_PRODUCTS`
        Hessian-vector products at the seconds per sample of one product timed once on the
        tracked samples (the second of two: the first builds the graph the others reuse), and a
        gradient's three forward passes over the data kept in memory. A fixed count of forward
        passes would not do: what a product costs against a forward pass differs from a small MLP
        to a transformer several times over. With ``products``: a stage of the diagnosis that
        spends that many products (:func:`~descentlab.critical.diagnosis.examine`'s ``afford``),
        always from the timed product."""
        size = self.size if size is None else int(size)
        if products is None and self.last_cost is not None and self._last_size:
            return self.last_cost * size / self._last_size
        if self._forward is None:
            self.tracked_loss(model)
        if self._product is None:
            self._product = self._time_product(model)
        full = self._full_loss_samples(model) if self._full_batches is not None else 0
        return self._product * (DIAGNOSIS_PRODUCTS if products is None else products) * size + self._forward * 3 * full

    def products_wrong(self, model: nn.Module) -> str | None:
        """Why this model's Hessian-vector products cannot be trusted (checked once, on the first
        samples: :func:`~descentlab.critical.product_check.check_products`), or ``None``."""
        if self._products is None or self._products[0] is not model:
            try:
                error, unsteady = check_products(model, self.loss_fn, self.first(CHECK_SAMPLES), seed=self.seed)
            except NotImplementedError as missing:  # torch has no second derivative through some operation
                error, unsteady = str(missing), None
            except Exception:  # a model a float64 copy cannot run: nothing known against the products
                error = unsteady = None
            self._products = (model, error, unsteady)
        _, error, unsteady = self._products
        if isinstance(error, str):
            return (f"the Hessian-vector products through this model cannot be taken ({error.rstrip('.')}): torch "
                    "has no second derivative through that operation (torch.cdist and nn.EmbeddingBag in max mode are "
                    "such; written with elementary operations, the same computation has one); no verdict that needs "
                    "the curvature")
        if error is None or error <= PRODUCTS_AGREE:
            return None
        if unsteady is not None and unsteady > PRODUCTS_AGREE:
            return (f"this model is no one function of its parameters: its gradient read twice at one point differs "
                    f"by {unsteady:.2g} (in float64), so its Hessian-vector products are not a Hessian's ({error:.2g} "
                    "off the gradient's change): a forward pass that draws random numbers outside torch's generator "
                    "(Python's random, NumPy's) or changes the model's state; no verdict that needs the curvature")
        normed = weight_normed(model)
        if normed:
            return (f"the Hessian-vector products through this model are not its Hessian's ({error:.2g} off the "
                    f"gradient's change along a random direction, in float64): torch's weight_norm ({quoted(normed)}) "
                    "reads the norms of its weights as constants in its second derivatives; no verdict that needs "
                    "the curvature (the same normalisation written as a parametrization of elementary operations, "
                    "v * (g / v.norm(dim=1, keepdim=True)), has one)")
        if writes_its_weights(model):
            return (f"the Hessian-vector products through this model are not its Hessian's ({error:.2g} off the "
                    "gradient's change along a random direction, in float64): an embedding with max_norm renormalises "
                    "the rows it reads inside the forward pass, outside autograd, so the loss is a function of weights "
                    "the products do not see; no verdict that needs the curvature (without max_norm, or with the "
                    "rows' norm bounded by differentiable operations, there is one)")
        return (f"the Hessian-vector products through this model are not its Hessian's ({error:.2g} off the "
                "gradient's change along a random direction, in float64): a module whose backward is not "
                "differentiated again (a custom autograd.Function under @once_differentiable, "
                "torch.utils.checkpoint with use_reentrant=True, a backward computed outside autograd) drops the "
                "second derivatives through it; no verdict that needs the curvature")

    def _time_product(self, model: nn.Module) -> float:
        """Seconds per sample of one Hessian-vector product on the tracked samples (the model only read)."""
        try:
            op = HessianOperator(model, self.loss_fn, self.first(self.tracked_size), eval_mode=True)
            v = torch.randn(op.n_params, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64)
            op @ v  # builds the gradient graph the products of a diagnosis reuse
            started = time.perf_counter()
            op @ v
        except Exception:  # no product through this model (a layer without a second derivative): a check
            return 0.0  # must not stop the loop; the diagnosis's products' check says why
        return (time.perf_counter() - started) / min(self.tracked_size, self.held)

    def affordable_size(self, model: nn.Module, fits: Callable[[float], bool], least: int = 0) -> int:
        """The most samples (one of :meth:`sizes`, at least ``least``) whose diagnosis
        ``fits(expected seconds)``; the smallest where none does."""
        sizes = self.sizes(least)
        return next((n for n in sizes if fits(self.expected_cost(model, n))), sizes[-1])

    def input_statistics(self) -> tuple[list[float], list[float]] | None:
        """The sample's mean and spread per input feature (flattened; a constant feature's spread
        taken as 1), what a standardizing remedy divides by; ``None`` for inputs that are not
        floating point."""
        X = self.sample if self.model_loss else self.sample[0]
        X = first_floating(X)
        if X is None:
            return None
        # over every rank's share (the same remedy on every rank): the count and sum, then the
        # squared deviations from the common mean (two passes: exact for offset features)
        flat = X.detach().flatten(1).double()
        n = float(total(len(flat)))
        if n < 2:
            return None
        mean = summed(flat.sum(dim=0)) / n
        std = (summed(((flat - mean) ** 2).sum(dim=0)) / (n - 1)).sqrt()
        return mean.tolist(), torch.where(std > 0, std, torch.ones_like(std)).tolist()

    def _full_loss_samples(self, model: nn.Module) -> int:
        loss = self.full_loss(model)
        return loss.n_samples if loss is not None else 0

    def state_dict(self) -> dict[str, Any]:
        """The last diagnosis's cost and samples, the sizes, the forward pass's time per sample and
        the Lanczos warm start."""
        return {"last_cost": self.last_cost, "v0": self.v0, "last_size": self._last_size,
                "size": self.size, "tracked_size": self.tracked_size, "forward": self._forward,
                "product": self._product}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.last_cost, self.v0 = state["last_cost"], state["v0"]
        self._last_size, self._forward = state.get("last_size"), state.get("forward")
        self._product = state.get("product")
        self.size, self.tracked_size = state.get("size", self.held), state.get("tracked_size", self.held)

    # ------------------------------------------------------------------ parts
    def _slice(self, sample: EmpiricalLoss, direction: torch.Tensor) -> dict[str, Any]:
        """The loss at θ + t·u, u the unit eigenvector, t in [-radius, radius]: one batched
        evaluation of the data layer at every point."""
        radius, count = self.options.slice_radius, self.options.slice_points
        ts = torch.linspace(-radius, radius, count, dtype=torch.float64)
        u = direction.to(sample.device, torch.float64)
        u = u / u.norm()
        points = sample.point.double() + ts[:, None].to(sample.device) * u
        losses = sample.losses(points.to(sample.dtype))
        return {"slice_t": tuple(ts.tolist()), "slice_loss": tuple(float(v) for v in losses.tolist())}

    def _trials(self, stall: Stall, model: nn.Module, optimizer: Any, batch_size: int | None, step_seconds: float,
                fits: Callable[[float], bool], *, restore: Any = None,
                elsewhere: float | None = None) -> tuple[dict[str, Any] | None, Trials | None]:
        """Run the trials of the remedies that fit the stall's verdict, if their expected cost fits:
        their plain record (``None``: none fit) and the typed result (``None``: none ran).
        ``restore``: the weights of the run's last good point, where its loss is far above it
        (``rollback`` is tried too; not under torch.distributed, where the ranks' best points differ).
        ``elsewhere``: the share of the parameters another optimizer steps, which a fork of
        ``optimizer`` alone would leave where they are: no trial."""
        if optimizer is None or self.train_data is None:
            return None, None
        if elsewhere:
            return {"status": f"skipped (another optimizer steps {elsewhere:.0%} of the parameters, which a trial "
                              "of this optimizer alone would not train)"}, None
        n = int(smallest(count_of(*self.train_data)))  # one menu on every rank (a batch size), within every share
        batch = batch_size if batch_size is not None and batch_size < n else None
        can_escape = stall.point is not None and stall.min_eigenvalue is not None and stall.min_eigenvalue < 0
        inputs = self.input_statistics()

        def remedies() -> list:
            return remedies_for(stall.verdict, stall.evidence, optimizer, batch_size=batch, n_data=n,
                                trial_steps=self.options.trial_steps,
                                peak_lr=(stall.evidence.get("rate") or {}).get("peak_lr"), can_escape=can_escape,
                                inputs=inputs, can_roll_back=restore is not None,
                                sparse=bool(sparse_embeddings(model)))

        menu = remedies()
        if not menu:
            return None, None
        fork_step = stall.diagnosed_at if stall.diagnosed_at is not None else stall.step
        expected = len(menu) * self.options.trial_steps * step_seconds
        left_out: list[str] = []
        if not fits(expected):
            menu, left_out = _within(menu, lambda count: fits(count * self.options.trial_steps * step_seconds))
            if not menu:
                return {"status": "skipped (budget)", "fork_step": fork_step, "expected_seconds": expected,
                        "remedies": left_out}, None
        if stall.verdict == "unscaled_inputs" and inputs is not None:  # the rates the standardizing remedies get
            rate = self._standardized_rate(model, optimizer, inputs)
            fresh = next((r.change for r in menu if r.name == "standardize-reinit"), None)
            if rate is not None and fresh is not None:  # a fresh start's rate: its curvature is not these weights'
                start = copy.deepcopy(model)
                reinitialize(start, fresh.reinit, fresh.init, seed=self.seed + fork_step, gain_of=fresh.gain_of)
                rate["fresh"] = self._standardized_rate(start, optimizer, inputs)
            if rate is not None:
                stall.evidence["standardized_rate"] = rate
                menu = [remedy for remedy in remedies() if remedy.name not in left_out]
        try:
            with preserved_rng(model):
                result = run_trials(model, optimizer, self.loss_fn, self.train_data, menu,
                                    steps=self.options.trial_steps, batch_size=batch, seed=self.seed + fork_step,
                                    sample=self.sample_data, point=stall.point,
                                    escape_options={"max_step": self.options.max_step}, restore=restore,
                                    clip_to=stall.evidence["gradient"]["loop_high"] if shrunk(stall.evidence) else None)
        except Exception as error:  # a trial must never kill the training run
            return {"status": f"failed: {type(error).__name__}: {error}", "fork_step": fork_step}, None
        record = {"status": "ran", "fork_step": fork_step, **plain(result.to_dict())}
        if left_out:
            record["left_out"] = {"remedies": left_out, "why": "budget", "expected_seconds": expected}
        if self.trials_on_sample:
            record["data"] = "the monitor's sample (the training data is streamed from a loader)"
        return record, result

    def _standardized_rate(self, model: nn.Module, optimizer: Any,
                           inputs: tuple[list[float], list[float]]) -> dict[str, Any] | None:
        """:func:`~descentlab.critical.diagnosis.standardized_rate` on the diagnosis's sample with
        its inputs standardized as the remedy would (``None`` where the sample is not one float
        ``(X, y)`` pair, or under torch.distributed, where every rank must try the same remedy)."""
        data = self.first(self.size)
        if self.model_loss or distributed() or not (torch.is_tensor(data[0]) and data[0].is_floating_point()):
            return None
        X = InputStandardizer(*inputs)(model, (data[0],))[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return standardized_rate(EmpiricalLoss(model, self.loss_fn, (X, data[1]), eval_mode=True), optimizer,
                                     seed=self.seed)


@contextlib.contextmanager
def preserved_rng(model: nn.Module) -> Iterator[None]:
    """Torch's global generators (CPU, and the model's CUDA device) as they were, afterwards."""
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        yield


def plain(value: Any) -> Any:
    """Evidence as JSON takes it: non-finite floats become ``None``."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in torch.as_tensor(values).flatten().tolist())


def _loss_over(model: nn.Module, loss_fn: Any, data: Any) -> EmpiricalLoss:
    """The loss over ``data`` in eval mode; where ``loss_fn`` is no mean or sum of per-sample losses
    over a batch (samples that interact: a broadcast, a model that mixes them), its batches weighted
    by their size: a watcher does not stop the user's loop over it, and the verdict names the cause
    (``mixed_samples``)."""
    try:
        return EmpiricalLoss(model, loss_fn, data, eval_mode=True)
    except NotPerSample:
        return EmpiricalLoss(model, loss_fn, data, eval_mode=True, reduction="mean")


def _cut_batch_error(error: Exception, model: nn.Module, loss_fn: Any, data: Any) -> Exception:
    """``error``, raised by ``loss_fn`` on samples taken from the data's batches, or where the
    loss reads a whole batch of the data, a ``ValueError`` that says why: the batch's tensors are
    no independent samples along their first dimension (a graph's adjacency matrix, an edge list),
    and how to hand such a batch over as one sample."""
    try:
        whole = first_batch(data, model_loss=is_model_loss(loss_fn))
        if whole is None:
            return error
        _loss_over(model, loss_fn, move(whole, next(model.parameters()).device))
    except Exception:  # the loss fails on a whole batch too: the loss's own error, as it is
        return error
    return ValueError(
        f"loss_fn fails on samples taken from a batch ({type(error).__name__}: {error}) but not on a whole batch: "
        "the monitor measures on samples taken from the data's batches (its fixed sample, smaller batches for "
        "the gradient's noise), so every tensor's first dimension must count independent samples. A batch whose "
        "rows are coupled (a graph's adjacency matrix, an edge list) can be one sample: give each of its tensors a "
        "leading dimension of 1 (batch = {k: v[None] for k, v in batch.items()}) and read index 0 in the loss")


def _from_history(history: RunHistory, tracked: float) -> dict[str, Any]:
    """What :func:`~descentlab.critical.diagnosis.examine` and
    :func:`~descentlab.critical.diagnosis.look_evidence` read from the run's history: the loss
    record at the tracked loss ``tracked``, the parameters of the check before and how many steps
    ago (neither where the weights came back to them: :meth:`RunHistory.returned`), the loop's
    batch losses against the tracked ones, the loop's gradient norms (the recent checks' and all)."""
    steps_since = (history.latest_step - history.before_step if history.before_step is not None
                   and history.latest_step is not None else None)
    if history.returned():  # back where they were at the check before: no update is measured between them
        steps_since = None
    return {"loss": history.loss_record(tracked), "previous": history.before if steps_since else None,
            "steps_since": steps_since, "batches": history.batch_record(),
            "recent_gradients": [(lo, hi) for _, lo, hi in history.grad_norms[-RECENT_CHECKS:]],
            "gradient_history": [(lo, hi) for _, lo, hi in history.grad_norms]}


def _within(menu: list, fits: Callable[[int], bool]) -> tuple[list, list[str]]:
    """The trials a budget affords where the whole menu does not: ``keep`` and as many of the
    others as ``fits(count)`` allows, ``rollback`` first where it is there (a run far above its best
    is served first by going back to it), then the menu's order (each verdict's likeliest fix
    first); and the names left out. Nothing (and every name) where not even one remedy beside
    ``keep`` fits: ``keep`` alone compares nothing."""
    keep = [remedy for remedy in menu if remedy.name == "keep"]
    others = sorted((remedy for remedy in menu if remedy.name != "keep"), key=lambda remedy: remedy.name != "rollback")
    count = len(keep) + len(others) - 1
    while count > len(keep) and not fits(count):
        count -= 1
    if count <= len(keep):
        return [], [remedy.name for remedy in menu]
    chosen = keep + others[:count - len(keep)]
    names = {remedy.name for remedy in chosen}
    return chosen, [remedy.name for remedy in menu if remedy.name not in names]
