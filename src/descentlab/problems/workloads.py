"""Built-in workloads: data plus a model, shipped or generated, never downloaded.

A :class:`Workload` bundles what one training run needs: the tensors of a fixed, seeded
train/validation split, a factory for a fresh model, the loss, and suggested training
defaults. ``seed`` fixes the *data* (the split, the generated points, the teacher); the
model's initial weights follow torch's global RNG, so a caller seeds them with
``torch.manual_seed`` before ``make_model()``.

>>> workload = get_workload("lecture")
>>> model = workload.make_model()
>>> loss = workload.loss_fn(model(workload.X_train), workload.y_train)

Names (:data:`WORKLOADS`):

- ``digits-mlp`` / ``digits-cnn``: scikit-learn's 8x8 handwritten digits (1,797 images),
  80/20 stratified split, features standardised with the training set's mean and spread.
- ``stall``: the same digits with a one-hidden-layer tanh MLP (64-8-10) whose weights
  start near zero. The origin of a two-layer network is a *saddle* (like the lecture's
  w1*w2 model: the Hessian's weight block is [[0, -C], [-C^T, 0]] with C the input-output
  correlation, so it has eigenvalues of both signs), so plain SGD sits on a plateau at
  loss ~ ln 10 before it finds the way down.
- ``moons``: scikit-learn's two interleaving half circles, a small tanh MLP.
- ``unstable``, ``noise-floor``, ``minimum``: the same two moons with logistic regression (a
  linear model, a convex loss with one optimum, at loss ~0.284), trained three ways that stall
  for three different reasons: full-batch GD at a rate past the stability limit 2/λ_max (the
  iterate jumps across the valley, the loss alternates between two values far above the
  optimum); SGD on batches of 4 at a constant rate (the mini-batch noise keeps it bouncing
  around the optimum, the classes overlap so the noise never vanishes); full-batch GD at a
  stable rate (it reaches the optimum: a minimum).
- ``eos``: the edge of stability (Cohen et al., ICLR 2021) in seconds: 512 of the digits, a tanh
  MLP 64-32-32-10 trained by full-batch gradient descent on the squared error to the one-hot
  labels (as in the paper: progressive sharpening is strongest under squared error). Its
  sharpness λ_max starts near 2.9 and rises until it reaches 2/lr, then hovers there while the
  loss keeps falling, non-monotonically; the rates 0.4, 0.5 and 0.6 (2/lr = 5, 4, 3.3) all get
  there within 250 steps. Its runs track the sharpness every 5 steps.
- ``teacher-student``: regression on the outputs of a fixed random "teacher" network.
- ``lecture``: the course's two-parameter model y = w1*w2*x on the one datum x = 1, y = 1
  with squared error, L = (1 - w1*w2)^2.
- ``wilson``: Wilson, Roelofs, Stern, Srebro & Recht 2017 ("The marginal value of adaptive
  gradient methods in machine learning", section 3.3): binary least squares where every sample
  has the label as feature 1, a constant 1 in features 2 and 3, and features of its own (one
  for a positive label, five for a negative one). Started from zero, gradient descent (and SGD
  with momentum) converges to the minimum-norm solution, which puts most weight on feature 1
  and classifies new samples correctly; Adagrad, RMSProp and Adam converge to a solution
  proportional to sign(X^T y), which weighs features 1-3 alike and so calls every new sample
  positive (test error = the share of negative labels, 1 - p). The model is that linear least
  squares on (3 + 5n) features; its output is the pair of scores (-f, f) so that the argmax is
  the sign of f, and the loss is ½ mean (f - y)^2 with y = ±1.

Test split. A study that tunes on the validation split measures on a held-out test split
(:func:`with_test_split`): the workload's own (``wilson`` draws one) or, by default, half of the
validation split, stratified and seeded, so the numbers of every command that does not tune stay
what they were.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Workload", "WORKLOADS", "get_workload", "LectureModel", "classification_loss", "regression_loss",
           "one_hot_squared_error", "sign_squared_error", "SignScores", "wilson_data", "with_test_split"]

#: name -> one-line description of every built-in workload.
WORKLOADS: Mapping[str, str] = MappingProxyType({
    "digits-mlp": "scikit-learn digits (8x8), MLP 64-64-10 with ReLU, cross-entropy",
    "digits-cnn": "scikit-learn digits (1x8x8), small CNN (two 3x3 conv layers), cross-entropy",
    "stall": "digits, tanh MLP 64-8-10 started near zero: plateaus at the saddle at the origin",
    "moons": "two moons (1,000 points, noise 0.2), tanh MLP 2-16-16-2, cross-entropy",
    "unstable": "two moons, logistic regression, full-batch GD at lr 10 > 2/lambda_max: oscillates above the optimum",
    "noise-floor": "two moons, logistic regression, SGD on batches of 4 at constant lr 1: bounces at a noise floor",
    "minimum": "two moons, logistic regression, full-batch GD at lr 2: converges to the optimum, a minimum",
    "eos": "512 digits, tanh MLP 64-32-32-10, squared error, full-batch GD at lr 0.5: sharpness rises to 2/lr, "
           "then hovers (edge of stability)",
    "teacher-student": "regression on a random tanh teacher 10-8-1, student MLP 10-32-1, squared error",
    "lecture": "the lecture's y = w1*w2*x on the one datum x = 1, y = 1, squared error",
    "wilson": "Wilson et al. 2017's separable least squares (40 samples, 1,403 features, zero start): GD and "
              "momentum generalize, Adagrad/RMSProp/Adam call every new sample positive",
})


@dataclass(frozen=True)
class Workload:
    """Data, model factory, loss and suggested defaults of one training problem.

    Attributes:
        name, description: as in :data:`WORKLOADS`.
        make_model: returns a fresh ``nn.Module`` in the workload's dtype; its initial weights
            come from torch's global RNG (seed it first).
        loss_fn: ``loss_fn(output, target)``, the mean over the batch.
        X_train, y_train, X_val, y_val: the data (class indices as ``int64`` for classification).
        task: ``"classification"`` or ``"regression"``.
        optimizer, lr, batch_size, steps: suggested training defaults (``batch_size=None`` means
            full batch).
        track_sharpness: a suggested sharpness-tracking interval for a stall monitor (``None``: off).
        X_test, y_test: a held-out test split of the workload's own (``None``: none; see
            :func:`with_test_split`).
        seeds_draw_data: the runs differ between seeds only through the data (a fixed start, full
            batch), so a study's seeds should each draw their own data set to carry any spread.
    """

    name: str
    description: str
    make_model: Callable[[], nn.Module] = field(repr=False)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(repr=False)
    X_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    X_val: torch.Tensor = field(repr=False)
    y_val: torch.Tensor = field(repr=False)
    task: str = "classification"
    optimizer: str = "sgd"
    lr: float = 0.1
    batch_size: int | None = 64
    steps: int = 500
    track_sharpness: int | None = None
    X_test: torch.Tensor | None = field(default=None, repr=False)
    y_test: torch.Tensor | None = field(default=None, repr=False)
    seeds_draw_data: bool = False

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.X_val.shape[0])

    @property
    def n_test(self) -> int:
        """Samples in the test split (0 without one)."""
        return 0 if self.X_test is None else int(self.X_test.shape[0])

    def __repr__(self) -> str:
        return (
            f"Workload(name={self.name!r}, task={self.task!r}, X_train={tuple(self.X_train.shape)}, "
            f"X_val={tuple(self.X_val.shape)}, dtype={self.X_train.dtype}, optimizer={self.optimizer!r}, "
            f"lr={self.lr}, batch_size={self.batch_size}, steps={self.steps})"
        )


def one_hot_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """½ ||output − onehot(target)||², mean over the batch (summed over classes): the squared
    error of a classifier, the loss of Cohen et al.'s edge-of-stability experiments."""
    onehot = F.one_hot(target, output.shape[-1]).to(output.dtype)
    return 0.5 * ((output - onehot) ** 2).sum(dim=-1).mean()


