"""What several commands share: the output directory rule, the JSON summary, the resume hint,
options that cannot go together, and ``--model/--data`` or ``--workload``.

The options every command has (``--json``, ``--no-progress``) are added by
:mod:`descentlab.cli`; this module only helps a command's ``run`` use them. Nothing here
imports torch at module level.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["output_dir", "emit", "resume_hint", "refuse_with", "given", "add_workload_options", "workload_spec",
           "check_positive", "check_at_least", "log_to_stderr", "tensorboard_writer", "check_tensorboard",
           "tensorboard_curves", "csv_numbers"]


def given(args: argparse.Namespace, dest: str) -> bool:
    """Whether the option whose ``dest`` is ``dest`` was typed on the command line (not defaulted)."""
    return dest in getattr(args, "_given", set())


def refuse_with(args: argparse.Namespace, trigger: str, dests: Iterable[str], why: str) -> None:
    """A one-line error when an option of ``dests`` is given together with ``trigger``
    (nothing given is ever silently ignored)."""
    from descentlab.errors import UserInputError

    clash = [d for d in dests if given(args, d)]
    if clash:
        names = ", ".join("--" + d.replace("_", "-") for d in clash)
        raise UserInputError(f"{trigger} {why}: drop {names}")


def output_dir(args: argparse.Namespace, kind: str, *, resumable: bool = False, hint: str = "") -> Path:
    """``--out`` checked before any work (see :func:`descentlab.rundir.check_out`), or a fresh
    ``runs/<kind>-<timestamp>``."""
    from descentlab.rundir import check_out, default_run_path

    if args.out is None:
        return default_run_path(kind)
    return check_out(args.out, kind, resumable=resumable, hint=hint)


def check_tensorboard(args: argparse.Namespace) -> None:
    """With ``--tensorboard``, a one-line error (before any work) when the tensorboard package is
    missing or ``LOGDIR`` is a file or cannot be created or written (the default, the run's
    ``tensorboard/``, is checked with the run directory)."""
    if getattr(args, "tensorboard", None) is None:
        return
    from descentlab.errors import UserInputError
    from descentlab.rundir import check_folder

    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise UserInputError("--tensorboard needs the tensorboard package: pip install 'descentlab[tensorboard]'") \
            from None
    if args.tensorboard:  # a log directory may hold other runs' event files: only a file or no access is refused
        check_folder(args.tensorboard, "--tensorboard")


def tensorboard_writer(args: argparse.Namespace, out: str | os.PathLike) -> Any:
    """A ``SummaryWriter`` into ``--tensorboard LOGDIR`` (bare ``--tensorboard``: ``OUT/tensorboard``),
    or None without the option."""
    if getattr(args, "tensorboard", None) is None:
        return None
    check_tensorboard(args)
    return _LazyWriter(str(args.tensorboard or Path(out) / "tensorboard"))


class _LazyWriter:
    """A ``SummaryWriter`` made at its first use: its folder (inside the run directory by
    default) must not exist before the run directory does."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self._writer = None

    def __getattr__(self, name: str) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        return getattr(self._writer, name)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def emit(args: argparse.Namespace, summary: Mapping[str, Any]) -> None:
    """The command's machine-readable summary, printed as JSON on stdout with ``--json``."""
    args._summary = dict(summary)


def resume_hint(args: argparse.Namespace, out: str | os.PathLike, *, flag: str | None = None,
                needs: str | None = None) -> None:
    """After a Ctrl-C, tell the user the exact command that resumes the run in ``out``.

    ``flag="--resume"``: ``descentlab CMD --resume OUT``; otherwise the same command line with
    ``--out OUT`` (commands that resume by rerunning). ``needs``: a file inside ``out`` that must
    exist for a resume to make sense (no hint before it does).
    """
    out = Path(out)

    def hint() -> str | None:
        if not out.is_dir() or (needs is not None and not (out / needs).exists()):
            return None
        if flag is not None:
            return shlex.join(["descentlab", args.command, flag, str(out)])
        argv = list(getattr(args, "_argv", []))
        if not given(args, "out"):
            argv += ["--out", str(out)]
        return shlex.join(["descentlab", *argv])

    args._resume = hint


def check_positive(name: str, value: float | None, *, allow_zero: bool = False) -> None:
    """A one-line error unless ``value`` is a finite number > 0 (>= 0 with ``allow_zero``); None passes."""
    import math

    from descentlab.errors import UserInputError

    if value is None:
        return
    if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        raise UserInputError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value}")


