"""Two gloo processes, each with its own share of the data, give the one-process operator."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from descentlab.curvature import HessianOperator, lanczos

F64 = torch.float64


def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(F64)
    X, y = torch.randn(500, 4, dtype=F64), torch.randint(0, 3, (500,))
    V = torch.randn(sum(p.numel() for p in model.parameters()), 3, dtype=F64)
    return model, X, y, V


def evaluate(op, V):
    return {
        "HV": op @ V,
        "Hv": op @ V[:, 0],
        "loss": op.loss(),
        "grad": op.gradient(),
        "top": lanczos(op, k=1, which="LA", tol=1e-6).values,
        "n": torch.tensor(op.n_samples),
    }


def _worker(rank, world, init_file, out_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, X, y, V = problem()
        # unequal shares: rank 0 one batch of 170 samples (cached graph), rank 1 streams 330 in 2 batches
        if rank == 0:
            data = (X[:170], y[:170])
        else:
            data = [(X[170:400], y[170:400]), (X[400:], y[400:])]
        result = evaluate(HessianOperator(model, nn.functional.cross_entropy, data), V)
        if rank == 0:
            torch.save(result, out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_gloo_ranks_match_one_process(tmp_path):
    out_file = str(tmp_path / "rank0.pt")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # fork, not spawn: the children need not re-import torch (seconds on a shared 2-core box)
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), out_file), nprocs=2, join=True, start_method="fork")
    got = torch.load(out_file, weights_only=True)
    model, X, y, V = problem()
    want = evaluate(HessianOperator(model, nn.functional.cross_entropy, (X, y)), V)
    assert int(got["n"]) == 500
    for key in ("HV", "Hv", "loss", "grad"):
        torch.testing.assert_close(got[key], want[key], atol=1e-10, rtol=0)
    torch.testing.assert_close(got["top"], want["top"], atol=0, rtol=1e-6)
