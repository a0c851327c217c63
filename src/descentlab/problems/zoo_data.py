"""The data of the zoo of training runs (:mod:`descentlab.problems.zoo`): built in, shipped or
generated, never downloaded. scikit-learn's digits (standardized, as images, as sequences of
rows, with labels redrawn at random, as the digit's value), two moons (also in units 1e5 apart),
the breast-cancer table (as measured and standardized), a noisy tanh teacher, generated token
sequences (sort, noisy copy, mean), a recall task whose class is shown only at the first step,
the text of Python's ``this`` module for next-character prediction, and angles from fixed
random-features teachers (the targets of the ``maximum`` cases).

Each data set is built once per process (:func:`dataset`) and shared: never modify it in place.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch.nn import functional as F

from descentlab.problems.zoo_models import antipodal_teacher

__all__ = ["ZooData", "dataset", "DATASETS", "zen_vocabulary", "SORT_LENGTH", "SORT_SYMBOLS", "ZEN_LENGTH"]


@dataclass(frozen=True)
class ZooData:
    """The training data of a case: ``X`` (features, images, sequences or tokens), ``y`` (class
    indices or regression targets) and what it is."""

    X: torch.Tensor = field(repr=False)
    y: torch.Tensor = field(repr=False)
    description: str = ""

    def __len__(self) -> int:
        return int(self.X.shape[0])


def _zen() -> str:
    """The Zen of Python, the text of the ``this`` module shipped with every interpreter."""
    with contextlib.redirect_stdout(io.StringIO()):  # its first import prints the text
        import this
    return codecs.decode(this.s, "rot13")


def _digits_arrays() -> tuple[Any, Any]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data, digits.target


def _standardize(X: torch.Tensor) -> torch.Tensor:
    spread = X.std(dim=0)
    spread[spread == 0] = 1.0  # constant border pixels: centred, not divided by zero
    return (X - X.mean(dim=0)) / spread


def _make_digits(kind: str) -> ZooData:
    X, y = _digits_arrays()
    X, y = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    if kind == "standardized":
        return ZooData(_standardize(X), y, "scikit-learn digits, 1,797 x 64 pixels standardized")
    if kind == "unit":
        return ZooData(X / 16.0, y, "digits, pixels / 16 in [0, 1] (non-negative)")
    if kind == "images":
        return ZooData(_standardize(X).reshape(-1, 1, 8, 8), y, "digits as 1 x 8 x 8 images, standardized")
    if kind == "rows":
        return ZooData(_standardize(X).reshape(-1, 8, 8), y, "digits as sequences of 8 rows of 8 pixels, standardized")
    if kind == "value":
        return ZooData(_standardize(X), y.float(), "digits, standardized; the target is the digit's value 0-9")
    if kind == "images-value":
        return ZooData(_standardize(X).reshape(-1, 1, 8, 8), y.float(), "digits images; target: the value 0-9")
    if kind == "rows-value":
        return ZooData(_standardize(X).reshape(-1, 8, 8), y.float(), "digits rows; target: the value 0-9")
    if kind in ("noisy-labels", "rows-noisy"):
        g = torch.Generator().manual_seed(1)
        flip = torch.rand(len(y), generator=g) < 0.3
        noisy = torch.where(flip, torch.randint(0, 10, (len(y),), generator=g), y)
        shape = (-1, 1, 8, 8) if kind == "noisy-labels" else (-1, 8, 8)
        return ZooData(_standardize(X).reshape(shape), noisy, f"digits {'images' if kind == 'noisy-labels' else 'rows'}"
                                                              " with 30 % of the labels redrawn at random")
    raise KeyError(kind)


def _first(name: str, n: int) -> ZooData:
    data = dataset(name)
    return ZooData(data.X[:n], data.y[:n], f"the first {n} of {data.description}")


def _make_moons(noise: float, scales: tuple[float, float] = (1.0, 1.0)) -> ZooData:
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=1000, noise=noise, random_state=0)
    X = torch.as_tensor(X, dtype=torch.float32) * torch.tensor(scales)
    units = "" if scales == (1.0, 1.0) else f", features scaled by {scales[0]:g} and {scales[1]:g}"
    return ZooData(X, torch.as_tensor(y, dtype=torch.long), f"two moons, 1,000 points, noise {noise}{units}")


def _make_breast_cancer(standardized: bool) -> ZooData:
    from sklearn.datasets import load_breast_cancer

    table = load_breast_cancer()
    X = torch.as_tensor(table.data, dtype=torch.float32)
    y = torch.as_tensor(table.target, dtype=torch.long)
    if standardized:
        return ZooData(_standardize(X), y, "breast cancer, 569 x 30 features standardized")
    return ZooData(X, y, "breast cancer, 569 x 30 features as measured (spreads 0.003 to 570)")


def _make_teacher(n: int = 1000, d: int = 10, hidden: int = 4, noise: float = 0.1) -> ZooData:
    """Regression on a random tanh teacher d-hidden-1 plus Gaussian noise (the loss floor: noise²)."""
    g = torch.Generator().manual_seed(2)
    X = torch.randn(n, d, generator=g)
    W1 = torch.randn(d, hidden, generator=g) / math.sqrt(d)
    w2 = torch.randn(hidden, 1, generator=g)
    y = torch.tanh(X @ W1) @ w2 + noise * torch.randn(n, 1, generator=g)
    return ZooData(X, y, f"regression on a random tanh teacher {d}-{hidden}-1, noise {noise}")


def _make_recall(length: int, classes: int = 4, n: int = 1024) -> ZooData:
    """Sequences whose class is shown only at the first step (one-hot), then ``length - 1`` steps
    of noise: the label must be carried through the whole sequence."""
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, classes, (n,), generator=g)
    X = 0.5 * torch.randn(n, length, classes, generator=g)
    X[:, 0] = F.one_hot(y, classes).float() * 2.0
    return ZooData(X, y, f"recall: the class of the first of {length} steps (one-hot, then noise), {classes} classes")


SORT_LENGTH, SORT_SYMBOLS = 8, 10


def _make_sort(n: int = 1024) -> ZooData:
    g = torch.Generator().manual_seed(4)
    X = torch.randint(0, SORT_SYMBOLS, (n, SORT_LENGTH), generator=g)
    return ZooData(X, X.sort(dim=1).values, f"sort {SORT_LENGTH} tokens of {SORT_SYMBOLS} symbols, per position")


def _make_noisy_copy(n: int = 1024) -> ZooData:
    """Copy 8 tokens, with 30 % of the target tokens redrawn at random: learnt at once, then
    only noise is left."""
    g = torch.Generator().manual_seed(9)
    X = torch.randint(0, SORT_SYMBOLS, (n, SORT_LENGTH), generator=g)
    flip = torch.rand(X.shape, generator=g) < 0.3
    y = torch.where(flip, torch.randint(0, SORT_SYMBOLS, X.shape, generator=g), X)
    return ZooData(X, y, f"copy {SORT_LENGTH} tokens of {SORT_SYMBOLS} symbols, 30 % of the targets redrawn at random")


def _make_sum(n: int = 1024) -> ZooData:
    g = torch.Generator().manual_seed(5)
    X = torch.randint(0, SORT_SYMBOLS, (n, SORT_LENGTH), generator=g)
    return ZooData(X, X.float().mean(dim=1), f"the mean of {SORT_LENGTH} tokens 0-9, a number")


ZEN_LENGTH = 16


@functools.lru_cache(maxsize=None)
def zen_vocabulary() -> str:
    """The characters of the Zen of Python, sorted (the transformer's vocabulary)."""
    return "".join(sorted(set(_zen())))


def _make_zen() -> ZooData:
    text = _zen()
    index = {c: i for i, c in enumerate(zen_vocabulary())}
    codes = torch.tensor([index[c] for c in text])
    windows = codes.unfold(0, ZEN_LENGTH + 1, 1)
    return ZooData(windows[:, :-1].contiguous(), windows[:, 1:].contiguous(),
                   f"the Zen of Python (import this), next character in windows of {ZEN_LENGTH}")


def _make_antipodal(which: str) -> ZooData:
    """Angles the model's *own* teacher weights give (:func:`antipodal_model`), so that its
    start, half a turn away, is an exact maximum of :func:`angular_loss`."""
    X = dataset(_ANTIPODAL_INPUTS[which]).X
    with torch.no_grad():
        y = antipodal_teacher(which)(X).reshape(-1)
    return ZooData(X, y, f"angles from a fixed {which} teacher on {dataset(_ANTIPODAL_INPUTS[which]).description}")


_ANTIPODAL_INPUTS = {"linear": "features-8", "conv": "digits-images-512", "reservoir": "digits-rows",
                     "features": "moons"}


def _make_features(d: int = 8, n: int = 512) -> ZooData:
    g = torch.Generator().manual_seed(6)
    return ZooData(torch.randn(n, d, generator=g), torch.zeros(n), f"{n} Gaussian feature vectors of {d}")


#: name -> builder of every data set of the zoo.
DATASETS: Mapping[str, Callable[[], ZooData]] = MappingProxyType({
    "digits": functools.partial(_make_digits, "standardized"),
    "digits-unit": functools.partial(_make_digits, "unit"),
    "digits-images": functools.partial(_make_digits, "images"),
    "digits-rows": functools.partial(_make_digits, "rows"),
    "digits-value": functools.partial(_make_digits, "value"),
    "digits-images-value": functools.partial(_make_digits, "images-value"),
    "digits-rows-value": functools.partial(_make_digits, "rows-value"),
    "digits-noisy-labels": functools.partial(_make_digits, "noisy-labels"),
    "digits-rows-noisy": functools.partial(_make_digits, "rows-noisy"),
    "digits-images-512": functools.partial(_first, "digits-images", 512),
    "digits-images-value-512": functools.partial(_first, "digits-images-value", 512),
    "moons": functools.partial(_make_moons, 0.2),
    "moons-overlap": functools.partial(_make_moons, 0.35),
    "moons-units": functools.partial(_make_moons, 0.2, (1000.0, 0.01)),
    "breast-cancer": functools.partial(_make_breast_cancer, True),
    "breast-cancer-raw": functools.partial(_make_breast_cancer, False),
    "teacher": _make_teacher,
    "recall-8": functools.partial(_make_recall, 8),
    "recall-30": functools.partial(_make_recall, 30),
    "sort": _make_sort,
    "copy-noisy": _make_noisy_copy,
    "sum": _make_sum,
    "zen": _make_zen,
    "features-8": _make_features,
    "angles-linear": functools.partial(_make_antipodal, "linear"),
    "angles-conv": functools.partial(_make_antipodal, "conv"),
    "angles-reservoir": functools.partial(_make_antipodal, "reservoir"),
    "angles-features": functools.partial(_make_antipodal, "features"),
})


@functools.lru_cache(maxsize=None)
def dataset(name: str) -> ZooData:
    """The zoo's data set ``name`` (built once per process, then shared)."""
    if name not in DATASETS:
        raise ValueError(f"name must be one of the zoo's data sets ({', '.join(DATASETS)}), got {name!r}")
    return DATASETS[name]()
