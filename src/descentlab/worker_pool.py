"""A process pool whose workers end when the process that started them is interrupted or dies.

``concurrent.futures.ProcessPoolExecutor`` on its own leaves workers behind on an interrupt:
leaving its ``with`` block waits for every submitted task, so a Ctrl-C (or a SIGINT or SIGTERM
that a scheduler or ``timeout`` sends to the main process only) kept a sweep's workers training
until they were killed by hand. :func:`worker_pool` wraps it so that

- the workers ignore SIGINT: the main process alone decides what an interrupt means (a
  terminal's Ctrl-C reaches the whole process group, and a worker would otherwise report a
  ``KeyboardInterrupt`` as a task's result and take the next task);
- when the ``with`` block is left by an exception (``KeyboardInterrupt``, a task's error) the
  queued tasks are cancelled and the workers are terminated (SIGTERM, then SIGKILL after a
  grace period), instead of being waited for;
- a worker whose parent dies without cleaning up (SIGKILL, a crash) exits at once: a thread
  in each worker waits on the parent's sentinel (``multiprocessing.parent_process()``), which
  becomes ready when the parent is gone;
- the executor's own threads (its manager and its call queue's feeder) are started with SIGINT
  and SIGTERM blocked, so the kernel hands those signals to the main thread: one handed to a
  helper thread leaves a main thread blocked in ``future.result()`` asleep with the signal
  pending, and the interrupt is never raised (seen once in 27 interrupted runs beside a busy
  test suite: the parent still waiting 30 s later, its traceback in ``result``).

Any layer may use it (like :mod:`descentlab.files`); it imports only the standard library.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["worker_pool", "ORPHAN_EXIT"]

#: Exit status of a worker that found its parent gone (128 + SIGHUP, what a hang-up gives).
ORPHAN_EXIT = 129

#: Seconds a terminated worker gets to exit on SIGTERM before it is killed.
_GRACE = 2.0
#: The signals the executor's helper threads block, so that only the main thread takes them.
_MAIN_ONLY = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def worker_pool(workers: int, *, start_method: str = "spawn", initializer: Callable[..., Any] | None = None,
                initargs: tuple = ()) -> Iterator[ProcessPoolExecutor]:
    """A ``ProcessPoolExecutor`` of ``workers`` processes that never outlives an interrupt.

    Left normally, the block waits for the submitted tasks as ``ProcessPoolExecutor`` does. Left
    by any exception, pending tasks are cancelled, this pool's workers are terminated and the
    exception goes on. ``initializer(*initargs)`` (a module-level function) runs in each worker
    after the signal set-up.

    The workers are found as the ``multiprocessing`` children this process started while the
    block ran, so a pool must not share its block with another pool's start-up in another thread.
    """
    context = multiprocessing.get_context(start_method)
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                               initargs=(initializer, tuple(initargs)))
    try:
        with _blocked(_MAIN_ONLY):  # the executor starts its threads at the first task: they inherit the mask
            pool.submit(_nothing).result()
        yield pool
    except BaseException:
        # the workers first: a worker that lived on would take the next queued task meanwhile
        _terminate([p for p in multiprocessing.active_children() if p not in before])
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _terminate(processes: list) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(_GRACE)
        if process.is_alive():
            process.kill()
            process.join()


@contextlib.contextmanager
def _blocked(signals: set) -> Iterator[None]:
    """``signals`` blocked in this thread inside (a signal sent meanwhile is taken after)."""
    if not hasattr(signal, "pthread_sigmask"):  # no POSIX threads' masks (Windows): nothing to do
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _nothing() -> None:
    """The task that starts a pool's threads."""


def _start_worker(initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    """Runs first in every worker: signals, the parent watch, then the caller's initializer."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _MAIN_ONLY)  # inherited from the thread that blocked them
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the parent's handlers; SIGTERM from _terminate must end it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_when_gone, args=(parent.sentinel,), name="descentlab-parent-watch",
                         daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def _exit_when_gone(sentinel: int) -> None:
    from multiprocessing.connection import wait

    wait([sentinel])
    os._exit(ORPHAN_EXIT)  # nothing of a task's half-done work is worth saving: the sweep resumes it
