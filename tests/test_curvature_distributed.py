"""Three gloo ranks under torchrun, each with its own share of the data (even, uneven, one
rank empty), give the one-process operator on every rank."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from curvature_ranks import evaluate, problem  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_three_gloo_ranks_under_torchrun_match_one_process(tmp_path):
    prefix = str(tmp_path / "rank")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3",
               str(HERE / "curvature_ranks.py"), prefix]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    model, X, y, V = problem()
    want = evaluate(model, (X, y), V)
    for rank in range(3):
        got = torch.load(f"{prefix}{rank}.pt", weights_only=True)
        for scenario, values in got.items():
            assert int(values["n"]) == 480, (rank, scenario)
            # sums of the same products in another order: float64 rounding of a few terms
            for key in ("HV", "Hv", "loss", "grad", "dense", "GV", "trace"):
                torch.testing.assert_close(values[key], want[key], atol=1e-10, rtol=0, msg=f"{rank} {scenario} {key}")
            # Lanczos to its float64 tolerance 1e-6 on the residual: eigenvalues to ~1e-10
            torch.testing.assert_close(values["top"], want["top"], atol=0, rtol=1e-8, msg=f"{rank} {scenario} top")
