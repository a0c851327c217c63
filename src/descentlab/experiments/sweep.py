"""Run the independent points of a sweep: in this process, a local process pool, or on Ray.

A sweep is a list of :class:`SweepPoint`. Each point writes one run directory under the
sweep's root with :func:`~descentlab.rundir.staged_run`, so a directory is
complete or absent, never half-written. Running the same sweep again (after a crash, a
Ctrl-C or a SIGTERM) therefore skips every point whose directory exists and runs only the
rest; the hidden staging folder a killed run may leave behind is removed first.

- ``workers=1``: points run one after another in this process.
- ``workers=N``: a local process pool (:func:`~descentlab.worker_pool.worker_pool`: spawned
  processes, one torch thread each so N workers share N cores without oversubscription; an
  interrupt of this process terminates them, and a worker whose parent died exits).
- ``ray_address="host:port"``: each point becomes a Ray task on an existing cluster
  (``ray.init(address=...)``). Ray is an optional extra (``pip install 'descentlab[ray]'``)
  and is imported only here.

A point's ``function`` is a module-level callable ``function(run: RunDir, **kwargs)`` (it
must be importable by name in a worker); it writes its results into ``run``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from descentlab.errors import UserInputError
from descentlab.rundir import CONFIG, RunDir, staged_run

__all__ = ["SweepPoint", "SweepResult", "run_sweep", "default_workers", "open_sweep_root", "import_ray"]


@dataclass(frozen=True)
class SweepPoint:
    """One independent run of a sweep.

    Attributes:
        name: the run directory's name under the sweep root (unique within the sweep).
        kind: the ``"kind"`` written to its ``config.json``.
        function: module-level ``function(run, **kwargs)`` that fills the run directory.
        kwargs: keyword arguments for ``function``; also written to ``config.json``, so they
            must be JSON-friendly.
    """

    name: str
    kind: str
    function: Callable[..., Any] = field(repr=False)
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepResult:
    """Which points ran now and which were already finished, and every point's directory."""

    runs: tuple[RunDir, ...]
    ran: tuple[str, ...]
    skipped: tuple[str, ...]


def default_workers() -> int:
    """The number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _is_finished(path: Path) -> bool:
    # staged_run renames a directory into place only when complete, so existing == finished.
    return (path / CONFIG).is_file()


def _execute(root: str, name: str, kind: str, function: Callable[..., Any], kwargs: Mapping[str, Any],
             threads: int | None) -> str:
    """Run one point into ``root/name`` (in whatever process this is)."""
    if threads is not None:
        _limit_threads(threads)
    path = Path(root) / name
    if _is_finished(path):  # another worker or an earlier attempt got there first
        return name
    with staged_run(path, kind, dict(kwargs)) as run:
        function(run, **dict(kwargs))
    return name


def _limit_threads(threads: int) -> None:
    # Through the environment, so a torch imported later by the point starts with this many
    # threads; directly, if this worker has imported torch already.
    import sys

    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def run_sweep(
    points: Sequence[SweepPoint],
    root: str | os.PathLike,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every point of ``points`` not yet finished under ``root``; return all their directories.

    ``workers`` defaults to :func:`default_workers`; ``ray_address`` sends the points to a Ray
    cluster instead. A failing point raises after the others have been collected (the finished
    ones stay on disk, the failed one leaves nothing).
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ValueError("points must have unique names")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    todo = [p for p in points if not _is_finished(root / p.name)]
    skipped = tuple(p.name for p in points if _is_finished(root / p.name))
    if log is not None and skipped:
        log(f"resuming: {len(skipped)} of {len(points)} runs already finished, skipping them")
    leftovers = [stale for p in todo for stale in root.glob(f".{p.name}.*.partial")]
    for stale in leftovers:
        # A staging folder of a run killed hard (SIGKILL, power loss) before it could clean up.
        shutil.rmtree(stale, ignore_errors=True)
    if log is not None and leftovers:
        log(f"removed {len(leftovers)} unfinished staging folder(s) of killed runs")
    if todo:
        if ray_address:
            _run_ray(todo, root, ray_address, progress)
        else:
            workers = min(workers or default_workers(), len(todo))
            if workers == 1:
                _run_inline(todo, root, progress)
            else:
                _run_pool(todo, root, workers, progress)
    return SweepResult(
        runs=tuple(RunDir.open(root / p.name) for p in points),
        ran=tuple(p.name for p in todo),
        skipped=skipped,
    )


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="runs", unit="run", disable=not enabled)


def _run_inline(todo: Sequence[SweepPoint], root: Path, progress: bool) -> None:
    with _bar(len(todo), progress) as bar:
        for p in todo:
            _execute(str(root), p.name, p.kind, p.function, p.kwargs, None)
            bar.update(1)


def _run_pool(todo: Sequence[SweepPoint], root: Path, workers: int, progress: bool) -> None:
    from concurrent.futures import as_completed

    from descentlab.worker_pool import worker_pool

    errors: list[Exception] = []
    # spawn, not fork: forking a process whose torch has started its thread pools can hang. An
    # interrupt leaves the block early: the workers are terminated and their points rerun on resume.
    with (worker_pool(workers, start_method="spawn", initializer=_limit_threads, initargs=(1,)) as pool,
          _bar(len(todo), progress) as bar):
        futures = [pool.submit(_execute, str(root), p.name, p.kind, p.function, dict(p.kwargs), None) for p in todo]
        for future in as_completed(futures):
            try:
                future.result()
            except Exception as error:  # keep collecting: finished runs must land on disk
                errors.append(error)
            bar.update(1)
    if errors:
        raise errors[0]


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`~descentlab.errors.UserInputError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserInputError(
            "--ray needs Ray, an optional extra: pip install 'descentlab[ray]' "
            "(or drop --ray to use a local process pool)"
        ) from None
    return ray


def _run_ray(todo: Sequence[SweepPoint], root: Path, address: str, progress: bool) -> None:
    ray = import_ray()
    ray.init(address=address, ignore_reinit_error=True)
    remote = ray.remote(num_cpus=1)(_execute)
    refs = [remote.remote(str(root), p.name, p.kind, p.function, dict(p.kwargs), 1) for p in todo]
    pending = list(refs)
    try:
        with _bar(len(refs), progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done)
                bar.update(len(done))
    except KeyboardInterrupt:
        # An interrupt (SIGINT, or SIGTERM through the CLI) must not leave the cluster training.
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def open_sweep_root(path: str | os.PathLike, kind: str, config: Mapping[str, Any]) -> RunDir:
    """The top run directory of a sweep: created if absent, reopened to resume if its config matches.

    Raises :class:`~descentlab.errors.UserInputError` if ``path`` holds something else (another
    kind of run, or the same kind with different settings), so a resume never mixes two sweeps.
    """
    import json

    path = Path(path)
    if not path.exists() or not any(path.iterdir()):
        return RunDir.create(path, kind, config)
    if not (path / CONFIG).is_file():
        raise UserInputError(f"{path} exists and is not a run directory; choose another --out")
    run = RunDir.open(path)
    wanted = json.loads(json.dumps({"kind": kind, **config}, default=str))
    if run.config != wanted:
        raise UserInputError(
            f"{path} holds a different {run.kind!r} run (its config.json differs); "
            "use the same settings to resume it, or another --out"
        )
    return run
