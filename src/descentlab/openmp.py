"""How long torch's OpenMP workers spin between parallel regions; must run before torch loads.

libgomp's default (spin ~300,000 rounds, then sleep) lets idle workers burn the cores that
the main thread needs when the machine is shared (a 610-parameter model's step
went from 0.9 ms to 25-100 ms on 2 cores beside other busy jobs). Not spinning at all
(``OMP_WAIT_POLICY=PASSIVE``) puts the workers to sleep after every parallel region, and
waking them costs ~100 us on a virtual machine: on an idle 2-core VM, torch's fused Adam over
1,000 tensors of 10k took 85 ms instead of 9 ms, and 20 steps of a small MLP 31 ms instead
of 13 ms. A short spin (1,000 rounds, libgomp's own value for oversubscribed machines) is
the compromise: longer spins are up to 2x faster on an idle machine and up to 6x slower
beside one busy process, PASSIVE the reverse, and 1,000 stays within about 2x of the best in
both (``bench/openmp_wait.py``; tables in ``bench/RESULTS.md``). A user's own
``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` is left alone.
"""

from __future__ import annotations

import os

__all__ = ["SPIN_COUNT", "set_wait_default"]

#: Rounds an idle OpenMP worker spins before it sleeps (libgomp's ``GOMP_SPINCOUNT``).
SPIN_COUNT = "1000"


def set_wait_default() -> None:
    """Set ``GOMP_SPINCOUNT`` unless the user chose a wait policy; call before importing torch."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
