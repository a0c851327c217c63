"""A zoo of broken and healthy training runs: each a case of data, model, loss and recipe.

Why training stops has more causes than the Hessian at a plateau shows; this zoo reproduces each
cause the stall monitor names (:data:`descentlab.critical.VERDICTS` and the per-layer ones:
``vanishing_gradient``, ``exploding_gradient``, ``dead_units``, ``saturated_units``,
``unscaled_inputs``, ``bounded_outputs``, ``weight_decay``; and ``accumulating_gradient``, a loop
that never zeroes its gradients, ``ZooCase.zero_grad``) in several model families (MLP, CNN, RNN,
transformer), and healthy runs of other kinds (Adam, SGD with momentum, BatchNorm, dropout,
mini-batches, LSTM, transformers) that must raise no alarm. A :class:`ZooCase` is plain data plus
factories, no training code
(:mod:`descentlab.experiments.zoo` trains them in a plain PyTorch loop):

* the **data** is built in, shipped or generated (:mod:`~descentlab.problems.zoo_data`:
  scikit-learn's digits, two moons and breast-cancer table, generated sequences, the text of
  Python's ``this`` module), never downloaded;
* the **model** is written the way users write one (:mod:`~descentlab.problems.zoo_models`),
  with ``nn.`` activation modules (one case calls ``torch.relu`` as a function, where no hook
  can see its units);
* the **recipe** names a ``torch.optim`` class and a ``torch.optim.lr_scheduler`` class with
  their arguments (:class:`Optimizer`, :class:`Schedule`), the batch size and the steps;
* ``fixed`` is the **healthy counterpart**: the same case with the documented repair made
  (standardized inputs, the right initial gain, ReLU for sigmoid, a sane rate...), trained for
  the same steps; it is what a repaired run is measured against.

Each broken case is built so that its cause is unambiguous, and the cause is checked without
the monitor in ``tests/test_zoo.py`` (per-layer gradient norms by hand, units zero on every
sample counted, feature spreads, the Hessian's eigenvalues, the rate a schedule leaves, the
gradient's signal-to-noise ratio).

A case's data are fixed (the same tensors for every seed; shared, so never modify them in
place); a run's seed fixes the initial weights (``torch.manual_seed`` before ``make_model``)
and the batches. The ``maximum`` cases start at an exact construction that no seed changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from descentlab.problems.zoo_data import SORT_LENGTH, SORT_SYMBOLS, ZEN_LENGTH, ZooData, dataset, zen_vocabulary
from descentlab.problems.zoo_models import (ConvNet, ElmanRNN, FunctionalReluMLP, SequenceClassifier, TinyTransformer,
                                           TorchEncoder,
                                           antipodal_model, bounded, clamped, constant, feature_model, linear_conv,
                                           mlp, scaled)

__all__ = ["ZooCase", "ZooData", "Optimizer", "Schedule", "CASES", "FAMILIES", "CAUSES", "dataset", "get_case",
           "select_cases", "cross_entropy", "sequence_cross_entropy", "squared_error", "flattened_squared_error",
           "one_hot_squared_error",
           "angular_loss"]

#: The model families of the zoo.
FAMILIES = ("mlp", "cnn", "rnn", "transformer")

#: Every cause a broken case can have: the monitor's verdicts (``descentlab.critical.VERDICTS``,
#: listed here because ``problems`` is the lowest layer) and the per-layer causes.
CAUSES = ("saddle", "minimum", "maximum", "flat", "unstable", "noise_floor", "diverged", "no_learning_rate", "slow",
          "accumulating_gradient", "vanishing_gradient", "exploding_gradient", "dead_units", "saturated_units",
          "unscaled_inputs", "bounded_outputs", "weight_decay", "biased_batches", "mixed_samples")


# ---------------------------------------------------------------------------------------- recipe
@dataclass(frozen=True)
class Optimizer:
    """A ``torch.optim`` class by name and its arguments: ``torch.optim.<name>(params, lr=lr, **options)``."""

    name: str = "SGD"
    lr: float = 0.1
    options: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = "".join(f", {k} {v:g}" if isinstance(v, float) else f", {k} {v}" for k, v in self.options.items())
        return f"{self.name} lr {self.lr:g}{extra}"


@dataclass(frozen=True)
class Schedule:
    """A ``torch.optim.lr_scheduler`` class by name and its arguments, stepped once per step."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.options.items())})"


@dataclass(frozen=True)
class ZooCase:
    """One training run of the zoo (see the module docstring).

    Attributes:
        name: unique, ``<cause>-<family>-<what>``.
        verdict: the cause the run stops for (one of :data:`CAUSES`), ``None`` for a healthy run.
        family: one of :data:`FAMILIES`.
        description: what is broken (or what kind of healthy run it is), in one sentence.
        data: the :func:`dataset` name.
        make_model: a fresh model (its random initial weights from torch's global generator).
        loss_fn: ``loss_fn(output, target)``, the mean over the batch.
        optimizer, schedule: the recipe (:class:`Optimizer`, :class:`Schedule` or ``None``).
        batch_size: samples per step (``None``: full batch).
        steps: optimizer steps.
        clip: the loop clips the gradients' global norm to this before each step
            (``torch.nn.utils.clip_grad_norm_``; ``None``: no clipping).
        zero_grad: the loop zeroes the gradients before each backward (``False``: they add up
            over the steps, a loop that forgot ``optimizer.zero_grad()``).
        batches: how the loop draws its batches: ``"shuffled"`` (a fresh permutation every epoch),
            ``"fixed"`` (the first batch of the first permutation at every step: a loop that drew
            one batch before its loop).
        fixed: the healthy counterpart (``None`` for a healthy run, and where nothing is broken:
            a run that converged to its minimum).
        fix: the repair ``fixed`` makes, in words.
    """

    name: str
    verdict: str | None
    family: str
    description: str
    data: str
    make_model: Callable[[], nn.Module] = field(repr=False)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(repr=False)
    optimizer: Optimizer = Optimizer()
    schedule: Schedule | None = None
    batch_size: int | None = None
    steps: int = 300
    clip: float | None = None
    zero_grad: bool = True
    batches: str = "shuffled"
    fixed: ZooCase | None = field(default=None, repr=False)
    fix: str = ""

    @property
    def healthy(self) -> bool:
        """A healthy run (no cause expected)."""
        return self.verdict is None

    def dataset(self) -> ZooData:
        """The case's training data (shared tensors: do not modify them in place)."""
        return dataset(self.data)

    def recipe(self) -> str:
        """The optimizer, schedule, batch and steps in words."""
        batch = "full batch" if self.batch_size is None else f"batch {self.batch_size}"
        schedule = f", {self.schedule}" if self.schedule is not None else ""
        clip = f", gradients clipped at {self.clip:g}" if self.clip is not None else ""
        clip += "" if self.zero_grad else ", gradients never zeroed"
        clip += "" if self.batches == "shuffled" else f", batches {self.batches}"
        return f"{self.optimizer}{schedule}{clip}, {batch}, {self.steps} steps"


