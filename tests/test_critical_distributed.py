"""Two gloo ranks, each with its share of the data: classify and escape decide as one process with all of it."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from descentlab.critical import classify, escape

F64 = torch.float64


def problem():
    """A tanh MLP 3-1-1 (one hidden unit: a simple lambda_min) next to its origin on centred regression data: a saddle (like the stall preset)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 3, generator=g, dtype=F64)
    y = X[:, :1] * X[:, 1:2] + 0.5 * X[:, :1]
    y = y - y.mean()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1), nn.Tanh(), nn.Linear(1, 1)).to(F64)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e-4)
    return model, X, y


def evaluate(model, data):
    point = classify(model, nn.functional.mse_loss, data)
    result = escape(model, nn.functional.mse_loss, data, point)
    return {
        "kind": point.kind, "spectrum": point.spectrum, "loss": torch.tensor(point.loss),
        "applied": result.applied, "step": torch.tensor(result.step_size), "after": torch.tensor(result.loss_after),
        "params": torch.cat([p.detach().reshape(-1) for p in model.parameters()]),
    }


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, X, y = problem()
        # unequal shares: rank 0 one batch of 100, rank 1 two batches (120 + 80)
        data = (X[:100], y[:100]) if rank == 0 else [(X[100:220], y[100:220]), (X[220:], y[220:])]
        torch.save(evaluate(model, data), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_gloo_ranks_classify_and_escape_like_one_process(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # fork, not spawn: the children need not re-import torch (seconds on a shared 2-core box)
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    model, X, y = problem()
    want = evaluate(model, (X, y))
    assert want["kind"] == "saddle" and want["applied"]
    for got in ranks:
        assert got["kind"] == want["kind"] and got["applied"] == want["applied"]
        assert float(got["step"]) == float(want["step"])
        torch.testing.assert_close(got["spectrum"], want["spectrum"], atol=1e-10, rtol=0)
        torch.testing.assert_close(got["loss"], want["loss"], atol=1e-12, rtol=0)
        torch.testing.assert_close(got["after"], want["after"], atol=1e-12, rtol=0)
        torch.testing.assert_close(got["params"], want["params"], atol=1e-10, rtol=0)
    # both ranks moved their copy of the model identically
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