def sign_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """½ mean (f − y)² of the score pairs ``output = (−f, f)`` of :class:`SignScores` against class
    indices ``target`` ∈ {0, 1}, read as y = 2·target − 1 ∈ {−1, +1}: least squares on ±1 labels
    (Wilson et al. 2017), written so that the argmax of the output is the predicted class."""
    signed = 2 * target.to(output.dtype) - 1
    return 0.5 * ((output[..., 1] - signed) ** 2).mean()


def classification_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits ``output`` against class indices ``target``, mean over the batch."""
    return F.cross_entropy(output, target)


def regression_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error, mean over the batch (and over output dimensions)."""
    return F.mse_loss(output, target)


class LectureModel(nn.Module):
    """y = w1 * w2 * x with two scalar parameters ``w1`` and ``w2`` (initialised N(0, 1))."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(()))
        self.w2 = nn.Parameter(torch.randn(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w1 * self.w2 * x


class SignScores(nn.Module):
    """A linear predictor f = w·x without bias, started at w = 0, that outputs the scores
    ``(−f, f)``: argmax is the sign of f (class 1 for f > 0), the loss is least squares on f."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1, bias=False)
        with torch.no_grad():
            self.linear.weight.zero_()  # Wilson et al.'s analysis starts every method at zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.linear(x)
        return torch.cat([-f, f], dim=-1)


