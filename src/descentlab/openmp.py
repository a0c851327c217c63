"""How long torch's OpenMP workers spin between parallel regions (must run before torch loads),
and how many threads a curvature product uses (``threads_for``).

libgomp's default (spin ~300,000 rounds, then sleep) lets idle workers burn the cores that
the main thread needs when the machine is shared, so a small model's steps slow down many
times beside other busy jobs. Not spinning at all (``OMP_WAIT_POLICY=PASSIVE``) puts the
workers to sleep after every parallel region, and waking them is slow on a virtual machine,
so every operation over many small tensors pays for it even on an idle machine. A short spin
(1,000 rounds, libgomp's own value for oversubscribed machines) is the compromise: longer
spins are faster on an idle machine and much slower beside one busy process, PASSIVE the
reverse, and 1,000 stays near the best in both (``bench/openmp_wait.py``; its tables and the
measurements behind this choice are in ``bench/RESULTS.md``). A user's own
``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` is left alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["SPIN_COUNT", "set_wait_default", "SINGLE_THREAD_WORK", "threads_for"]

#: Rounds an idle OpenMP worker spins before it sleeps (libgomp's ``GOMP_SPINCOUNT``).
SPIN_COUNT = "1000"


def set_wait_default() -> None:
    """Set ``GOMP_SPINCOUNT`` unless the user chose a wait policy; call before importing torch."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


#: Work of one batch's forward pass (2 x multiply-adds, see ``curvature.empirical``) below which
#: curvature products run on one thread: on a shared machine a small product's parallel
#: regions are too short to pay for waiting on a descheduled second thread, and one thread is
#: faster (``bench/busy_threads.py`` times the digits MLP; the measurements behind the
#: threshold are in ``bench/RESULTS.md``). Above the threshold the free cores decide
#: (``_free_cores``), since an idle machine's second thread pays once each operation has
#: enough work to split.
SINGLE_THREAD_WORK = 5e7


@contextlib.contextmanager
def threads_for(work: float) -> Iterator[None]:
    """Run the block on as many of torch's intra-op threads as ``work`` (FLOPs of one batch's
    forward) can use: one below :data:`SINGLE_THREAD_WORK`, else at most the cores that the
    load average leaves free (so a busy machine is not asked to wait for descheduled threads at
    every parallel region). torch's own setting is restored afterwards; the user's code and
    other libraries see no change, and no environment variable is needed."""
    import torch

    before = torch.get_num_threads()
    wanted = 1 if work < SINGLE_THREAD_WORK else min(before, _free_cores())
    if wanted >= before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _free_cores() -> int:
    """Cores not taken by other runnable processes, from the 1-minute load average (this
    process counts for one while it computes); all of them where the platform has no load average."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, round(cores - max(0.0, load - 1.0))))
