"""A user's own workload: ``--model package.module:factory`` plus ``--data file.npz|file.csv``.

Data files:

- ``.npz`` with arrays ``X`` and ``y``, optionally ``X_val`` and ``y_val``. An integer ``y``
  means classification (class indices), a floating ``y`` regression — except whole,
  non-negative numbers stored as floats (``y.astype(np.float32)`` of class indices), which
  are class indices when the model outputs one score per class.
- ``.csv`` of numbers, one sample per row, an optional header row. The target is the column
  named ``y`` (or ``target``/``label``) when the header has one, else the last column. A
  target whose values are all whole numbers means classification.

Without ``X_val``/``y_val`` a seeded 20 % of the samples is held out for validation. Every
problem (missing file, unimportable factory, X/y of different lengths, NaN or inf, a model
whose output does not fit the targets, ...) raises :class:`~descentlab.errors.UserInputError`
with one line that names it — before anything is trained or written.
"""

from __future__ import annotations

import csv
import functools
import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from descentlab.errors import UserInputError
from descentlab.problems.workloads import Workload, classification_loss, get_workload, regression_loss

__all__ = ["load_factory", "model_directory", "load_arrays", "user_workload", "resolve_workload", "workload_from"]

_TARGET_NAMES = ("y", "target", "label")