# ---------------------------------------------------------------------------------------- losses
def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits against class indices, mean over the batch."""
    return F.cross_entropy(output, target)


def sequence_cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per position of ``(batch, length, vocabulary)`` logits, mean over every position."""
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``(batch, 1)`` outputs against ``(batch,)`` or ``(batch, 1)`` targets."""
    return F.mse_loss(output.reshape(target.shape), target)


def flattened_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error written out with the targets flattened to ``(batch,)`` against ``(batch, 1)``
    outputs: broadcast to ``(batch, batch)``, every output against every target (a deliberate
    mistake; torch's ``F.mse_loss`` would warn, this does not)."""
    return ((output - target.reshape(-1)) ** 2).mean()


def one_hot_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """½ ||output − onehot(target)||², mean over the batch: least squares to one-hot labels."""
    onehot = F.one_hot(target, output.shape[-1]).to(output.dtype)
    return 0.5 * ((output - onehot) ** 2).sum(dim=-1).mean()


def angular_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - cos(output - target)``, mean over the batch: the loss of an angle (orientation,
    phase) regression. Zero at the right angle, its maximum 2 half a turn away."""
    return (1.0 - torch.cos(output.reshape(target.shape) - target)).mean()


# ---------------------------------------------------------------------------------------- cases
def _case(name: str, verdict: str | None, family: str, description: str, data: str, model: Callable[[], nn.Module],
          loss: Callable, optimizer: Optimizer, *, fix: str = "", fixed: Mapping[str, Any] | None = None,
          **recipe: Any) -> ZooCase:
    """A case, and its healthy counterpart: the same case with ``fixed``'s fields replaced."""
    case = ZooCase(name, verdict, family, description, data, model, loss, optimizer, **recipe)
    if fixed is not None:
        counterpart = replace(case, name=f"{name}~fixed", verdict=None, description=fix, fix="", **fixed)
        case = replace(case, fixed=counterpart, fix=fix)
    return case


SGD = Optimizer


def _adam(lr: float, **options: Any) -> Optimizer:
    return Optimizer("Adam", lr, options)


def _momentum(lr: float, beta: float = 0.9) -> Optimizer:
    return Optimizer("SGD", lr, {"momentum": beta})


CE, SEQ, MSE, ANGLE, ONE_HOT = cross_entropy, sequence_cross_entropy, squared_error, angular_loss, one_hot_squared_error
V = SORT_SYMBOLS


