"""A loop that calls the monitor from inside its logging block's ``torch.no_grad()`` or
``torch.inference_mode()``. Before, the first ran the Hessian products without a graph and blamed
the model ("the Hessian-vector products through this model are not its Hessian's"), the second
stopped the loop ("element 0 of tensors does not require grad"). Oracle: the same run calling the
monitor outside any such block: the same tracked losses and the same stalls."""

import contextlib

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor


def _run(context):
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, total_steps=100,
                           budget=None, max_stalls=1)
    generator = torch.Generator().manual_seed(1)
    for step in range(1, 101):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        with context():
            monitor.update(step, loss.detach(), model)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    return monitor


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_the_monitor_called_with_gradients_off_measures_as_with_them_on(context):
    plain, inside = _run(contextlib.nullcontext), _run(context)
    assert plain.stalls and plain.stalls[0].verdict == "slow"
    assert inside.tracked == plain.tracked
    assert [(s.step, s.verdict, s.status) for s in inside.stalls] == [(s.step, s.verdict, s.status)
                                                                      for s in plain.stalls]
    assert inside.stalls[0].evidence["rate"]["sharpness"] == pytest.approx(
        plain.stalls[0].evidence["rate"]["sharpness"], rel=1e-6)
