"""One run = one directory: its config, metrics, checkpoints, figures and ``report.html``.

A run directory is the only thing the report layer reads. ``config.json`` always holds
``"kind"`` (which command wrote it: ``"surface"``, ``"diagnose"``, ...), which is how
``descentlab report DIR`` knows how to render it.

Two ways to make one:

- :meth:`RunDir.create` for long runs that must survive a crash (training): files land in
  the final directory as they are written, each one atomically, so ``--resume`` can pick up
  the last good checkpoint.
- :func:`staged_run` for runs that are all-or-nothing (one point of a sweep, a surface
  plot): everything is written into a hidden sibling folder that is renamed into place only
  when the block finishes, so the directory is either complete or absent.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from descentlab import files
from descentlab.errors import UserInputError

__all__ = ["RunDir", "GrowingCsv", "staged_run", "default_run_path", "check_out", "check_folder"]

CONFIG = "config.json"


def default_run_path(kind: str, root: str | os.PathLike = "runs") -> Path:
    """``runs/<kind>-<YYYYmmdd-HHMMSS>``; a numeric suffix keeps two runs in one second apart."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{kind}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(root) / f"{kind}-{stamp}-{suffix}"
    return path


def check_out(path: str | os.PathLike, kind: str, *, resumable: bool = False, option: str = "--out",
              hint: str = "") -> Path:
    """Check a run directory a command is about to write, before any work; return it as a Path.

    One rule for every command: an absent path or an empty directory is fine; a file, a path
    that cannot be created or written, or a non-empty directory is a one-line
    :class:`UserInputError` — unless ``resumable`` and the directory is a run of the same
    ``kind`` (a command that resumes by rerunning with the same ``--out``). ``hint`` ends the
    message about a non-empty directory.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise UserInputError(f"{option} {path} is a file, not a directory")
        if any(path.iterdir()):
            if resumable and (path / CONFIG).is_file():
                try:
                    same = RunDir.open(path).kind == kind
                except UserInputError:
                    same = False
                if same:
                    return path
            if resumable and not hint:
                hint = f" (a {kind} run there resumes when the command that started it is rerun)"
            raise UserInputError(f"{option} {path} already exists and is not empty; choose a new directory{hint}")
    return check_folder(path, option)


def check_folder(path: str | os.PathLike, option: str) -> Path:
    """Check a folder files will be written into (it may hold files already), before any work.

    A file, or a place where the folder cannot be created or written (a read-only or pseudo
    file system, a missing permission), is a one-line :class:`UserInputError` that starts with
    ``option`` and the path; an absent folder is not created here.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise UserInputError(f"{option} {path} is a file, not a directory")
        _probe(path, f"{option} {path}")
        return path
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserInputError(f"{option} {path}: {ancestor} is a file, not a directory")
    _probe(ancestor, f"{option} {path}")
    return path


