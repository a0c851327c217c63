"""One rank of tests/test_monitor_distributed.py (gloo): a DDP job watched by a StallMonitor on
each rank, every rank on its own share of the data. Saves what the monitor found."""

import logging
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from descentlab.critical import StallMonitor
from descentlab.engine import LoopState

from helpers import watched_steps


def problem():
    """Digits, a tanh MLP started next to the saddle at the origin (the stall preset's story)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = torch.tensor(digits.data[:600] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target[:600])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e-3)
    return model, X, y


def shares(X, y, rank, how):
    if how == "all":
        return X, y
    if how == "even":
        return X[rank::2], y[rank::2]
    if how == "uneven":  # 200 and 400 samples
        return (X[:200], y[:200]) if rank == 0 else (X[200:], y[200:])
    order = torch.argsort(y, stable=True)  # non-iid: rank 0 the 300 lowest labels (digits 0-4), rank 1 the rest
    part = order[:300] if rank == 0 else order[300:]
    return X[part], y[part]


def run(rank, world, how, steps=150, remedies=False):
    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("descentlab.monitor").addHandler(handler)
    model, X, y = problem()
    Xr, yr = shares(X, y, rank, how)
    ddp = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.5)
    monitor = StallMonitor(F.cross_entropy, (Xr, yr), sample_size=None, window=20, budget=None, remedies=remedies,
                           apply_remedy=remedies, trial_steps=10)
    loop = LoopState(ddp, optimizer, batch_size=len(X), n_train=len(X), total_steps=steps)
    monitor.on_train_start(loop)
    # every rank's mean: DDP averages the gradients, which equals the global mean for equal shares
    watched_steps(loop, monitor, lambda: F.cross_entropy(ddp(Xr), yr), steps)
    logging.getLogger("descentlab.monitor").removeHandler(handler)
    return {"stalls": [s.to_dict() for s in monitor.stalls], "tracked": monitor.tracked,
            "params": torch.cat([p.detach().reshape(-1) for p in model.parameters()]), "logged": logged}


def run_diverging(rank, world, how, steps=60):
    """Least squares on the digits' pixels by full-batch heavy-ball GD far past its stability
    limit: the loss is non-finite before the first check, and the monitor (apply_remedy) rolls
    the run back."""
    _, X, y = problem()
    target = y.float().unsqueeze(1)
    Xr, yr = shares(X, target, rank, how)
    torch.manual_seed(0)
    model = nn.Linear(64, 1)
    ddp = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.SGD(ddp.parameters(), lr=1e3, momentum=0.9)
    monitor = StallMonitor(F.mse_loss, (Xr, yr), sample_size=None, window=20, budget=None, remedies=True,
                           apply_remedy=True)
    loop = LoopState(ddp, optimizer, batch_size=len(X), n_train=len(X), total_steps=steps)
    monitor.on_train_start(loop)
    watched_steps(loop, monitor, lambda: F.mse_loss(ddp(Xr), yr), steps)
    return {"stalls": [s.to_dict() for s in monitor.stalls], "applied": [r.name for r, _ in monitor.control.applied],
            "params": torch.cat([p.detach().reshape(-1) for p in model.parameters()]),
            "lr": float(loop.optimizer.param_groups[0]["lr"])}


def run_accumulating(rank, world, how, steps=80):
    """A ReLU MLP on the digits by full-batch GD whose loop never zeroes the gradients (each
    backward adds, DDP averaging each step's gradients into the sum): the monitor (apply_remedy)
    names it and wraps the optimizer so it forgets them."""
    _, X, y = problem()
    Xr, yr = shares(X, y, rank, how)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    ddp = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
    monitor = StallMonitor(F.cross_entropy, (Xr, yr), sample_size=None, window=20, budget=None, remedies=True,
                           apply_remedy=True)
    loop = LoopState(ddp, optimizer, batch_size=len(X), n_train=len(X), total_steps=steps)
    monitor.on_train_start(loop)
    for step in range(1, steps + 1):
        loss = F.cross_entropy(ddp(Xr), yr)
        loss.backward()  # no zero_grad
        loop.optimizer.step()
        loop.step = step
        monitor.on_step_end(loop, loss.detach())
        if monitor.control.pending:
            monitor.control.apply(loop)
    return {"stalls": [s.to_dict() for s in monitor.stalls], "applied": [r.name for r, _ in monitor.control.applied],
            "params": torch.cat([p.detach().reshape(-1) for p in model.parameters()])}


def run_ringing(rank, world, how, steps=200):
    """A ReLU MLP on the digits by heavy ball at momentum 0.999 (an oscillation halves every 1,386
    steps) on batches of 32 per rank: the monitor (apply_remedy) names the ringing and lowers the
    momentum on every rank."""
    _, X, y = problem()
    Xr, yr = shares(X, y, rank, how)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    ddp = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.999)
    monitor = StallMonitor(F.cross_entropy, (Xr, yr), sample_size=None, window=20, budget=None, remedies=True,
                           apply_remedy=True)
    loop = LoopState(ddp, optimizer, batch_size=32 * world, n_train=len(X), total_steps=steps)
    monitor.on_train_start(loop)
    draws = torch.Generator().manual_seed(1 + rank)  # each rank its own batches of its share

    def batch_loss():
        index = torch.randint(0, len(Xr), (32,), generator=draws)
        return F.cross_entropy(ddp(Xr[index]), yr[index])

    watched_steps(loop, monitor, batch_loss, steps)
    return {"stalls": [s.to_dict() for s in monitor.stalls], "applied": [r.name for r, _ in monitor.control.applied],
            "params": torch.cat([p.detach().reshape(-1) for p in model.parameters()]),
            "momentum": float(loop.optimizer.param_groups[0].get("momentum", -1.0))}


def worker(rank, world, init_file, out_dir, how, remedies, job="run"):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        jobs = {"diverging": run_diverging, "accumulating": run_accumulating, "ringing": run_ringing}
        result = jobs[job](rank, world, how) if job in jobs else run(rank, world, how, remedies=remedies)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