class _DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(x.flatten(1))


def _mlp(sizes: tuple[int, ...], activation: str, dtype: torch.dtype, init_scale: float | None = None) -> nn.Module:
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if index:
            layers.append(act())
        layers.append(nn.Linear(fan_in, fan_out))
    model = nn.Sequential(*layers)
    if init_scale is not None:
        # Near-zero start: every weight N(0, init_scale^2), biases zero, so the network sits
        # next to the saddle at the origin.
        with torch.no_grad():
            for layer in model:
                if isinstance(layer, nn.Linear):
                    layer.weight.normal_(0.0, init_scale)
                    layer.bias.zero_()
    return model.to(dtype)


def _make_cnn(dtype: torch.dtype) -> nn.Module:
    return _DigitsCNN().to(dtype)


def _make_linear(n_in: int, n_out: int, dtype: torch.dtype) -> nn.Module:
    return nn.Linear(n_in, n_out).to(dtype)


def _make_sign_scores(n_features: int, dtype: torch.dtype) -> nn.Module:
    return SignScores(n_features).to(dtype)


def _make_lecture(dtype: torch.dtype) -> nn.Module:
    return LectureModel().to(dtype)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _digits(seed: int, dtype: torch.dtype, image: bool) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    X_train, X_val, y_train, y_val = train_test_split(
        data.data, data.target, test_size=0.2, random_state=seed, stratify=data.target
    )
    mean = X_train.mean(axis=0)
    spread = X_train.std(axis=0)
    spread[spread == 0] = 1.0  # constant border pixels: centre them, do not divide by zero
    X_train = torch.as_tensor((X_train - mean) / spread, dtype=dtype)
    X_val = torch.as_tensor((X_val - mean) / spread, dtype=dtype)
    if image:
        X_train, X_val = X_train.reshape(-1, 1, 8, 8), X_val.reshape(-1, 1, 8, 8)
    return X_train, torch.as_tensor(y_train, dtype=torch.long), X_val, torch.as_tensor(y_val, dtype=torch.long)


def _moons(seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=1000, noise=0.2, random_state=seed)
    X = torch.as_tensor(X, dtype=dtype)
    y = torch.as_tensor(y, dtype=torch.long)
    return X[:800], y[:800], X[800:], y[800:]


