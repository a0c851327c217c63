"""Parts of a model that never move while the loss still creeps down (no plateau to diagnose):
an optimizer built over the head alone, and a body run under ``torch.no_grad()``. Both loops end
at 1.20 after 800 steps where the whole MLP reaches 0.02, and the monitor said nothing. It now
says which parameters are not reached (at its first check) or not stepped (at its second, where
they have not moved since the first: a second optimizer may step them), and nothing for a loop
that is whole, however it orders ``zero_grad``, or whose body a second optimizer steps. Oracle:
the entries counted from the modules."""

import logging

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.coverage import coverage


def _loop(caplog, kind):
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    held = model[4].parameters() if kind in ("head only", "body by another") else model.parameters()
    optimizer = torch.optim.SGD(held, lr=0.1, momentum=0.9)
    other = torch.optim.SGD(model[:4].parameters(), lr=0.1) if kind == "body by another" else None
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64)
    generator = torch.Generator().manual_seed(1)
    with caplog.at_level(logging.WARNING, logger="descentlab"):
        for step in range(1, 31):
            index = torch.randint(0, len(X), (64,), generator=generator)
            optimizer.zero_grad()
            if kind == "body under no_grad":
                with torch.no_grad():
                    features = model[:4](X[index])
                out = model[4](features)
            else:
                out = model(X[index])
            loss = F.cross_entropy(out, y[index])
            loss.backward()
            optimizer.step()
            if other is not None:
                other.step()
                other.zero_grad()
            if kind == "zero_grad after step":
                optimizer.zero_grad()
            monitor.update(step, loss.detach(), model)
    body = sum(p.numel() for p in model[:4].parameters())
    return [r.getMessage() for r in caplog.records], body


@pytest.mark.parametrize("kind, words, step", [("head only", "the optimizer does not hold", 20),
                                               ("body under no_grad", "backward did not reach", 10)])
def test_parameters_that_never_move_are_told(caplog, kind, words, step):
    messages, body = _loop(caplog, kind)
    told = [m for m in messages if words in m]
    assert len(told) == 1 and told[0].startswith(f"step {step}: ")
    assert f"{body:,} of the 8,970 parameter entries" in told[0] and "'0.weight'" in told[0]


@pytest.mark.parametrize("kind", ["whole", "zero_grad after step", "body by another"])
def test_a_whole_loop_is_told_nothing(caplog, kind):
    messages, _ = _loop(caplog, kind)
    assert not [m for m in messages if "never move" in m or "does not hold" in m]


def test_coverage_counts_the_entries_of_each_part():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # frozen on purpose: not counted at all
    optimizer = torch.optim.SGD([model[1].weight, model[0].weight], lr=0.1)
    model(torch.ones(2, 3)).sum().backward()
    model[0].weight.grad = None  # as if backward had not reached it
    found = coverage(optimizer, model)
    assert (found.trainable, found.not_held, found.not_held_names) == (12 + 8 + 2, 2, ("1.bias",))
    assert (found.unreached, found.unreached_names) == (12, ("0.weight",))
