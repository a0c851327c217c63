"""Shared test set-up: deterministic, single-threaded torch (two pytest workers share 2 cores)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
from descentlab.openmp import set_wait_default  # noqa: E402

# Before torch loads OpenMP; inherited by the CLI subprocesses tests start (two pytest workers
# share 2 cores, so workers must not spin long).
set_wait_default()

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
