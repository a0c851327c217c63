"""The tracked loss read once a window while it falls fast, at every check near a plateau: the
plateau is found at the step the every-check reading finds it, with fewer reads."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import descentlab.critical.monitor as monitor_module
from descentlab.critical import StallMonitor


def _regression_run(steps=400):
    """Full-batch gradient descent on least squares: the loss falls fast, then sits at its noise floor."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 5, generator=g)
    y = X @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(256, 1, generator=g)
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = StallMonitor(F.mse_loss, (X, y), optimizer=optimizer, window=50, budget=None, max_stalls=1)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = F.mse_loss(model(X), y)
        loss.backward()
        optimizer.step()
        monitor.update(step, loss, model)
    return monitor


def test_a_fast_fall_is_read_once_a_window_and_its_plateau_found_at_the_same_step(monkeypatch):
    sparse = _regression_run()
    monkeypatch.setattr(monitor_module, "SPARSE_ABOVE", float("inf"))  # every check reads
    dense = _regression_run()
    assert dense.stalls and sparse.stalls
    assert sparse.stalls[0].step == dense.stalls[0].step
    assert sparse.stalls[0].verdict == dense.stalls[0].verdict == "minimum"
    # the readings the sparse run made are the dense run's at the same steps (the same trajectory)
    dense_at = dict(dense.tracked)
    assert all(value == pytest.approx(dense_at[step], rel=1e-12) for step, value in sparse.tracked)
    assert len(sparse.tracked) < len(dense.tracked)
    # at step 60 the last window (1.03 at step 10 to 0.010 at 60) fell surely by more than
    # SPARSE_ABOVE · rel_tol: read next at the window's end, 100, where the fall had slowed
    steps = [step for step, _ in sparse.tracked]
    assert steps[:6] == [10, 20, 30, 40, 50, 60] and steps[6:8] == [100, 110]
