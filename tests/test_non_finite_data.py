"""A loss made non-finite by its data, not its rate: a NaN in one row of the training data.
The ``diverged`` verdict counts the samples whose inputs or targets are not finite, names the
data in its remedy and, asked to apply remedies, does not roll back (the same batches would
bring the NaN back). Oracles: the rows counted with numpy's ``isfinite`` on the data as given;
a loss that is NaN at every point, on finite data, whose remedy must not claim the rate was
stable where nothing was measured."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.curvature.batches import non_finite_rows


def _digits():
    digits = load_digits()
    return torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)


def _run(X, y, loss_fn, steps=200, **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(X.shape[1], 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor = StallMonitor(loss_fn, (X, y), optimizer=optimizer, batch_size=64, **options)
    generator = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = loss_fn(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        monitor.update(step, loss.detach(), model)
        if monitor.control.should_stop:
            break
    return monitor, step


def test_non_finite_rows_marks_the_samples_with_a_nan_or_an_infinity_in_any_floating_tensor():
    X = torch.randn(6, 3, 2)
    X[1, 2, 0], X[4, 0, 1] = float("nan"), float("-inf")
    extra = torch.randn(6)
    extra[5] = float("inf")
    expected = ~np.isfinite(np.concatenate([X.flatten(1).numpy(), extra[:, None].numpy()], axis=1)).all(axis=1)
    assert non_finite_rows(X).tolist() == (~np.isfinite(X.flatten(1).numpy()).all(axis=1)).tolist()
    assert non_finite_rows((X, extra)).tolist() == expected.tolist()
    assert non_finite_rows({"a": X, "b": extra}).tolist() == expected.tolist()
    assert non_finite_rows(torch.arange(6)) is None  # class indices: nothing to count
    assert non_finite_rows((torch.arange(6), None)) is None


@pytest.mark.parametrize("apply", [False, True])
def test_a_nan_in_the_data_is_named_as_the_data_not_the_rate_and_is_not_rolled_back(apply):
    X, y = _digits()
    X = X.clone()
    X[777, 5] = float("nan")
    X[1200, 0] = float("inf")
    bad_rows = int((~np.isfinite(X.numpy())).any(axis=1).sum())
    options = {"remedies": True, "apply_remedy": True} if apply else {}
    monitor, stopped_at = _run(X, y, F.cross_entropy, **options)
    stall = monitor.stalls[0]
    assert stall.verdict == "diverged"
    counted = stall.evidence["data"]["non_finite"]
    assert (counted["samples"], counted["of"]) == (bad_rows, len(X)) == (2, 1797)
    assert stall.remedy.startswith(f"repair the data: {bad_rows} of the {len(X):,} samples in the training data hold")
    assert stall.remedy_applied is None and monitor.control.should_stop  # no rollback requested
    assert len(monitor.stalls) == 1 and stopped_at == stall.step


def test_a_loss_non_finite_from_the_start_on_finite_data_does_not_claim_the_rate_was_stable():
    X, y = _digits()
    assert bool(torch.isfinite(X).all())

    def loss_fn(output, target):  # the log of a negative number: NaN at every point
        return torch.log(F.cross_entropy(output, target) - 100.0)

    monitor, _ = _run(X, y, loss_fn, steps=30)
    stall = monitor.stalls[0]
    assert stall.verdict == "diverged" and stall.evidence["diverged"]["checkpoint_step"] is None
    assert stall.evidence["data"]["non_finite"]["samples"] == 0
    assert "stable" not in stall.remedy
    assert "no finite loss was read before it diverged" in stall.remedy
