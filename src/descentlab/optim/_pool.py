"""A process-wide thread pool for CPU work that runs without the GIL (numba kernels, torch ops).

torch's own kernels parallelise inside one op; the CPU paths here instead cut a step into
fixed work items and hand contiguous runs of them to torch's number of threads, so the
split never changes the numbers, only who computes them.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable, Sequence

import torch

__all__ = ["run_split"]

_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_pid = -1


def _thread_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool, _pool_pid
    with _lock:
        # a forked child process inherits the pool object but not its threads
        if _pool is None or _pool_pid != os.getpid():
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                                          thread_name_prefix="descentlab-cpu")
            _pool_pid = os.getpid()
        return _pool


def run_split(work: Callable[[int, int], None], sizes: Sequence[int]) -> None:
    """Call ``work(first, last)`` on contiguous runs of items with about equal total size.

    One run per torch thread (``torch.get_num_threads()``); a single run is called in this
    thread. ``sizes`` are the items' costs (e.g. element counts); exceptions propagate.
    """
    n = len(sizes)
    threads = max(1, min(torch.get_num_threads(), n))
    if threads == 1:
        work(0, n)
        return
    ends, total = [], 0
    for size in sizes:
        total += size
        ends.append(total)
    bounds, item = [0], 0
    for k in range(1, threads):
        while item < n - 1 and ends[item] < total * k / threads:
            item += 1
        if item + 1 > bounds[-1]:
            bounds.append(item + 1)
    if bounds[-1] != n:
        bounds.append(n)
    jobs = [_thread_pool().submit(work, lo, hi) for lo, hi in zip(bounds, bounds[1:])]
    for job in jobs:
        job.result()
