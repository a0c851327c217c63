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


def watched_steps(loop, monitor, step_loss, steps, *, until=None):
    """The README's loop with a monitor, from ``loop.step`` on: per step ``zero_grad``, the step's
    loss ``step_loss()``, ``backward``, the optimizer's step, ``loop.step`` advanced, the monitor's
    ``on_step_end`` and its pending request applied. Stops after ``steps`` steps, or as soon as
    ``until(monitor)`` holds; returns the number of steps taken."""
    for taken in range(1, steps + 1):
        loop.optimizer.zero_grad()
        loss = step_loss()
        loss.backward()
        loop.optimizer.step()
        loop.step += 1
        monitor.on_step_end(loop, loss.detach())
        if monitor.control.pending:
            monitor.control.apply(loop)
        if until is not None and until(monitor):
            return taken
    return steps