def _teacher_student(seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    gen = _generator(seed)
    n, d, hidden = 1000, 10, 8
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    W1 = torch.randn(d, hidden, generator=gen, dtype=torch.float64) / math.sqrt(d)
    w2 = torch.randn(hidden, 1, generator=gen, dtype=torch.float64) / math.sqrt(hidden)
    y = torch.tanh(X @ W1) @ w2 + 0.05 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    X, y = X.to(dtype), y.to(dtype)
    return X[:800], y[:800], X[800:], y[800:]


def wilson_data(n: int, p: float, seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of Wilson et al. 2017's construction (section 3.3): labels y_i = +1 with
    probability ``p`` (else −1), and features x_i1 = y_i, x_i2 = x_i3 = 1, and ones at the sample's
    own features 4 + 5(i−1) ... 4 + 5(i−1) + 2(1 − y_i) (one for y_i = +1, five for y_i = −1); all
    other features 0, so there are 3 + 5n of them. Returns ``(X, labels)`` with the labels as class
    indices (0 for −1, 1 for +1)."""
    gen = _generator(seed)
    positive = torch.rand(n, generator=gen, dtype=torch.float64) < p
    signed = torch.where(positive, 1.0, -1.0).to(torch.float64)
    X = torch.zeros(n, 3 + 5 * n, dtype=torch.float64)
    X[:, 0] = signed
    X[:, 1:3] = 1.0
    for i in range(n):
        first = 3 + 5 * i  # feature 4 + 5(i - 1), counting from 1
        X[i, first:first + (1 if positive[i] else 5)] = 1.0
    return X.to(dtype), positive.long()


def _wilson(seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    # one draw for all three splits: every sample has its own features, and a split's samples
    # never touch the others' (the weights on them stay at 0 under every method)
    n_train, n_val, n_test = WILSON_SPLITS
    X, y = wilson_data(n_train + n_val + n_test, WILSON_P, seed, dtype)
    val, test = n_train + n_val, n_train + n_val + n_test
    return X[:n_train], y[:n_train], X[n_train:val], y[n_train:val], X[val:test], y[val:test]


def with_test_split(workload: Workload, seed: int = 0) -> Workload:
    """``workload`` with a held-out test split beside the validation split a study tunes on.

    A workload with a test split of its own is returned as it is. Otherwise its validation split
    is cut in two halves (stratified by class for classification, by scikit-learn's
    ``train_test_split`` with ``random_state=seed``): the first stays the validation split, the
    second becomes the test split. A validation split of one sample cannot be cut: the test split
    is then that sample too (``lecture``; there is no other data).
    """
    if workload.X_test is not None:
        return workload
    import dataclasses

    if workload.n_val < 2:
        return dataclasses.replace(workload, X_test=workload.X_val.clone(), y_test=workload.y_val.clone())
    from sklearn.model_selection import train_test_split

    index = torch.arange(workload.n_val).numpy()
    labels = workload.y_val.numpy() if workload.task == "classification" else None
    counts = None if labels is None else torch.bincount(workload.y_val)
    stratify = labels if counts is not None and int(counts[counts > 0].min()) >= 2 else None
    keep, held = train_test_split(index, test_size=0.5, random_state=seed, stratify=stratify)
    keep, held = torch.as_tensor(sorted(keep)), torch.as_tensor(sorted(held))
    return dataclasses.replace(workload, X_val=workload.X_val[keep], y_val=workload.y_val[keep],
                               X_test=workload.X_val[held], y_test=workload.y_val[held])


def get_workload(name: str, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Workload:
    """The built-in workload ``name`` (see :data:`WORKLOADS`); ``seed`` fixes the data only.

    Raises ``ValueError`` (a :class:`~descentlab.errors.UserInputError`) for an unknown name.
    """
    from descentlab.errors import UserInputError

    if name not in WORKLOADS:
        raise UserInputError(f"unknown workload {name!r}; valid: {', '.join(WORKLOADS)}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    description = WORKLOADS[name]
    common = dict(name=name, description=description)
    if name == "digits-mlp":
        data = _digits(seed, dtype, image=False)
        return Workload(**common, make_model=functools.partial(_mlp, (64, 64, 10), "relu", dtype),
                        loss_fn=classification_loss, X_train=data[0], y_train=data[1], X_val=data[2],
                        y_val=data[3], optimizer="sgd", lr=0.1, batch_size=64, steps=500)
    if name == "digits-cnn":
        data = _digits(seed, dtype, image=True)
        return Workload(**common, make_model=functools.partial(_make_cnn, dtype),
                        loss_fn=classification_loss, X_train=data[0], y_train=data[1], X_val=data[2],
                        y_val=data[3], optimizer="sgd", lr=0.05, batch_size=64, steps=500)
    if name == "stall":
        data = _digits(seed, dtype, image=False)
        return Workload(**common, make_model=functools.partial(_mlp, (64, 8, 10), "tanh", dtype, STALL_INIT),
                        loss_fn=classification_loss, X_train=data[0], y_train=data[1], X_val=data[2],
                        y_val=data[3], optimizer="sgd", lr=STALL_LR, batch_size=None, steps=STALL_STEPS)
    if name == "moons":
        data = _moons(seed, dtype)
        return Workload(**common, make_model=functools.partial(_mlp, (2, 16, 16, 2), "tanh", dtype),
                        loss_fn=classification_loss, X_train=data[0], y_train=data[1], X_val=data[2],
                        y_val=data[3], optimizer="sgd", lr=0.1, batch_size=32, steps=500)
    if name in LOGISTIC_PRESETS:
        data = _moons(seed, dtype)
        lr, batch, steps = LOGISTIC_PRESETS[name]
        return Workload(**common, make_model=functools.partial(_make_linear, 2, 2, dtype),
                        loss_fn=classification_loss, X_train=data[0], y_train=data[1], X_val=data[2],
                        y_val=data[3], optimizer="sgd", lr=lr, batch_size=batch, steps=steps)
    if name == "eos":
        X_train, y_train, X_val, y_val = _digits(seed, dtype, image=False)
        return Workload(**common, make_model=functools.partial(_mlp, (64, 32, 32, 10), "tanh", dtype),
                        loss_fn=one_hot_squared_error, X_train=X_train[:EOS_SAMPLES], y_train=y_train[:EOS_SAMPLES],
                        X_val=X_val, y_val=y_val, optimizer="sgd", lr=EOS_LR, batch_size=None, steps=EOS_STEPS,
                        track_sharpness=EOS_TRACK_EVERY)
    if name == "teacher-student":
        data = _teacher_student(seed, dtype)
        return Workload(**common, make_model=functools.partial(_mlp, (10, 32, 1), "tanh", dtype),
                        loss_fn=regression_loss, X_train=data[0], y_train=data[1], X_val=data[2],
                        y_val=data[3], task="regression", optimizer="sgd", lr=0.05, batch_size=32, steps=500)
    if name == "wilson":
        X_train, y_train, X_val, y_val, X_test, y_test = _wilson(seed, dtype)
        return Workload(**common, make_model=functools.partial(_make_sign_scores, X_train.shape[1], dtype),
                        loss_fn=sign_squared_error, X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val,
                        X_test=X_test, y_test=y_test, optimizer="sgd", lr=0.1, batch_size=None, steps=300,
                        seeds_draw_data=True)
    # lecture: one datum, the validation set is the same datum (there is nothing else)
    X = torch.ones(1, 1, dtype=dtype)
    y = torch.ones(1, 1, dtype=dtype)
    return Workload(**common, make_model=functools.partial(_make_lecture, dtype), loss_fn=regression_loss,
                    X_train=X, y_train=y, X_val=X.clone(), y_val=y.clone(), task="regression",
                    optimizer="sgd", lr=0.05, batch_size=None, steps=200)


# The stall preset's knobs, chosen by experiment (see tests/test_workloads.py::test_stall_*).
STALL_INIT = 1e-6
STALL_LR = 0.05
STALL_STEPS = 600

# The logistic-regression presets' (lr, batch size, steps), chosen by experiment (see
# tests/test_diagnose_verdicts.py): lambda_max at the optimum is ~0.27 (2/lambda_max ~ 7.5), so
# lr 10 oscillates for ever (a bounded loss: logistic gradients are bounded), lr 2 converges.
LOGISTIC_PRESETS = {"unstable": (10.0, None, 300), "noise-floor": (1.0, 4, 1000), "minimum": (2.0, None, 300)}

# The edge-of-stability preset's knobs, chosen by experiment (tests/test_tracking.py): with 512
# samples the monitor's sample is all the data, so the tracked sharpness is the full loss's.
EOS_SAMPLES = 512
EOS_LR = 0.5
EOS_STEPS = 500
EOS_TRACK_EVERY = 5

# Wilson et al. 2017's construction: labels +1 with probability p (their p > 1/2); (train, validation,
# test) sizes. Under the adaptive methods the test error is the share of negative test labels, ~1 - p.
WILSON_P = 0.6
WILSON_SPLITS = (40, 40, 200)