def load_factory(spec: str, directory: str | os.PathLike | None = None) -> Callable[[], nn.Module]:
    """The callable named by ``"package.module:factory"`` (imported, not yet called).

    The module is imported from ``directory`` when given (where a run first imported it, see
    :func:`model_directory`: a resume from another directory finds the same module), else from
    the current directory.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise UserInputError(f"--model must look like package.module:factory, got {spec!r}")
    module_name, attribute = spec.split(":")
    _importable_from(directory)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UserInputError(f"cannot import model module {module_name!r}: {error}") from None
    except Exception as error:  # the user's module raised while importing
        raise UserInputError(f"importing model module {module_name!r} failed: {type(error).__name__}: {error}") from None
    factory = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise UserInputError(f"module {module_name!r} has no attribute {attribute!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise UserInputError(f"{spec} is not callable")
    _check_takes_no_arguments(factory, spec)
    return factory


def _check_takes_no_arguments(factory: Callable, spec: str) -> None:
    """A one-line error when the factory cannot be called without arguments (it is called as ``factory()``)."""
    import inspect

    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable without a signature: calling it will tell
        return
    required = [name for name, p in signature.parameters.items()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        raise UserInputError(f"{spec} needs arguments ({', '.join(required)}) but --model calls it with none; "
                             f"give a factory that takes none (def make(): return ...)")


def model_directory(spec: str, directory: str | os.PathLike | None = None) -> str | None:
    """The absolute folder (the ``sys.path`` entry) that the module of ``spec`` is imported from.

    A run stores it in its config, so that a resume from another current directory imports
    the same module (:func:`load_factory` with ``directory``). None for a module without a
    file of its own (a built-in module).
    """
    import sys

    load_factory(spec, directory)
    top = sys.modules[spec.split(":")[0].split(".")[0]]
    if hasattr(top, "__path__"):  # a package (with or without __init__.py): the folder that holds it
        folder = next(iter(top.__path__), None)
        return str(Path(os.path.abspath(folder)).parent) if folder else None
    file = getattr(top, "__file__", None)
    return str(Path(os.path.abspath(file)).parent) if file else None


def _importable_from(directory: str | os.PathLike | None) -> None:
    """Put ``directory`` (when it still exists), else the current directory, on ``sys.path``.

    The current directory as ``python -m`` and ``python script.py`` put it there, so
    ``--model mymodels:make_net`` finds ``./mymodels.py`` from the ``descentlab`` console script
    too (whose ``sys.path`` starts with the script's own folder instead).
    """
    import sys

    if directory is not None and os.path.isdir(directory):
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
        return
    cwd = os.getcwd()
    if not any(entry in ("", ".", cwd) for entry in sys.path):
        sys.path.insert(0, cwd)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{"X": ..., "y": ..., ["X_val", "y_val"]}`` from an ``.npz`` or ``.csv`` file, checked."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"data file {path} does not exist")
    if not path.is_file():
        raise UserInputError(f"data file {path} is not a file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = _read_npz(path)
    elif suffix == ".csv":
        arrays = _read_csv(path)
    else:
        raise UserInputError(f"data file {path} must be .npz or .csv, got {suffix or 'no suffix'}")
    _check(arrays, path)
    return arrays


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    import zipfile

    if not zipfile.is_zipfile(path):
        raise UserInputError(f"{path} is not an .npz archive (write one with numpy.savez(path, X=..., y=...))")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as error:
        if "pickle" in str(error):
            raise UserInputError(f"{path} holds object arrays (Python objects, not numbers); save X and y as "
                                 "numeric arrays") from None
        raise UserInputError(f"cannot read {path} as .npz: {error}") from None
    except Exception as error:  # a damaged archive
        raise UserInputError(f"cannot read {path} as .npz (damaged or truncated?): {error}") from None
    for key in ("X", "y"):
        if key not in arrays:
            raise UserInputError(f"{path} has no array {key!r} (it has: {', '.join(sorted(arrays)) or 'none'})")
    if ("X_val" in arrays) != ("y_val" in arrays):
        raise UserInputError(f"{path} must have both X_val and y_val, or neither")
    return {k: arrays[k] for k in ("X", "y", "X_val", "y_val") if k in arrays}


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"cannot read {path}: {error}") from None
    if not rows:
        raise UserInputError(f"{path} is empty")
    header = None
    try:
        [float(cell) for cell in rows[0]]
    except ValueError:
        header, rows = [cell.strip() for cell in rows[0]], rows[1:]
    if not rows:
        raise UserInputError(f"{path} has a header but no data rows")
    width = len(rows[0])
    for number, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise UserInputError(f"{path} line {number} has {len(row)} columns, expected {width}")
    if width < 2:
        raise UserInputError(f"{path} needs at least two columns (features and a target)")
    try:
        table = np.array([[float(cell) for cell in row] for row in rows], dtype=np.float64)
    except ValueError as error:
        raise UserInputError(f"{path} has a value that is not a number: {error}") from None
    target = width - 1
    if header is not None:
        named = [i for i, name in enumerate(header) if name.lower() in _TARGET_NAMES]
        target = named[0] if named else target
    X = np.delete(table, target, axis=1)
    y = table[:, target]
    if np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    return {"X": X, "y": y}


def _check(arrays: Mapping[str, np.ndarray], path: Path) -> None:
    pairs = [("X", "y")] + ([("X_val", "y_val")] if "X_val" in arrays else [])
    for x_key, y_key in pairs:
        X, y = arrays[x_key], arrays[y_key]
        for key, array in ((x_key, X), (y_key, y)):
            if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
                raise UserInputError(f"{path}: {key} must be numeric, got dtype {array.dtype}")
            if array.ndim == 0 or array.shape[0] == 0:
                raise UserInputError(f"{path}: {key} is empty")
            if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                bad = int(np.count_nonzero(~np.isfinite(array)))
                raise UserInputError(f"{path}: {key} contains NaN or inf ({bad} values)")
        if len(X) != len(y):
            raise UserInputError(f"{path}: {x_key} has {len(X)} samples but {y_key} has {len(y)}")
    if "X_val" in arrays and arrays["X_val"].shape[1:] != arrays["X"].shape[1:]:
        raise UserInputError(f"{path}: X_val has sample shape {arrays['X_val'].shape[1:]}, X has {arrays['X'].shape[1:]}")


def _call_factory(factory: Callable[[], nn.Module], spec: str, dtype: torch.dtype) -> nn.Module:
    model = factory()
    if not isinstance(model, nn.Module):
        raise UserInputError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model.to(dtype)


def user_workload(model: str, data: str | os.PathLike, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                  model_path: str | os.PathLike | None = None) -> Workload:
    """A :class:`Workload` from a model factory ``"package.module:factory"`` and a data file.

    The factory is called once here (under a forked RNG, so the caller's seeding is untouched)
    to check that it returns an ``nn.Module`` with trainable parameters whose output fits the
    targets. ``model_path``: the folder the module is imported from (default: the current one).
    """
    factory = load_factory(model, model_path)
    arrays = load_arrays(data)
    classification = np.issubdtype(arrays["y"].dtype, np.integer)
    # whole-number labels stored as floats (np.float32 class indices): classification when the
    # model outputs one score per class, decided below from the model's own output
    labels_as_floats = not classification and _whole_labels(arrays)
    tensors = {}
    for key, array in arrays.items():
        if key.startswith("y") and classification:
            if not np.issubdtype(array.dtype, np.integer):
                raise UserInputError(f"{data}: y is integer (classification) but {key} is {array.dtype}")
            if array.ndim != 1 or array.min() < 0:
                raise UserInputError(f"{data}: class labels {key} must be one non-negative integer per sample")
            tensors[key] = torch.as_tensor(array, dtype=torch.long)
        else:
            tensor = torch.as_tensor(np.asarray(array, dtype=np.float64), dtype=dtype)
            tensors[key] = tensor[:, None] if key.startswith("y") and tensor.ndim == 1 else tensor
    if "X_val" not in tensors:
        n = len(tensors["X"])
        if n < 2:
            raise UserInputError(f"{data}: need at least 2 samples to hold some out for validation (or give X_val, y_val)")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        n_val = max(1, n // 5)
        val, tr = order[:n_val], order[n_val:]
        tensors = {"X": tensors["X"][tr], "y": tensors["y"][tr], "X_val": tensors["X"][val], "y_val": tensors["y"][val]}
    make_model = functools.partial(_call_factory, factory, model, dtype)
    with torch.random.fork_rng(devices=[]):
        try:
            probe = make_model()
        except UserInputError:
            raise
        except Exception as error:
            raise UserInputError(f"calling {model}() failed: {type(error).__name__}: {error}") from None
        if not any(p.requires_grad for p in probe.parameters()):
            raise UserInputError(f"{model}() returned a model with no trainable parameters (nothing to train or "
                                 f"differentiate); give a factory whose model has some")
        try:
            with torch.no_grad():
                out = probe(tensors["X"][:2])
        except Exception as error:
            raise UserInputError(f"the model cannot take X (sample shape {tuple(tensors['X'].shape[1:])}): "
                                 f"{type(error).__name__}: {error}") from None
    if labels_as_floats:
        n_classes = int(max(tensors["y"].max(), tensors["y_val"].max())) + 1
        if out.ndim == 2 and out.shape[1] > 1 and out.shape[1] >= n_classes:
            classification = True
            tensors = {k: (v.reshape(-1).long() if k.startswith("y") else v) for k, v in tensors.items()}
        elif tuple(out.shape[1:]) != tuple(tensors["y"].shape[1:]):
            raise UserInputError(
                f"{data}: y holds whole numbers 0..{n_classes - 1} stored as {arrays['y'].dtype}, and the model "
                f"outputs sample shape {tuple(out.shape[1:])}: for classification it must output {n_classes} class "
                f"scores (shape (batch, {n_classes})); for regression one value per sample (shape (batch, 1))")
    if classification:
        n_classes = int(max(tensors["y"].max(), tensors["y_val"].max())) + 1
        if out.ndim != 2 or out.shape[1] < n_classes:
            raise UserInputError(f"the model outputs shape {tuple(out.shape[1:])} per batch of 2 but the labels need "
                                 f"{n_classes} class scores (shape (batch, {n_classes}))")
    elif tuple(out.shape[1:]) != tuple(tensors["y"].shape[1:]):
        raise UserInputError(f"the model outputs sample shape {tuple(out.shape[1:])} but y has {tuple(tensors['y'].shape[1:])}")
    name = f"{model} on {Path(data).name}"
    return Workload(
        name=name, description=f"user model {model}, data {data}", make_model=make_model,
        loss_fn=classification_loss if classification else regression_loss,
        X_train=tensors["X"], y_train=tensors["y"], X_val=tensors["X_val"], y_val=tensors["y_val"],
        task="classification" if classification else "regression", optimizer="sgd", lr=0.01, batch_size=64, steps=500,
    )


def workload_from(ref: str | Mapping[str, Any], *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Workload:
    """A built-in workload by name, or any workload by its spec (see :func:`resolve_workload`),
    with the data seeded by ``seed``."""
    if isinstance(ref, str):
        return get_workload(ref, seed=seed, dtype=dtype)
    return resolve_workload({**ref, "seed": seed}, dtype=dtype)


def _whole_labels(arrays: Mapping[str, np.ndarray]) -> bool:
    """Every target is a 1-D floating array of whole, non-negative numbers (class indices as floats)."""
    targets = [arrays[k] for k in ("y", "y_val") if k in arrays]
    return all(np.issubdtype(t.dtype, np.floating) and t.ndim == 1 and np.all(t >= 0) and np.all(t == np.round(t))
               for t in targets)


def resolve_workload(spec: Mapping[str, Any], dtype: torch.dtype = torch.float32) -> Workload:
    """Rebuild a workload from its description in a run's ``config.json``.

    ``spec`` is ``{"workload": name, "seed": s}`` or ``{"model": "pkg.mod:factory", "data": path, "seed": s}``,
    with the folder the module was imported from as ``"model_path"`` (see :func:`model_directory`;
    runs written before it was stored import from the current directory).
    """
    seed = int(spec.get("seed", 0))
    if spec.get("model"):
        if not spec.get("data"):
            raise UserInputError("--model needs --data (an .npz or .csv file)")
        return user_workload(spec["model"], spec["data"], seed=seed, dtype=dtype, model_path=spec.get("model_path"))
    if spec.get("data"):
        raise UserInputError("--data needs --model (package.module:factory)")
    return get_workload(spec.get("workload") or "stall", seed=seed, dtype=dtype)