def _build_cases() -> tuple[ZooCase, ...]:
    zen = len(zen_vocabulary())
    default_init = "PyTorch's default initialisation"
    cases = [
        # ------------------------------------------------ saddle: the origin of a two-layer net
        _case("saddle-mlp-digits", "saddle", "mlp", "tanh MLP 64-16-10 with every weight x 1e-6: the saddle at the "
              "origin", "digits", partial(scaled, partial(mlp, (64, 16, 10), "tanh"), 1e-6), CE, SGD(lr=0.1),
              steps=400, fix=default_init, fixed={"make_model": partial(mlp, (64, 16, 10), "tanh")}),
        _case("saddle-mlp-moons", "saddle", "mlp", "tanh MLP 2-16-2 with every weight x 1e-3", "moons",
              partial(scaled, partial(mlp, (2, 16, 2), "tanh"), 1e-3), CE, SGD(lr=0.5), steps=400,
              fix=default_init, fixed={"make_model": partial(mlp, (2, 16, 2), "tanh")}),
        _case("saddle-cnn-digits", "saddle", "cnn", "tanh CNN (one 3x3 conv, 4 channels) with every weight x 1e-6",
              "digits-images-512", partial(scaled, partial(ConvNet, (4,), "tanh"), 1e-6), CE, SGD(lr=0.1), steps=400,
              fix=default_init, fixed={"make_model": partial(ConvNet, (4,), "tanh")}),
        _case("saddle-rnn-digits", "saddle", "rnn", "tanh RNN (hidden 16) over the digits' rows, every weight x 1e-4",
              "digits-rows", partial(scaled, partial(SequenceClassifier, 8, 16, 10), 1e-4), CE, SGD(lr=0.2),
              steps=400, fix=default_init, fixed={"make_model": partial(SequenceClassifier, 8, 16, 10)}),
        # ------------------------------------------------ minimum: convex, converged full-batch
        _case("minimum-mlp-moons", "minimum", "mlp", "logistic regression (a one-layer MLP) on overlapping moons, "
              "full-batch GD at a stable rate: converged to its one optimum", "moons-overlap", partial(mlp, (2, 2)), CE,
              SGD(lr=2.0), steps=300),
        _case("minimum-mlp-regression", "minimum", "mlp", "linear regression (a one-layer MLP) on a noisy teacher, "
              "full-batch GD: converged to the least-squares solution", "teacher", partial(mlp, (10, 1)), MSE,
              SGD(lr=0.5), steps=300),
        _case("minimum-cnn-digits", "minimum", "cnn", "one linear 8x8 convolution, least squares to the one-hot "
              "labels, full-batch GD with momentum: a convex quadratic, converged", "digits-images", linear_conv,
              ONE_HOT, _momentum(0.02), steps=400),
        # ------------------------------------------------ maximum: half a turn from the answer
        _case("maximum-mlp-angles", "maximum", "mlp", "linear angle regression started half a turn from its "
              "teacher: 1 - cos at its maximum", "angles-linear", partial(antipodal_model, "linear"), ANGLE,
              SGD(lr=0.02), steps=300, fix="the head at PyTorch's default initialisation",
              fixed={"make_model": partial(feature_model, "linear")}),
        _case("maximum-mlp-features", "maximum", "mlp", "random tanh features of two moons, angle head half a turn "
              "from its teacher", "angles-features", partial(antipodal_model, "features"), ANGLE, SGD(lr=0.02),
              steps=300, fix="the head at PyTorch's default initialisation",
              fixed={"make_model": partial(feature_model, "features")}),
        _case("maximum-cnn-angles", "maximum", "cnn", "frozen random conv features of the digits, angle head half "
              "a turn from its teacher", "angles-conv", partial(antipodal_model, "conv"), ANGLE, SGD(lr=0.02),
              steps=300, fix="the head at PyTorch's default initialisation",
              fixed={"make_model": partial(feature_model, "conv")}),
        _case("maximum-rnn-reservoir", "maximum", "rnn", "echo-state network (frozen random RNN) over the digits' "
              "rows, readout half a turn from its teacher", "angles-reservoir", partial(antipodal_model, "reservoir"),
              ANGLE, SGD(lr=0.02), steps=300, fix="the readout at PyTorch's default initialisation",
              fixed={"make_model": partial(feature_model, "reservoir")}),
        # ------------------------------------------------ flat: a clamped output past its bound everywhere
        _case("flat-mlp-digits", "flat", "mlp", "tanh MLP predicting the digit's value, clamped to [0, 9] with "
              "torch.clamp, output bias 20: every prediction past the bound, the loss flat around",
              "digits-value", partial(clamped, partial(mlp, (64, 32, 1), "tanh", out_bias=20.0), 0.0, 9.0), MSE,
              SGD(lr=0.01), steps=300, fix="the output bias at PyTorch's default initialisation",
              fixed={"make_model": partial(clamped, partial(mlp, (64, 32, 1), "tanh"), 0.0, 9.0)}),
        _case("flat-cnn-digits", "flat", "cnn", "tanh CNN predicting the digit's value, clamped to [0, 9], output "
              "bias 20", "digits-images-value-512", partial(clamped, partial(ConvNet, (4,), "tanh", outputs=1,
                                                                      head_bias=20.0), 0.0, 9.0),
              MSE, SGD(lr=0.01), steps=300, fix="the output bias at PyTorch's default initialisation",
              fixed={"make_model": partial(clamped, partial(ConvNet, (4,), "tanh", outputs=1), 0.0, 9.0)}),
        _case("flat-rnn-digits", "flat", "rnn", "tanh RNN over the rows predicting the digit's value, clamped to "
              "[0, 9], output bias 20", "digits-rows-value",
              partial(clamped, partial(SequenceClassifier, 8, 16, 1, head_bias=20.0), 0.0, 9.0), MSE, SGD(lr=0.01),
              steps=300, fix="the output bias at PyTorch's default initialisation",
              fixed={"make_model": partial(clamped, partial(SequenceClassifier, 8, 16, 1), 0.0, 9.0)}),
        _case("flat-transformer-sum", "flat", "transformer", "transformer predicting the mean of 8 tokens, clamped "
              "to [0, 9], output bias 20", "sum",
              partial(clamped, partial(TinyTransformer, V, SORT_LENGTH, 1, pool=True, head_bias=20.0), 0.0, 9.0), MSE,
              SGD(lr=0.01), batch_size=128, steps=300, fix="the output bias at PyTorch's default initialisation",
              fixed={"make_model": partial(clamped, partial(TinyTransformer, V, SORT_LENGTH, 1, pool=True), 0.0, 9.0)}),
        # ------------------------------------------------ slow: a rate ~1e-3 of the stable one
        _case("slow-mlp-digits", "slow", "mlp", "tanh MLP 64-32-10, full-batch GD at lr 5e-5 (stable up to ~1)",
              "digits", partial(mlp, (64, 32, 10), "tanh"), CE, SGD(lr=5e-5), steps=300, fix="lr 0.1",
              fixed={"optimizer": SGD(lr=0.1)}),
        _case("slow-cnn-digits", "slow", "cnn", "ReLU CNN, full-batch GD at lr 5e-5", "digits-images-512",
              partial(ConvNet, (8, 16)), CE, SGD(lr=5e-5), steps=300, fix="lr 0.1", fixed={"optimizer": SGD(lr=0.1)}),
        _case("slow-rnn-digits", "slow", "rnn", "GRU over the digits' rows, full-batch GD at lr 5e-5",
              "digits-rows", partial(SequenceClassifier, 8, 32, 10, cell="gru"), CE, SGD(lr=5e-5), steps=300,
              fix="lr 0.5", fixed={"optimizer": SGD(lr=0.5)}),
        _case("slow-transformer-sort", "slow", "transformer", "transformer sorting 8 tokens, SGD at lr 1e-4 on "
              "batches of 128", "sort", partial(TinyTransformer, V, SORT_LENGTH, V), SEQ, SGD(lr=1e-4), batch_size=128,
              steps=300,
              fix="lr 0.3", fixed={"optimizer": SGD(lr=0.3)}),
        # ------------------------------------------------ unstable: a rate past 2 / lambda_max
        _case("unstable-mlp-logistic", "unstable", "mlp", "logistic regression on two moons, full-batch GD at lr 10 "
              "(2 / lambda_max at the optimum ~7)", "moons", partial(mlp, (2, 2)), CE, SGD(lr=10.0), steps=300,
              fix="lr 2", fixed={"optimizer": SGD(lr=2.0)}),
        _case("unstable-mlp-teacher", "unstable", "mlp", "tanh MLP 10-32-1 regression, full-batch GD at lr 0.5 "
              "(sharpness 4.4 at the start: 2 / lambda_max 0.45)", "teacher", partial(mlp, (10, 32, 1), "tanh"), MSE,
              SGD(lr=0.5), steps=400, fix="lr 0.1", fixed={"optimizer": SGD(lr=0.1)}),
        _case("unstable-cnn-digits", "unstable", "cnn", "tanh CNN on digits with 30 % of the labels redrawn, SGD at "
              "lr 3 on batches of 512", "digits-noisy-labels", partial(ConvNet, (4,), "tanh"), CE, SGD(lr=3.0),
              batch_size=512, steps=500, fix="lr 0.3", fixed={"optimizer": SGD(lr=0.3)}),
        _case("unstable-rnn-digits", "unstable", "rnn", "tanh RNN over the rows of digits with 30 % of the labels "
              "redrawn, full-batch GD at lr 8", "digits-rows-noisy", partial(SequenceClassifier, 8, 16, 10), CE,
              SGD(lr=8.0), steps=400, fix="lr 0.8", fixed={"optimizer": SGD(lr=0.8)}),
        _case("unstable-transformer-sort", "unstable", "transformer", "transformer sorting 8 tokens, Adam at lr 0.1 "
              "without warm-up on batches of 64", "sort", partial(TinyTransformer, V, SORT_LENGTH, V), SEQ, _adam(0.1),
              batch_size=64, steps=400, fix="lr 3e-3 with 50 steps of warm-up",
              fixed={"optimizer": _adam(3e-3), "schedule": Schedule("LinearLR", {"start_factor": 0.02,
                                                                                  "total_iters": 50})}),
        # ------------------------------------------------ unstable: momentum near 1 rings below the limit
        _case("unstable-mlp-momentum", "unstable", "mlp", "ReLU MLP 64-64-10, SGD at lr 0.1 with momentum 0.99 on "
              "batches of 64 (an oscillation halves every 138 steps)", "digits", partial(mlp, (64, 64, 10)), CE,
              _momentum(0.1, 0.99), batch_size=64, steps=300, fix="momentum 0.9",
              fixed={"optimizer": _momentum(0.1)}),
        _case("unstable-cnn-nesterov", "unstable", "cnn", "ReLU CNN, SGD at lr 0.02 with Nesterov momentum 0.999 on "
              "batches of 64", "digits-images", partial(ConvNet, (8, 16)), CE,
              Optimizer("SGD", 0.02, {"momentum": 0.999, "nesterov": True}), batch_size=64, steps=400,
              fix="Nesterov momentum 0.9", fixed={"optimizer": Optimizer("SGD", 0.02, {"momentum": 0.9,
                                                                                        "nesterov": True})}),
        _case("unstable-rnn-betas", "unstable", "rnn", "LSTM over the digits' rows, Adam at lr 3e-3 with its betas "
              "swapped (0.999, 0.9) on batches of 64", "digits-rows",
              partial(SequenceClassifier, 8, 32, 10, cell="lstm"), CE, _adam(3e-3, betas=(0.999, 0.9)), batch_size=64, steps=400, fix="Adam's betas (0.9, 0.999)",
              fixed={"optimizer": _adam(3e-3)}),
        # ------------------------------------------------ symmetric units: a constant initialisation
        _case("symmetric-mlp-constant", "symmetric_units", "mlp", "ReLU MLP 64-64-10 with every weight and bias "
              "0.05, SGD at lr 0.1 on batches of 64", "digits", partial(constant, partial(mlp, (64, 64, 10)), 0.05),
              CE, SGD(lr=0.1), batch_size=64, steps=300, fix=default_init,
              fixed={"make_model": partial(mlp, (64, 64, 10))}),
        _case("symmetric-mlp-deep", "symmetric_units", "mlp", "ReLU MLP 64-32-32-32-10 with every weight and bias "
              "0.05, Adam at lr 1e-3 on batches of 64", "digits",
              partial(constant, partial(mlp, (64, 32, 32, 32, 10)), 0.05), CE, _adam(1e-3), batch_size=64, steps=300,
              fix=default_init, fixed={"make_model": partial(mlp, (64, 32, 32, 32, 10))}),
        _case("symmetric-rnn-constant", "symmetric_units", "rnn", "GRU over the digits' rows with every weight and "
              "bias 0.05, Adam at lr 3e-3 on batches of 64", "digits-rows",
              partial(constant, partial(SequenceClassifier, 8, 32, 10, cell="gru"), 0.05), CE, _adam(3e-3),
              batch_size=64, steps=300, fix=default_init,
              fixed={"make_model": partial(SequenceClassifier, 8, 32, 10, cell="gru")}),
        # ------------------------------------------------ noise floor: tiny batches at a constant rate
        _case("noise-mlp-moons", "noise_floor", "mlp", "tanh MLP 2-16-2 on overlapping moons, SGD on batches of 2 "
              "at a constant lr 0.5", "moons-overlap", partial(mlp, (2, 16, 2), "tanh"), CE, SGD(lr=0.5), batch_size=2,
              steps=600, fix="batches of 128", fixed={"batch_size": 128}),
        _case("noise-cnn-digits", "noise_floor", "cnn", "ReLU CNN on digits with 30 % of the labels redrawn, SGD "
              "on batches of 4 at lr 0.1", "digits-noisy-labels", partial(ConvNet, (4,)), CE, SGD(lr=0.1),
              batch_size=4, steps=600, fix="batches of 128", fixed={"batch_size": 128}),
        _case("noise-rnn-digits", "noise_floor", "rnn", "tanh RNN over the rows of digits with 30 % of the labels "
              "redrawn, SGD on batches of 4 at lr 0.3", "digits-rows-noisy", partial(SequenceClassifier, 8, 16, 10),
              CE, SGD(lr=0.3), batch_size=4, steps=600, fix="batches of 128", fixed={"batch_size": 128}),
        _case("noise-transformer-copy", "noise_floor", "transformer", "transformer copying 8 tokens with 30 % of "
              "the targets redrawn, SGD on batches of 4 at lr 1", "copy-noisy", partial(TinyTransformer, V, SORT_LENGTH, V),
              SEQ, SGD(lr=1.0), batch_size=4, steps=600, fix="batches of 128", fixed={"batch_size": 128}),
        # ------------------------------------------------ diverged: a rate far past the limit
        _case("diverged-mlp-digits", "diverged", "mlp", "ReLU MLP 64-64-10, full-batch GD at lr 8", "digits",
              partial(mlp, (64, 64, 10)), CE, SGD(lr=8.0), steps=300, fix="lr 0.1", fixed={"optimizer": SGD(lr=0.1)}),
        _case("diverged-mlp-teacher", "diverged", "mlp", "tanh MLP 10-32-1 regression, full-batch GD at lr 3",
              "teacher", partial(mlp, (10, 32, 1), "tanh"), MSE, SGD(lr=3.0), steps=300, fix="lr 0.05",
              fixed={"optimizer": SGD(lr=0.05)}),
        _case("diverged-cnn-digits", "diverged", "cnn", "ReLU CNN, full-batch GD at lr 10", "digits-images-512",
              partial(ConvNet, (8, 16)), CE, SGD(lr=10.0), steps=300, fix="lr 0.1", fixed={"optimizer": SGD(lr=0.1)}),
        _case("diverged-transformer-sum", "diverged", "transformer", "transformer regressing the mean of 8 "
              "tokens, GD at lr 30", "sum", partial(TinyTransformer, V, SORT_LENGTH, 1, pool=True), MSE, SGD(lr=30.0),
              batch_size=128, steps=300, fix="lr 0.03", fixed={"optimizer": SGD(lr=0.03)}),
        # ------------------------------------------------ no learning rate: a schedule that ends early
        _case("nolr-mlp-digits", "no_learning_rate", "mlp", "ReLU MLP 64-64-10, SGD lr 0.05 on batches of 64, the "
              "rate decayed linearly to 0 by step 100 of 500", "digits", partial(mlp, (64, 64, 10)), CE,
              SGD(lr=0.05), schedule=Schedule("LinearLR", {"start_factor": 1.0, "end_factor": 0.0,
                                                           "total_iters": 100}),
              batch_size=64, steps=500, fix="the decay over all 500 steps",
              fixed={"schedule": Schedule("LinearLR", {"start_factor": 1.0, "end_factor": 0.0, "total_iters": 500})}),
        _case("nolr-cnn-digits", "no_learning_rate", "cnn", "ReLU CNN, SGD lr 0.05 on batches of 64, the rate "
              "x 0.95 every step (1e-3 of its peak by step 135)", "digits-images", partial(ConvNet, (8, 16)), CE,
              SGD(lr=0.05), schedule=Schedule("ExponentialLR", {"gamma": 0.95}), batch_size=64, steps=500,
              fix="x 0.995 every step", fixed={"schedule": Schedule("ExponentialLR", {"gamma": 0.995})}),
        _case("nolr-rnn-digits", "no_learning_rate", "rnn", "LSTM over the digits' rows, Adam lr 3e-3 on batches of "
              "64, the rate x 0.01 at steps 60 and 120", "digits-rows", partial(SequenceClassifier, 8, 32, 10,
                                                                              cell="lstm"),
              CE, _adam(3e-3), schedule=Schedule("StepLR", {"step_size": 60, "gamma": 0.01}), batch_size=64,
              steps=500, fix="x 0.1 at step 400", fixed={"schedule": Schedule("StepLR", {"step_size": 400,
                                                                                          "gamma": 0.1})}),
        _case("nolr-transformer-sort", "no_learning_rate", "transformer", "transformer sorting 8 tokens, Adam lr "
              "3e-3 on batches of 64, the rate decayed linearly to 0 by step 80 of 500", "sort",
              partial(TinyTransformer, V, SORT_LENGTH, V), SEQ, _adam(3e-3),
              schedule=Schedule("LinearLR", {"start_factor": 1.0, "end_factor": 0.0, "total_iters": 80}),
              batch_size=64, steps=500, fix="the decay over all 500 steps",
              fixed={"schedule": Schedule("LinearLR", {"start_factor": 1.0, "end_factor": 0.0, "total_iters": 500})}),
        # ------------------------------------------------ accumulating gradient: a loop without zero_grad
        _case("accumulating-mlp-digits", "accumulating_gradient", "mlp", "ReLU MLP 64-64-10, SGD lr 0.05 on batches "
              "of 64, the loop never zeroes the gradients (each step adds into .grad)", "digits",
              partial(mlp, (64, 64, 10)), CE, SGD(lr=0.05), batch_size=64, steps=300, zero_grad=False,
              fix="optimizer.zero_grad() before each backward", fixed={"zero_grad": True}),
        _case("accumulating-cnn-digits", "accumulating_gradient", "cnn", "ReLU CNN, Adam lr 1e-3 on batches of 64, "
              "the gradients never zeroed", "digits-images", partial(ConvNet, (8, 16)), CE, _adam(1e-3),
              batch_size=64, steps=300, zero_grad=False, fix="optimizer.zero_grad() before each backward",
              fixed={"zero_grad": True}),
        _case("accumulating-rnn-digits", "accumulating_gradient", "rnn", "LSTM over the digits' rows, Adam lr 3e-3 on "
              "batches of 64, the gradients never zeroed", "digits-rows",
              partial(SequenceClassifier, 8, 32, 10, cell="lstm"), CE, _adam(3e-3), batch_size=64, steps=300,
              zero_grad=False, fix="optimizer.zero_grad() before each backward", fixed={"zero_grad": True}),
        # ------------------------------------------------ vanishing gradient: falls by orders toward the input
        _case("vanishing-mlp-sigmoid", "vanishing_gradient", "mlp", "8-layer sigmoid MLP (7 hidden layers of 32) on "
              "digits, SGD lr 0.1 on batches of 64: stuck at chance", "digits",
              partial(mlp, (64,) + (32,) * 7 + (10,), "sigmoid"), CE, SGD(lr=0.1), batch_size=64, steps=500,
              fix="ReLU for sigmoid, He initialisation",
              fixed={"make_model": partial(mlp, (64,) + (32,) * 7 + (10,), "relu", gain=math.sqrt(2.0))}),
        _case("vanishing-mlp-moons", "vanishing_gradient", "mlp", "10-layer sigmoid MLP (width 16) on two moons, SGD "
              "lr 0.5 on batches of 32: stuck at chance", "moons", partial(mlp, (2,) + (16,) * 9 + (2,), "sigmoid"), CE,
              SGD(lr=0.5), batch_size=32, steps=500, fix="ReLU for sigmoid, He initialisation",
              fixed={"make_model": partial(mlp, (2,) + (16,) * 9 + (2,), "relu", gain=math.sqrt(2.0))}),
        _case("vanishing-cnn-sigmoid", "vanishing_gradient", "cnn", "6-layer sigmoid CNN (8 channels) on digits, "
              "SGD lr 0.1 on batches of 64", "digits-images", partial(ConvNet, (8,) * 6, "sigmoid"), CE, SGD(lr=0.1),
              batch_size=64, steps=500, fix="ReLU for sigmoid, He initialisation",
              fixed={"make_model": partial(ConvNet, (8,) * 6, "relu", gain=math.sqrt(2.0))}),
        _case("vanishing-rnn-sigmoid", "vanishing_gradient", "rnn", "4 stacked sigmoid RNN cells (hidden 16, "
              "written step by step) over the digits' rows, SGD lr 0.1 on batches of 64", "digits-rows",
              partial(ElmanRNN, 8, 16, 10, "sigmoid", layers=4), CE, SGD(lr=0.1), batch_size=64, steps=500,
              fix="ReLU for sigmoid", fixed={"make_model": partial(ElmanRNN, 8, 16, 10, "relu", layers=4)}),
        # ------------------------------------------------ exploding gradient: grows by orders, loss thrown up
        _case("exploding-rnn-irnn", "exploding_gradient", "rnn", "ReLU RNN started at recurrent weights 0.95 x "
              "identity on the 30-step recall task, SGD lr 3e-3 on batches of 64: the gradient grows ~400x and "
              "throws the loss from 0.6 to 20", "recall-30",
              partial(SequenceClassifier, 4, 32, 4, nonlinearity="relu", recurrent_gain=0.95), CE, SGD(lr=3e-3),
              batch_size=64, steps=400, fix="gradients clipped at norm 1", fixed={"clip": 1.0}),
        _case("exploding-rnn-irnn-long", "exploding_gradient", "rnn", "ReLU RNN started at recurrent weights "
              "1.05 x identity on the 30-step recall task, SGD lr 3e-3 on batches of 64", "recall-30",
              partial(SequenceClassifier, 4, 32, 4, nonlinearity="relu", recurrent_gain=1.05), CE, SGD(lr=3e-3),
              batch_size=64, steps=400, fix="gradients clipped at norm 1", fixed={"clip": 1.0}),
        _case("exploding-rnn-tanh", "exploding_gradient", "rnn", "tanh RNN with every weight x 2 (the chaotic "
              "regime) on the 30-step recall task, SGD lr 0.03 on batches of 64", "recall-30",
              partial(SequenceClassifier, 4, 32, 4, scale=2.0), CE, SGD(lr=0.03), batch_size=64, steps=400,
              fix="gradients clipped at norm 1", fixed={"clip": 1.0}),
        # ------------------------------------------------ dead units: ReLUs zero on every sample
        _case("dead-mlp-bias", "dead_units", "mlp", "ReLU MLP 64-64-10 with hidden biases -10: every hidden unit "
              "zero on every sample", "digits", partial(mlp, (64, 64, 10), hidden_bias=-10.0), CE, SGD(lr=0.1),
              batch_size=64, steps=300, fix="biases at PyTorch's default initialisation",
              fixed={"make_model": partial(mlp, (64, 64, 10))}),
        _case("dead-mlp-gelu", "dead_units", "mlp", "GELU MLP 64-64-10 with hidden biases -5: most hidden units' "
              "slope under 2 % on every sample", "digits", partial(mlp, (64, 64, 10), "gelu", hidden_bias=-5.0), CE,
              SGD(lr=0.1), batch_size=64, steps=300, fix="biases at PyTorch's default initialisation",
              fixed={"make_model": partial(mlp, (64, 64, 10), "gelu")}),
        _case("dead-mlp-negative-weights", "dead_units", "mlp", "ReLU MLP 64-64-10 on non-negative pixels with "
              "all first-layer weights negative", "digits-unit", partial(mlp, (64, 64, 10), first_sign=-1), CE,
              SGD(lr=0.1), batch_size=64, steps=300, fix="PyTorch's default initialisation (weights of both signs)",
              fixed={"make_model": partial(mlp, (64, 64, 10))}),
        _case("dead-mlp-functional", "dead_units", "mlp", "the same dead ReLU MLP with torch.relu as a function "
              "(no activation module a hook can see)", "digits", partial(FunctionalReluMLP, (64, 64, 10), -10.0), CE,
              SGD(lr=0.1), batch_size=64, steps=300, fix="biases at PyTorch's default initialisation",
              fixed={"make_model": partial(FunctionalReluMLP, (64, 64, 10))}),
        _case("dead-cnn-batchnorm", "dead_units", "cnn", "BatchNorm-ReLU CNN whose BatchNorm shifts start at -10",
              "digits-images", partial(ConvNet, (8, 16), batchnorm=True, bn_bias=-10.0), CE, SGD(lr=0.1),
              batch_size=64, steps=300, fix="BatchNorm shifts at 0", fixed={"make_model": partial(ConvNet, (8, 16),
                                                                                             batchnorm=True)}),
        _case("dead-cnn-bias", "dead_units", "cnn", "ReLU CNN with conv biases -10", "digits-images",
              partial(ConvNet, (8, 16), bias=-10.0), CE, SGD(lr=0.1), batch_size=64, steps=300,
              fix="biases at PyTorch's default initialisation", fixed={"make_model": partial(ConvNet, (8, 16))}),
        _case("dead-cnn-high-rate", "dead_units", "cnn", "ReLU CNN, full-batch GD at lr 4: the first steps push "
              "every unit below zero for good (dying ReLU)", "digits-images-512", partial(ConvNet, (4,)), CE,
              SGD(lr=4.0), steps=300, fix="lr 0.4", fixed={"optimizer": SGD(lr=0.4)}),
        # ------------------------------------------------ saturated units: sigmoid/tanh in their flat tails
        _case("saturated-mlp-sigmoid", "saturated_units", "mlp", "sigmoid MLP 64-32-10 with hidden biases +10: "
              "every unit near 1", "digits", partial(mlp, (64, 32, 10), "sigmoid", hidden_bias=10.0), CE, SGD(lr=0.5),
              batch_size=64, steps=300, fix="biases at PyTorch's default initialisation",
              fixed={"make_model": partial(mlp, (64, 32, 10), "sigmoid")}),
        _case("saturated-mlp-positive-weights", "saturated_units", "mlp", "sigmoid MLP 64-32-10 on non-negative "
              "pixels whose first layer starts at |N(0, 1)| (all positive, no fan-in scaling)", "digits-unit",
              partial(mlp, (64, 32, 10), "sigmoid", first_std=1.0, first_sign=1), CE, SGD(lr=0.5), batch_size=64,
              steps=300, fix=default_init, fixed={"make_model": partial(mlp, (64, 32, 10), "sigmoid")}),
        _case("saturated-cnn-tanh", "saturated_units", "cnn", "tanh CNN with conv biases +10: every unit near 1",
              "digits-images", partial(ConvNet, (8, 16), "tanh", bias=10.0), CE, SGD(lr=0.02), batch_size=64,
              steps=300, fix="biases at PyTorch's default initialisation",
              fixed={"make_model": partial(ConvNet, (8, 16), "tanh")}),
        _case("saturated-rnn-tanh", "saturated_units", "rnn", "tanh RNN written step by step (nn.Tanh) whose "
              "input biases start at +10", "digits-rows", partial(ElmanRNN, 8, 32, 10, bias=10.0), CE, SGD(lr=0.1),
              batch_size=64, steps=300, fix="biases at PyTorch's default initialisation",
              fixed={"make_model": partial(ElmanRNN, 8, 32, 10)}),
        # ------------------------------------------------ biased batches: the loop fits batches that are not the data
        _case("biased-mlp-fixed", "biased_batches", "mlp", "ReLU MLP 64-64-10, Adam 1e-3 on one batch of 64 drawn "
              "before the loop and used at every step", "digits", partial(mlp, (64, 64, 10)), CE, _adam(1e-3),
              batch_size=64, steps=400, batches="fixed", fix="a fresh shuffled batch every step",
              fixed={"batches": "shuffled"}),
        _case("biased-cnn-fixed", "biased_batches", "cnn", "ReLU CNN, SGD lr 0.1 momentum 0.9 on one batch of 64 used "
              "at every step", "digits-images", partial(ConvNet, (8, 16)), CE, _momentum(0.1), batch_size=64,
              steps=400, batches="fixed", fix="a fresh shuffled batch every step", fixed={"batches": "shuffled"}),
        _case("biased-rnn-fixed", "biased_batches", "rnn", "tanh RNN over the digits' rows, Adam 3e-3 on one batch of "
              "64 used at every step", "digits-rows", partial(ElmanRNN, 8, 32, 10), CE, _adam(3e-3), batch_size=64,
              steps=400, batches="fixed", fix="a fresh shuffled batch every step", fixed={"batches": "shuffled"}),
        # ------------------------------------------------ weight decay: a pull on the weights that holds them
        _case("decay-mlp-sgd", "weight_decay", "mlp", "ReLU MLP 64-64-10, SGD lr 0.1 momentum 0.9 with weight decay "
              "0.3 on batches of 64: the weights held near the origin, the loss at chance", "digits",
              partial(mlp, (64, 64, 10)), CE, Optimizer("SGD", 0.1, {"momentum": 0.9, "weight_decay": 0.3}),
              batch_size=64, steps=300, fix="weight decay 5e-4",
              fixed={"optimizer": Optimizer("SGD", 0.1, {"momentum": 0.9, "weight_decay": 5e-4})}),
        _case("decay-cnn-adam", "weight_decay", "cnn", "ReLU CNN, Adam 1e-3 with (coupled) weight decay 1 on batches "
              "of 64", "digits-images", partial(ConvNet, (8, 16)), CE, _adam(1e-3, weight_decay=1.0), batch_size=64,
              steps=300, fix="weight decay 1e-4", fixed={"optimizer": _adam(1e-3, weight_decay=1e-4)}),
        _case("decay-transformer-adamw", "weight_decay", "transformer", "transformer sorting 8 tokens, AdamW 3e-3 with "
              "decoupled weight decay 30 on batches of 64", "sort", partial(TinyTransformer, V, SORT_LENGTH, V), SEQ,
              Optimizer("AdamW", 3e-3, {"weight_decay": 30.0}), batch_size=64, steps=500, fix="weight decay 0.01",
              fixed={"optimizer": Optimizer("AdamW", 3e-3, {"weight_decay": 0.01})}),
        # ------------------------------------------------ bounded outputs: probabilities into a loss that wants scores
        _case("bounded-mlp-sigmoid", "bounded_outputs", "mlp", "ReLU MLP 64-64-10 with a sigmoid on its outputs "
              "into cross-entropy (floor log(1 + 9/e) = 1.46), SGD lr 0.1 momentum 0.9 on batches of 64", "digits",
              partial(bounded, partial(mlp, (64, 64, 10)), "sigmoid"), CE, _momentum(0.1),
              batch_size=64, steps=400, fix="raw scores (no sigmoid)",
              fixed={"make_model": partial(mlp, (64, 64, 10))}),
        _case("bounded-cnn-softmax", "bounded_outputs", "cnn", "ReLU CNN with a softmax on its outputs into "
              "cross-entropy (a double softmax), SGD lr 0.1 momentum 0.9 on batches of 64", "digits-images",
              partial(bounded, partial(ConvNet, (8, 16)), "softmax"), CE, _momentum(0.1), batch_size=64,
              steps=400, fix="raw scores (no softmax)", fixed={"make_model": partial(ConvNet, (8, 16))}),
        _case("bounded-transformer-softmax", "bounded_outputs", "transformer", "transformer sorting 8 tokens with a "
              "softmax on its outputs into cross-entropy, Adam 3e-3 on batches of 64", "sort",
              partial(bounded, partial(TinyTransformer, V, SORT_LENGTH, V), "softmax"), SEQ, _adam(3e-3),
              batch_size=64, steps=500, fix="raw scores (no softmax)",
              fixed={"make_model": partial(TinyTransformer, V, SORT_LENGTH, V)}),
        # ------------------------------------------------ unscaled inputs: features far from unit scale
        _case("unscaled-mlp-breast-cancer", "unscaled_inputs", "mlp", "logistic regression on the breast-cancer "
              "features as measured (spreads 0.003 to 570), full-batch GD at lr 1e-4", "breast-cancer-raw",
              partial(mlp, (30, 2)), CE, SGD(lr=1e-4), steps=300, fix="standardized features, lr 0.5",
              fixed={"data": "breast-cancer", "optimizer": SGD(lr=0.5)}),
        _case("unscaled-mlp-moons", "unscaled_inputs", "mlp", "ReLU MLP 2-16-2 on two moons measured in units "
              "1e5 apart (x 1000 and x 0.01), full-batch GD at lr 3e-6", "moons-units", partial(mlp, (2, 16, 2)), CE,
              SGD(lr=3e-6), steps=300, fix="the moons as generated (spread ~1), lr 0.5",
              fixed={"data": "moons", "optimizer": SGD(lr=0.5)}),
        _case("unscaled-mlp-moons-logistic", "unscaled_inputs", "mlp", "logistic regression on the same moons in "
              "units 1e5 apart, full-batch GD at lr 3e-6", "moons-units", partial(mlp, (2, 2)), CE, SGD(lr=3e-6),
              steps=300, fix="the moons as generated, lr 2", fixed={"data": "moons", "optimizer": SGD(lr=2.0)}),
        # ------------------------------------------------ samples not kept apart, by the loss or the model
        _case("mixed-mlp-broadcast", "mixed_samples", "mlp", "tanh MLP 10-32-1 regression, its loss written out "
              "against the targets flattened to (N,): every output against every target, full-batch GD at lr 0.1",
              "teacher", partial(mlp, (10, 32, 1), "tanh"), flattened_squared_error, SGD(lr=0.1), steps=400,
              fix="the targets kept (N, 1)", fixed={"loss_fn": MSE}),
        _case("mixed-rnn-seq-first", "mixed_samples", "rnn", "LSTM over the digits' rows built without "
              "batch_first (fed batch first: its recurrence runs along the batch), Adam on batches of 64",
              "digits-rows", partial(SequenceClassifier, 8, 32, 10, cell="lstm", batch_first=False), CE,
              _adam(3e-3), batch_size=64, steps=400, fix="batch_first=True",
              fixed={"make_model": partial(SequenceClassifier, 8, 32, 10, cell="lstm")}),
        _case("mixed-transformer-seq-first", "mixed_samples", "transformer", "torch's transformer encoder sorting "
              "8 tokens, built without batch_first (attention across the batch), Adam with 50 steps of warm-up on "
              "batches of 64", "sort", partial(TorchEncoder, V, SORT_LENGTH, V, batch_first=False), SEQ, _adam(3e-3),
              schedule=Schedule("LinearLR", {"start_factor": 0.02, "total_iters": 50}), batch_size=64, steps=500,
              fix="batch_first=True", fixed={"make_model": partial(TorchEncoder, V, SORT_LENGTH, V)}),
        # ------------------------------------------------ healthy runs of other kinds
        _case("healthy-mlp-adam", None, "mlp", "ReLU MLP 64-64-10, Adam on batches of 64", "digits",
              partial(mlp, (64, 64, 10)), CE, _adam(1e-3), batch_size=64, steps=500),
        _case("healthy-mlp-momentum", None, "mlp", "ReLU MLP 64-64-10, SGD with momentum 0.9 on batches of 64",
              "digits", partial(mlp, (64, 64, 10)), CE, _momentum(0.02), batch_size=64, steps=500),
        _case("healthy-mlp-batchnorm", None, "mlp", "ReLU MLP 64-64-64-10 with BatchNorm, SGD on batches of 64",
              "digits", partial(mlp, (64, 64, 64, 10), batchnorm=True), CE, SGD(lr=0.1), batch_size=64, steps=500),
        _case("healthy-mlp-dropout", None, "mlp", "ReLU MLP 64-128-10 with dropout 0.2, Adam on batches of 64",
              "digits", partial(mlp, (64, 128, 10), dropout=0.2), CE, _adam(1e-3), batch_size=64, steps=500),
        _case("healthy-mlp-moons", None, "mlp", "tanh MLP 2-16-16-2 on two moons, SGD on batches of 32", "moons",
              partial(mlp, (2, 16, 16, 2), "tanh"), CE, SGD(lr=0.1), batch_size=32, steps=500),
        _case("healthy-mlp-breast-cancer", None, "mlp", "ReLU MLP 30-16-2 on standardized breast-cancer features, "
              "AdamW on batches of 32", "breast-cancer", partial(mlp, (30, 16, 2)), CE,
              Optimizer("AdamW", 1e-3, {"weight_decay": 0.01}), batch_size=32, steps=400),
        _case("healthy-cnn-momentum", None, "cnn", "ReLU CNN, SGD with momentum 0.9 on batches of 64",
              "digits-images", partial(ConvNet, (8, 16)), CE, _momentum(0.01), batch_size=64, steps=500),
        _case("healthy-cnn-batchnorm", None, "cnn", "BatchNorm-ReLU CNN, Adam on batches of 64", "digits-images",
              partial(ConvNet, (8, 16), batchnorm=True), CE, _adam(1e-3), batch_size=64, steps=500),
        _case("healthy-rnn-lstm", None, "rnn", "LSTM over the digits' rows, Adam on batches of 64", "digits-rows",
              partial(SequenceClassifier, 8, 32, 10, cell="lstm"), CE, _adam(3e-3), batch_size=64, steps=500),
        _case("healthy-rnn-gru-recall", None, "rnn", "GRU recalling the first of 8 steps, Adam on batches of 64",
              "recall-8", partial(SequenceClassifier, 4, 32, 4, cell="gru"), CE, _adam(3e-3), batch_size=64, steps=400),
        _case("healthy-transformer-sort", None, "transformer", "transformer sorting 8 tokens, Adam with 50 steps "
              "of warm-up on batches of 64", "sort", partial(TinyTransformer, V, SORT_LENGTH, V), SEQ, _adam(3e-3),
              schedule=Schedule("LinearLR", {"start_factor": 0.02, "total_iters": 50}), batch_size=64, steps=500),
        _case("healthy-transformer-zen", None, "transformer", "transformer predicting the next character of the "
              "Zen of Python, AdamW with a cosine decay on batches of 32", "zen",
              partial(TinyTransformer, zen, ZEN_LENGTH, zen, dropout=0.1), SEQ,
              Optimizer("AdamW", 3e-3, {"weight_decay": 0.01}),
              schedule=Schedule("CosineAnnealingLR", {"T_max": 500}), batch_size=32, steps=500),
    ]
    return tuple(cases)


