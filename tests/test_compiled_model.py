"""A model the loop compiles (``torch.compile``): its compiled backward takes no double backward,
so the monitor's first Hessian product (timing a diagnosis at a plateau) raised inside the user's
loop and stopped it. The monitor now measures a compiled module eagerly
(``torch.compiler.set_stance("force_eager")`` for its own work: the user's compiled code is
neither traced again nor recompiled for the monitor's sample shapes). Oracle: the same loop
uncompiled, which the compiled one follows step for step."""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor


def _run(compiled: bool):
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    net = torch.compile(model, backend="aot_eager") if compiled else model  # aot_eager: no C++ compiler needed
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-5, momentum=0.9)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, total_steps=60)
    generator = torch.Generator().manual_seed(1)
    for step in range(1, 61):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = F.cross_entropy(net(X[index]), y[index])
        loss.backward()
        optimizer.step()
        monitor.update(step, loss.detach(), net)
    return monitor.stalls, [p.detach().clone() for p in model.parameters()]


def test_a_stalled_compiled_model_is_diagnosed_as_its_eager_twin():
    compiled, weights = _run(True)
    eager, eager_weights = _run(False)
    for a, b in zip(weights, eager_weights):
        torch.testing.assert_close(a, b)  # the monitor left the compiled run as the eager one
    assert [(s.step, s.status, s.verdict) for s in compiled] == [(s.step, s.status, s.verdict) for s in eager]
    assert compiled and compiled[0].status == "diagnosed" and compiled[0].verdict == "slow"
    assert abs(compiled[0].evidence["rate"]["largest_stable_lr"] / eager[0].evidence["rate"]["largest_stable_lr"]
               - 1) < 1e-3
