"""The monitor where the model is: on a CUDA device (skipped where there is none). Its verdict is
the CPU run's, and between its checks it never waits for the device (torch's sync debug mode
turns any synchronising call into an error)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.engine import LoopState

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _run(device):
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = torch.tensor(digits.data / 16.0, dtype=torch.float32, device=device)
    y = torch.tensor(digits.target, device=device)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).to(device)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e-3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = StallMonitor(F.cross_entropy, (X, y), budget=None)
    loop = LoopState(model, optimizer, batch_size=len(X), n_train=len(X))
    monitor.on_train_start(loop)
    for step in range(1, 201):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
        loop.step = step
        checking = step % monitor.every == 0
        if device != "cpu" and not checking:
            torch.cuda.set_sync_debug_mode("error")
        try:
            monitor.on_step_end(loop, loss.detach())
        finally:
            if device != "cpu":
                torch.cuda.set_sync_debug_mode("default")
    return monitor


def test_on_cuda_the_verdict_is_the_cpu_one_and_no_step_between_checks_waits_for_the_device():
    on_gpu, on_cpu = _run("cuda"), _run("cpu")
    assert [s.verdict for s in on_gpu.stalls] == [s.verdict for s in on_cpu.stalls] == ["saddle"]
    assert on_gpu.stalls[0].step == on_cpu.stalls[0].step
    assert on_gpu.stalls[0].min_eigenvalue == pytest.approx(on_cpu.stalls[0].min_eigenvalue, rel=1e-2)
