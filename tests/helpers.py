"""Small builders shared by several test files (pytest puts this folder on sys.path)."""

import torch

from descentlab.problems.workloads import get_workload

F64 = torch.float64


def matrix_with_spectrum(eigenvalues, seed=0):
    """A dense symmetric matrix Q diag(eigenvalues) Q^T with a seeded random orthogonal Q."""
    g = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    return Q @ torch.diag(torch.as_tensor(eigenvalues, dtype=F64)) @ Q.T


def lecture_at(w1, w2, dtype=F64):
    """The lecture's model y = w1*w2*x at (w1, w2), its loss and its one datum (x = 1, y = 1)."""
    workload = get_workload("lecture", dtype=dtype)
    model = workload.make_model()
    with torch.no_grad():
        model.w1.fill_(w1)
        model.w2.fill_(w2)
    return model, workload.loss_fn, (workload.X_train, workload.y_train)


def readme_block(after):
    """The first ```python block of README.md after the text ``after`` (what a README test runs as written)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text[text.index(after):], re.S).group(1)


def loss_of_flat(model, loss_fn, X, y):
    """``(loss, theta)``: the loss of ``model`` on ``(X, y)`` as a function of its trainable parameters
    flattened (torch.func's ``functional_call``), and those parameters now: what an exact-Hessian
    oracle differentiates twice."""
    from torch.func import functional_call

    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    shapes = [(name, p.shape, p.numel()) for name, p in params.items()]

    def loss(theta):
        tensors, start = {}, 0
        for name, shape, size in shapes:
            tensors[name] = theta[start:start + size].reshape(shape)
            start += size
        return loss_fn(functional_call(model, tensors, (X,)), y)

    return loss, torch.cat([p.reshape(-1) for p in params.values()])


def watched_steps(loop, monitor, step_loss, steps, *, until=None, step_scheduler=False):
    """The README's loop with a monitor, from ``loop.step`` on: per step ``zero_grad``, the step's
    loss ``step_loss()``, ``backward``, the optimizer's step (and ``loop.scheduler``'s, with
    ``step_scheduler``), ``loop.step`` advanced, the monitor's ``on_step_end`` and its pending
    request applied. Stops after ``steps`` steps, or as soon as ``until(monitor)`` holds; returns
    the number of steps taken."""
    for taken in range(1, steps + 1):
        loop.optimizer.zero_grad()
        loss = step_loss()
        loss.backward()
        loop.optimizer.step()
        if step_scheduler and loop.scheduler is not None:
            loop.scheduler.step()
        loop.step += 1
        monitor.on_step_end(loop, loss.detach())
        if monitor.control.pending:
            monitor.control.apply(loop)
        if until is not None and until(monitor):
            return taken
    return steps


def update_steps(model, optimizer, X, y, monitor=None, *, steps, loss_fn=None, until_stall=False, sign=1.0,
                 scheduler=None):
    """The README's loop that calls ``monitor.update`` after each step (``None``: unmonitored): batches
    of 64 drawn from a generator seeded 1, ``loss_fn`` (default: cross-entropy) on each, ``steps``
    steps or, with ``until_stall``, until ``update`` returns a stall. ``sign`` times the loss is
    backpropagated (-1: a loop that climbs it) while the loss itself goes to the monitor;
    ``scheduler`` is stepped after each step. Returns the last batch loss."""
    from torch.nn import functional as F

    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    generator = torch.Generator().manual_seed(1)
    loss = None
    for step in range(1, steps + 1):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = loss_fn(model(X[index]), y[index])
        (sign * loss).backward()  # times 1.0: the same gradient, bit for bit
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if monitor is not None and monitor.update(step, loss.detach(), model) is not None and until_stall:
            break
    return loss


def digits_mlp_loop(make_optimizer, *, fill=None, remedies=False, make_scheduler=None, total_steps=300, steps=300):
    """README's loop on the digits: the MLP 64-64-10 (ReLU, seed 0; every parameter set to ``fill``
    where given) trained ``steps`` steps by ``make_optimizer(parameters)`` (and its
    ``make_scheduler(optimizer)``, stepped after each step) on batches of 64 drawn from a generator
    seeded 1, a monitor attached (no budget; with ``remedies`` the trials' winner applied), the run's
    length given as ``total_steps``. Returns (the final loss on all the digits, the monitor's stalls)."""
    from sklearn.datasets import load_digits
    from torch import nn
    from torch.nn import functional as F

    from descentlab.critical import StallMonitor
    from descentlab.engine.callbacks import LoopState

    digits = load_digits()
    X, y = torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    if fill is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(fill)
    optimizer = make_optimizer(model.parameters())
    scheduler = make_scheduler(optimizer) if make_scheduler is not None else None
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, remedies=remedies,
                           apply_remedy=remedies, budget=None)
    loop = LoopState(model, optimizer, scheduler, batch_size=64, n_train=len(X), total_steps=total_steps)
    monitor.on_train_start(loop)
    gen = torch.Generator().manual_seed(1)

    def batch_loss():
        idx = torch.randint(0, len(X), (64,), generator=gen)
        return F.cross_entropy(model(X[idx]), y[idx])

    watched_steps(loop, monitor, batch_loss, steps, step_scheduler=True)
    monitor.on_train_end(loop)
    with torch.no_grad():
        return float(F.cross_entropy(model(X), y)), monitor.stalls


def autograd_hessian(model, loss_of):
    """The Hessian of ``loss_of(bound)`` over ``model``'s parameters flattened in their order, by
    ``torch.autograd.functional.hessian`` (an oracle apart from torch.func), where ``bound`` runs
    the model at the point being differentiated: ``bound(x)``."""
    from torch.func import functional_call

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def of_flat(theta):
        parts, at = {}, 0
        for name, shape in zip(names, shapes):
            parts[name] = theta[at:at + shape.numel()].reshape(shape)
            at += shape.numel()
        return loss_of(lambda *inputs: functional_call(model, parts, inputs))

    return torch.autograd.functional.hessian(of_flat, flat)
