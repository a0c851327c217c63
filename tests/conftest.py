"""Shared test set-up: deterministic, single-threaded torch (two pytest workers share 2 cores)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# Before torch loads OpenMP; inherited by the CLI subprocesses tests start. Two pytest workers on
# 2 cores with spinning OpenMP threads make small models up to 100x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
