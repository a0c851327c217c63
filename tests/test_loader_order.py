"""A ``DataLoader`` that reads the digits sorted by class (``shuffle=False``).

Before, the monitor's fixed sample was the loader's first 512 samples: classes 0-2 alone, so
every loss it tracked was those classes'. Now a loader read in order gives a seeded random subset
of its dataset (collated by its own ``collate_fn``), and its first batch's classes against that
sample's say the data is sorted: ``biased_batches``, "shuffle the data" (before: ``dead_units``,
the units that momentum SGD over one class after another had killed). Oracles: numpy's class
histograms (total variation), the loader's own batches and torch's generator before and after.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from descentlab.critical import StallMonitor
from descentlab.critical.sample import fixed_sample, order_evidence
from descentlab.engine import LoopState


def _sorted_digits():
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    order = y.argsort(stable=True)
    return X[order], y[order]


def _shares(labels):
    return np.bincount(np.asarray(labels), minlength=10) / len(labels)


def test_a_loader_read_in_order_gives_a_random_sample_and_is_left_as_it_was():
    X, y = _sorted_digits()
    loader = DataLoader(TensorDataset(X, y), batch_size=64, shuffle=False)
    state = torch.get_rng_state()
    (Xs, ys), n = fixed_sample(loader, 512, seed=0)
    assert n == len(y) and len(ys) == 512
    assert 0.5 * np.abs(_shares(ys) - _shares(y)).sum() < 0.1  # the data's class shares, not classes 0-2
    index = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:512].sort().values
    assert torch.equal(Xs, X[index]) and torch.equal(ys, y[index])
    order = order_evidence(loader, (Xs, ys))
    first = y[:64].numpy()
    assert order["first_batch_classes"] == 1 and order["sample_classes"] == 10
    assert order["distance"] == pytest.approx(0.5 * np.abs(_shares(first) - _shares(ys)).sum(), abs=1e-12)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(loader, DataLoader(TensorDataset(X, y), batch_size=64)))


def test_a_loader_that_shuffles_or_data_in_no_order_says_nothing_of_order():
    X, y = _sorted_digits()
    shuffled = DataLoader(TensorDataset(X, y), batch_size=64, shuffle=True)
    assert order_evidence(shuffled, (X[:512], y[:512])) is None
    own = torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(range(len(y))), 64, drop_last=False)
    assert order_evidence(DataLoader(TensorDataset(X, y), batch_sampler=own), (X[:512], y[:512])) is None
    mixed = torch.randperm(len(y), generator=torch.Generator().manual_seed(5))
    loader = DataLoader(TensorDataset(X[mixed], y[mixed]), batch_size=64, shuffle=False)
    sample = fixed_sample(loader, 512, seed=0)[0]
    found = order_evidence(loader, sample)
    expected = 0.5 * np.abs(_shares(y[mixed][:64]) - _shares(sample[1])).sum()
    assert found["distance"] == pytest.approx(expected, abs=1e-12) and found["distance"] < 0.5


def test_digits_sorted_by_class_are_named_with_shuffling():
    X, y = _sorted_digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    loader = DataLoader(TensorDataset(X, y), batch_size=64, shuffle=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loop = LoopState(model, optimizer, None, batch_size=64, n_train=len(X), total_steps=200)
    monitor = StallMonitor(F.cross_entropy, loader, max_stalls=1)
    monitor.on_train_start(loop)
    step = 0
    while step < 200 and not monitor.stalls:
        for xb, yb in loader:
            step += 1
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            loop.step = step
            monitor.on_step_end(loop, loss.detach())
            if monitor.stalls or step == 200:
                break
    stall = monitor.stalls[0]
    assert stall.verdict == "biased_batches" and stall.remedy.startswith("shuffle the data")
    assert stall.evidence["batches"]["order"]["first_batch_classes"] == 1
