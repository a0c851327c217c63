"""Atomic file writes and safe checkpoint loading.

Every file descentlab writes goes to a temporary name in the same folder and is then
renamed over the target (``os.replace`` is atomic on POSIX and Windows), so a crash or a
full disk never leaves a half-written config, metrics table or checkpoint behind.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_bytes", "write_text", "write_json", "save_torch", "load_torch", "load_state_dict",
           "default_mode", "umask", "DISK_FULL"]

#: ``errno`` values that mean the disk (or the user's quota, or the largest file allowed) is full.
DISK_FULL = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, name))


def umask() -> int:
    """The process's umask (read without changing it for longer than the two calls)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode ``open()`` or ``mkdir()`` would give a new file (``0o666``) or directory
    (``0o777``) under the current umask: ``0o644`` / ``0o755`` with the usual umask 022.

    ``mkstemp`` and ``mkdtemp`` create private (``0o600`` / ``0o700``) entries; what we rename
    into place gets this mode instead, so others can read a report as they can any other file.
    """
    return (0o777 if directory else 0o666) & ~umask()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path (mode as ``open()`` would give it).

    On a full disk (an ``errno`` in :data:`DISK_FULL`) the ``OSError`` names ``path`` (a failed
    ``write`` names no file), and ``path`` keeps its previous contents.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, default_mode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as error:
        if error.errno in DISK_FULL and error.filename != str(path):
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (tensors, dicts, lists, numbers only)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue())


def load_torch(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint written by :func:`save_torch` (or ``torch.save``) without unpickling
    arbitrary objects.

    A missing, truncated or foreign file raises :class:`~descentlab.errors.UserInputError`
    with one line that says so, instead of the unpickler's ``KeyError: 174812789``.
    """
    import pickle
    import zipfile

    import torch

    from descentlab.errors import UserInputError

    path = Path(path)
    if not path.exists():
        raise UserInputError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise UserInputError(f"checkpoint {path} is not a file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error) and zipfile.is_zipfile(path):
            raise UserInputError(f"{path} holds objects other than tensors and numbers (it would need unsafe "
                                 "unpickling); save a state_dict: torch.save(model.state_dict(), path)") from None
        raise UserInputError(f"{path} is not a checkpoint (truncated, or not written by torch.save)") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, IndexError, TypeError, AttributeError):
        # torch's zip reader and the weights-only unpickler fail on junk bytes with any of these
        raise UserInputError(f"{path} is not a checkpoint (truncated, or not written by torch.save)") from None


def load_state_dict(model: Any, state: Any, source: str | os.PathLike) -> Any:
    """``model.load_state_dict(state)``, or one line naming every key and shape that does not fit.

    ``state`` may be a state_dict or a run's checkpoint (whose ``"model"`` entry is one).
    """
    from collections.abc import Mapping

    import torch

    from descentlab.errors import UserInputError

    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserInputError(f"{source} is not a state_dict (a dict of parameter tensors) nor a run's checkpoint")
    own = model.state_dict()
    problems = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)}"
                for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if problems or missing or unexpected:
        parts = ([f"size mismatch for {', '.join(problems)}"] if problems else []) + \
                ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected {', '.join(unexpected)}"] if unexpected else [])
        raise UserInputError(f"{source} does not fit this model (another architecture?): {'; '.join(parts)}")
    model.load_state_dict(state)
    return model


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
