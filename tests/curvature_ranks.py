"""One rank of tests/test_curvature_distributed.py, launched by torchrun (gloo, 3 ranks).

Each scenario splits the same 480 samples over the ranks: evenly, unevenly (one batch, two
batches, a DataLoader), and with an empty rank; every rank saves what it computed, and the
test compares every rank against the one-process operator.
"""

import sys

import torch
import torch.distributed as dist
from torch import nn

from descentlab.curvature import GGNOperator, HessianOperator, lanczos, trace

F64 = torch.float64


def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(F64)
    X, y = torch.randn(480, 4, dtype=F64), torch.randint(0, 3, (480,))
    n = sum(p.numel() for p in model.parameters())
    # a transposed view: its strides are not a contiguous tensor's (the empty-rank bug's trigger)
    V = torch.randn(3, n, dtype=F64).T
    return model, X, y, V


def evaluate(model, data, V):
    op = HessianOperator(model, nn.functional.cross_entropy, data)
    return {
        "HV": op @ V,
        "Hv": op @ V[:, 0],
        "loss": op.loss(),
        "grad": op.gradient(),
        "dense": op.dense(),
        "GV": GGNOperator.like(op) @ V,
        "top": lanczos(op, k=2, which="LA").values,
        "trace": torch.tensor(trace(op, n_probes=12, method="hutchinson").value),
        "n": torch.tensor(op.n_samples),
    }


def shares(X, y, rank):
    part = lambda a, b: (X[a:b], y[a:b])  # noqa: E731
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X[400:], y[400:]), batch_size=32)
    return {
        "even": part(160 * rank, 160 * (rank + 1)),
        "uneven": [part(0, 100)] if rank == 0 else [part(100, 300), part(300, 400)] if rank == 1 else loader,
        "empty": [part(0, 170)] if rank == 0 else [part(170, 300), part(300, 480)] if rank == 1 else [],
    }


def main(out_prefix):
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        model, X, y, V = problem()
        results = {name: evaluate(model, data, V) for name, data in shares(X, y, rank).items()}
        torch.save(results, f"{out_prefix}{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
