"""The gradient noise estimate against per-sample gradients computed one by one."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.critical.noise import gradient_noise
from descentlab.curvature import EmpiricalLoss


def _data():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(96, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (96,), generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    return model, X, y


def _per_sample(model, X, y):
    rows = []
    for i in range(len(y)):
        grads = torch.autograd.grad(F.cross_entropy(model(X[i:i + 1]), y[i:i + 1]), list(model.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def test_one_sample_per_batch_gives_the_exact_per_sample_variance():
    model, X, y = _data()
    G = _per_sample(model, X, y)
    mean = G.mean(0)
    s2 = float(((G - mean) ** 2).sum()) / (len(y) - 1)  # the textbook unbiased S^2
    n_data, batch = 1000, 16
    estimate = gradient_noise(EmpiricalLoss(model, F.cross_entropy, (X, y)), batch_size=batch, n_data=n_data,
                              n_batches=len(y))
    assert estimate.sample_batch == 1 and estimate.n_batches == len(y)
    # float64 sums of 96 rows: 1e-10 relative
    assert estimate.per_sample_variance == pytest.approx(s2, rel=1e-10)
    assert estimate.noise_sq == pytest.approx(s2 / batch * (1 - batch / n_data), rel=1e-10)
    unbiased = float(mean @ mean) - s2 / len(y) * (1 - len(y) / n_data)
    assert estimate.grad_norm_sq == pytest.approx(max(unbiased, 0.0), rel=1e-9)
    assert estimate.snr == pytest.approx(estimate.grad_norm_sq / estimate.noise_sq)
    b_star = estimate.critical_batch
    # at B* the signal-to-noise ratio is 1, by the same formula
    assert estimate.grad_norm_sq == pytest.approx(s2 / b_star * (1 - b_star / n_data), rel=1e-9)


def test_batches_of_several_samples_estimate_the_same_variance_without_bias():
    model, X, y = _data()
    G = _per_sample(model, X, y)
    s2 = float(((G - G.mean(0)) ** 2).sum()) / (len(y) - 1)
    # over random partitions into 12 batches of 8 the estimate is unbiased: the mean of 200 seeds
    # is within 4 of its standard errors of the exact value
    loss = EmpiricalLoss(model, F.cross_entropy, (X, y))
    values = torch.tensor([gradient_noise(loss, batch_size=4, n_data=96, n_batches=12, seed=s).per_sample_variance
                           for s in range(200)], dtype=torch.float64)
    assert abs(float(values.mean()) - s2) < 4 * float(values.std()) / 200 ** 0.5
    assert all(p.grad is None for p in model.parameters())
