"""A loop that changes its model mid-run (a layer appended in place at step 300 of 800, or another
model object passed): the monitor read the new model's losses against the old model's record, its
best near 0.005, and told `noise_floor` when the new model's loss "bounced" above that best (seeds
1-5 of 0-5; in another loop, `slow` at the change itself, the new head's 2.5 read as a plateau).
It now says the parameters changed and starts its record afresh. Oracles: the new model's loss
computed here, the entries counted from the modules, a layer frozen is no change."""

import logging

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor


def _run(caplog, change, steps=800, at=300, seed=1):
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    extra = nn.Linear(10, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, total_steps=steps)
    generator = torch.Generator().manual_seed(1)
    with caplog.at_level(logging.WARNING, logger="descentlab"):
        for step in range(1, steps + 1):
            if step == at and change == "appended":
                model.append(nn.ReLU())
                model.append(extra)
                optimizer.add_param_group({"params": extra.parameters()})
            elif step == at and change == "another model":
                model = nn.Sequential(model, nn.ReLU(), extra)
                optimizer.add_param_group({"params": extra.parameters()})
            elif step == at and change == "frozen":
                model[0].requires_grad_(False)
            index = torch.randint(0, len(X), (64,), generator=generator)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(X[index]), y[index])
            loss.backward()
            optimizer.step()
            monitor.update(step, loss.detach(), model)
    return monitor, model, (X, y)


@pytest.mark.parametrize("change", ["appended", "another model"])
def test_a_model_changed_mid_run_is_told_and_its_record_starts_afresh(caplog, change):
    monitor, model, (X, y) = _run(caplog, change)
    told = [r.getMessage() for r in caplog.records if "parameters changed" in r.getMessage()]
    assert told == ["step 300: the model's parameters changed (4,920 entries in 6 tensors, 4,810 in 4 before): "
                    "the monitor's record of the run starts afresh"]
    assert 64 * 64 + 64 + 64 * 10 + 10 == 4810 and 4810 + 10 * 10 + 10 == 4920
    assert monitor.stalls == []  # the new model's loss falls again at once: nothing to tell
    history = monitor.history
    assert history.restarted_at == 300
    first_after = next(value for step, value in history.tracked if step >= 300)
    assert history.initial == first_after and first_after > 1.0  # the new head starts above chance
    assert [p.shape for p in history.best_params] == [p.shape for p in model.parameters()]
    with torch.no_grad():
        model.eval()
        sample_X, sample_y = monitor.sample
        assert history.tracked[-1][1] == pytest.approx(float(F.cross_entropy(model(sample_X), sample_y)), rel=1e-5)


def test_a_layer_frozen_mid_run_is_no_change(caplog):
    monitor, _, _ = _run(caplog, "frozen", steps=400)
    assert not [r for r in caplog.records if "parameters changed" in r.getMessage()]
    assert monitor.history.restarted_at is None and monitor.stalls == []