def _probe(folder: Path, what: str) -> None:
    """Create and remove a temporary folder in ``folder``: the only test of "can we write
    there" that also holds for root and for pseudo file systems (``/proc``)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".descentlab-probe.", dir=folder))
    except OSError as error:
        raise UserInputError(f"{what}: cannot create it in {folder} ({error.strerror or error})") from None


@dataclass(frozen=True)
class RunDir:
    """A run directory on disk. All writes are atomic."""

    path: Path

    @classmethod
    def create(cls, path: str | os.PathLike, kind: str, config: Mapping[str, Any]) -> "RunDir":
        """Make ``path`` (which must be absent or empty) and write its ``config.json``."""
        path = check_out(path, kind, option="run directory")
        made = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        try:
            run.write_json(CONFIG, {"kind": kind, **config})
        except BaseException:  # e.g. a full disk: leave no run without its config behind
            _remove_empty(made)
            raise
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        """An existing run directory (one with a ``config.json``)."""
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise UserInputError(f"{path} is not a run directory (no {CONFIG})")
        return cls(path)

    @property
    def config(self) -> dict[str, Any]:
        """The parsed ``config.json`` (a one-line :class:`UserInputError` when it is not a JSON object)."""
        try:
            config = self.read_json(CONFIG)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserInputError(f"{self.path / CONFIG} is not valid JSON ({error})") from None
        if not isinstance(config, dict):
            raise UserInputError(f"{self.path / CONFIG} is not a JSON object")
        return config

    @property
    def kind(self) -> str:
        """Which command wrote this run."""
        kind = self.config.get("kind")
        if not isinstance(kind, str):
            raise UserInputError(f"{self.path / CONFIG} has no \"kind\" (which command wrote the run)")
        return kind

    def file(self, name: str) -> Path:
        """The path of ``name`` inside the run (the file need not exist)."""
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        return files.write_json(self.path / name, obj)

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def write_text(self, name: str, text: str) -> Path:
        return files.write_text(self.path / name, text)

    def write_csv(self, name: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
        """Write ``rows`` (dicts) as a CSV with a header; columns default to the first row's keys."""
        columns = list(columns if columns is not None else (rows[0].keys() if rows else []))
        return files.write_text(self.path / name, _csv_text(columns, rows, header=True))

    def read_csv(self, name: str) -> list[dict[str, str]]:
        """Rows of a CSV as dicts of strings (convert with ``float`` where needed)."""
        with open(self.path / name, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def exists(self, name: str) -> bool:
        return (self.path / name).exists()


def _csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], *, header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class GrowingCsv:
    """A CSV of a list that only grows (training's metrics), rewritten atomically each time.

    :meth:`write` formats only the rows added since the last call and writes the whole text:
    with :meth:`RunDir.write_csv` at every checkpoint, a run of n steps formatted O(n²) rows,
    a cost that comes to dominate a long run checkpointed often (the timing is in
    ``bench/RESULTS.md``); here each row is formatted once and what grows is only the bytes
    written.
    """

    def __init__(self, run: RunDir, name: str, columns: Sequence[str]) -> None:
        self.path = run.path / name
        self.columns = list(columns)
        self._chunks = [_csv_text(self.columns, [], header=True)]
        self._count = 0

    def write(self, rows: Sequence[Mapping[str, Any]]) -> Path:
        """Write ``rows`` atomically; the first rows must be those of the previous call, unchanged."""
        if len(rows) < self._count:
            raise ValueError(f"rows shrank from {self._count} to {len(rows)}: a GrowingCsv only grows")
        if len(rows) > self._count:
            self._chunks.append(_csv_text(self.columns, rows[self._count :], header=False))
            self._count = len(rows)
        return files.write_text(self.path, "".join(self._chunks))


@contextmanager
def staged_run(path: str | os.PathLike, kind: str, config: Mapping[str, Any]) -> Iterator[RunDir]:
    """Build a run in a hidden sibling folder; rename it to ``path`` only if the block succeeds.

    On any exception the partial folder is removed, so ``path`` is complete or absent. An
    empty directory at ``path`` is replaced (see :func:`check_out`).
    """
    path = check_out(path, kind, option="run directory")
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # e.g. runs/, removed on failure
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        os.chmod(staging, files.default_mode(directory=True))  # mkdtemp's 0700 would hide the report
        run = RunDir(staging)
        run.write_json(CONFIG, {"kind": kind, **config})
        yield run
        if path.is_dir():
            path.rmdir()  # the empty directory check_out accepted (rmdir refuses a non-empty one)
        os.replace(staging, path)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(made)
        if isinstance(error, OSError) and error.errno in files.DISK_FULL and error.filename \
                and staging in Path(error.filename).parents:  # name the file as the user knows it
            raise OSError(error.errno, error.strerror, str(path / Path(error.filename).relative_to(staging))) from error
        raise


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove the folders a failed run created, deepest first; ``rmdir`` leaves any folder
    something else wrote into."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break