def check_at_least(name: str, value: int | None, low: int) -> None:
    """A one-line error unless the integer ``value`` is at least ``low``; None passes."""
    from descentlab.errors import UserInputError

    if value is not None and value < low:
        raise UserInputError(f"{name} must be an integer >= {low}, got {value}")


def add_workload_options(parser: argparse.ArgumentParser, default: str) -> None:
    """``--workload NAME`` or ``--model PKG.MOD:FACTORY --data FILE``."""
    parser.add_argument("--workload", default=None, metavar="NAME",
                        help=f"built-in workload (default: {default}; `descentlab workloads` lists them)")
    parser.add_argument("--model", default=None, metavar="PKG.MOD:FACTORY",
                        help="your model factory, a module importable from the current directory (needs --data)")
    parser.add_argument("--data", default=None, metavar="FILE", help=".npz (X, y[, X_val, y_val]) or .csv data file")


def workload_spec(args: argparse.Namespace, default: str) -> dict[str, Any]:
    """``{"workload": name}`` or ``{"model": ..., "data": absolute path, "model_path": folder}``,
    checked by loading it (one-line errors).

    ``model_path`` is the folder the module is imported from (see
    :func:`~descentlab.problems.user_workload.model_directory`): the current one, or, when
    ``--out`` holds a run of the same ``--model`` (a resume by rerunning), the folder that run
    imported it from, so the rerun finds the module from any directory.
    """
    from descentlab.errors import UserInputError

    if args.workload and (args.model or args.data):
        raise UserInputError("give either --workload or --model/--data, not both")
    if args.model or args.data:
        if not (args.model and args.data):
            raise UserInputError("--model and --data go together")
        # normalised (no ".."), so a rerun from another directory names the same file the same way
        spec = {"model": args.model, "data": os.path.abspath(args.data)}
        from descentlab.problems.user_workload import model_directory, workload_from

        stored = _stored_model_path(args)
        # a bad factory or data file is a one-line error before anything is written
        workload_from({**spec, "model_path": stored})
        spec["model_path"] = model_directory(args.model, stored)
        return spec
    from descentlab.problems.workloads import WORKLOADS

    name = args.workload or default
    if name not in WORKLOADS:
        raise UserInputError(f"unknown workload {name!r}; valid: {', '.join(WORKLOADS)}")
    return {"workload": name}


def _stored_model_path(args: argparse.Namespace) -> str | None:
    """The ``model_path`` of the run in ``--out`` when its workload is this ``--model``, else None."""
    import json

    if getattr(args, "out", None) is None:
        return None
    try:
        stored = json.loads((Path(args.out) / "config.json").read_text(encoding="utf-8")).get("workload")
    except (OSError, ValueError, AttributeError):  # no run there (yet), or not one of ours: check_out says so
        return None
    if isinstance(stored, dict) and stored.get("model") == args.model and isinstance(stored.get("model_path"), str):
        return stored["model_path"]
    return None


def log_to_stderr(message: str) -> None:
    """A log line on stderr, above any progress bar."""
    import sys

    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def tensorboard_curves(args: argparse.Namespace, out: str | os.PathLike, run_dir: Any, run_keys: tuple[str, ...],
                       step_key: str) -> None:
    """With ``--tensorboard``: every numeric column of ``run_dir``'s ``curves.csv`` (a sweep's
    :class:`~descentlab.rundir.RunDir`) as scalars, one TensorBoard run (sub-directory) per
    distinct ``run_keys`` value, e.g. ``adam-seed0``; the x axis is ``step_key``."""
    if getattr(args, "tensorboard", None) is None:
        return
    check_tensorboard(args)
    rows = run_dir.read_csv("curves.csv")
    import math

    from torch.utils.tensorboard import SummaryWriter

    base = Path(args.tensorboard or Path(out) / "tensorboard")

    writers: dict[str, Any] = {}
    try:
        for row in rows:
            name = "-".join(f"{key}{row[key]}" if key == "seed" else str(row[key]) for key in run_keys)
            if name not in writers:
                writers[name] = SummaryWriter(log_dir=str(base / name))
            step = int(float(row[step_key]))
            for column, value in row.items():
                if column in run_keys or column == step_key:
                    continue
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(number):
                    writers[name].add_scalar(column.replace("_", "/", 1), number, step)
    finally:
        for each in writers.values():
            each.close()


def csv_numbers(row: Mapping[str, str]) -> dict[str, Any]:
    """A CSV row with its numbers as numbers (NaN as None, for JSON)."""
    parsed = {}
    for key, value in row.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            parsed[key] = value
            continue
        parsed[key] = None if number != number else (int(number) if number.is_integer() and "." not in value
                                                      else number)
    return parsed
