"""Adam with an eps far above the root of its second moments (``eps=1`` where gradients are
~0.01): the denominator √v̂ + ε is ε, and Adam steps as momentum SGD at lr/eps, its
per-coordinate scaling gone. The run is slow, and the remedy says to lower eps. Oracle: v̂ is
a weighted mean of past squared gradients (weights summing to 1), so √v̂ <= the largest gradient
entry seen; the loop records that bound, and below eps every coordinate is eps-bound (share 1
exactly); with the default eps, no coordinate that ever had a gradient is."""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.stability import eps_bound_share


def _digits():
    digits = load_digits()
    return torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)


def test_an_eps_that_swamps_the_second_moments_is_named_in_the_slow_remedy():
    X, y = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1.0)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, max_stalls=1)
    generator = torch.Generator().manual_seed(1)
    largest = 0.0
    for step in range(1, 201):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[index]), y[index])
        loss.backward()
        largest = max(largest, max(float(p.grad.abs().max()) for p in model.parameters()))
        optimizer.step()
        if monitor.update(step, loss.detach(), model) is not None:
            break
    stall = monitor.stalls[0]
    assert largest < 1.0  # so √v̂ < eps on every coordinate
    assert stall.verdict == "slow"
    assert (stall.evidence["rate"]["eps"], stall.evidence["rate"]["eps_bound"]) == (1.0, 1.0)
    assert stall.remedy.startswith("lower Adam's eps (now 1; 1e-8 is the default)")
    assert eps_bound_share(optimizer) == (1.0, 1.0)


def test_the_default_eps_binds_no_coordinate_whose_gradient_stayed_away_from_zero():
    X, y = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    assert eps_bound_share(optimizer) is None  # no state before the first step
    smallest = float("inf")
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(X[:256]), y[:256]).backward()
        smallest = min(smallest, min(float(p.grad.abs()[p.grad != 0].min()) for p in model.parameters()))
        optimizer.step()
    eps, share = eps_bound_share(optimizer)
    # after 5 steps v̂ >= (1 - β2) β2^4 g_s² / (1 - β2^5) = 0.1996 g_s² for every step s: √v̂ >= 0.4468 |g_s|,
    # above eps wherever a gradient was nonzero; the coordinates no gradient reached are not counted
    assert 0.4468 * smallest > 1e-8
    assert (eps, share) == (1e-8, 0.0)
    unreached = sum(int((optimizer.state[p]["exp_avg_sq"] == 0).sum()) for p in model.parameters())
    assert unreached > 0  # the digits' always-blank pixels: weights no gradient reaches, left out of the share
    assert eps_bound_share(torch.optim.SGD(model.parameters(), lr=0.1)) is None