#: Every case of the zoo, in the order it runs.
CASES: tuple[ZooCase, ...] = _build_cases()


def get_case(name: str) -> ZooCase:
    """The case ``name`` (its healthy counterpart as ``"<name>~fixed"``)."""
    for case in CASES:
        if case.name == name:
            return case
        if case.fixed is not None and case.fixed.name == name:
            return case.fixed
    raise ValueError(f"name must be a zoo case, got {name!r}; valid: {', '.join(c.name for c in CASES)}")


def select_cases(only: Sequence[str] | None = None, family: str | None = None,
                 verdict: str | None = None) -> tuple[ZooCase, ...]:
    """The cases named in ``only`` (all when ``None``), of ``family``, expecting ``verdict``
    (``"healthy"`` for the healthy runs); ``ValueError`` naming the argument for an unknown value."""
    cases = CASES
    if only is not None:
        cases = tuple(get_case(name) for name in only)
    if family is not None:
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
        cases = tuple(c for c in cases if c.family == family)
    if verdict is not None:
        if verdict != "healthy" and verdict not in CAUSES:
            raise ValueError(f"verdict must be one of {', '.join(CAUSES)} or healthy, got {verdict!r}")
        cases = tuple(c for c in cases if c.verdict == (None if verdict == "healthy" else verdict))
    return cases
