"""A loss that does not pair each output with its own target.

Diabetes regression, a ReLU MLP whose outputs are shaped (N, 1), the targets (N,): ``F.mse_loss``
broadcasts them to (N, N) and compares every output with every target (torch warns once; a loss
written ``((out - y) ** 2).mean()`` does not). The loss falls to the targets' variance and stays:
the monitor said ``slow`` at step 410, "raise the rate". Oracles: the gradient of squared error and
of cross-entropy at the outputs in closed form (paired: ``2(o - y)/N``, ``(softmax(o) - onehot(y))/N``;
broadcast: ``2/N² Σ_j (o_i - y_j)``, the same whichever target is whose), the broadcast loss's floor
``min_c mean_j (c - y_j)² = var(y)``, and the same loop with the targets shaped (N, 1).
"""

import pytest
import torch
from sklearn.datasets import load_diabetes
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.pairing import target_pairing
from descentlab.critical.verdicts import UNPAIRED


def _roll_change(before: torch.Tensor, after: torch.Tensor) -> float:
    return float((after - before).norm() / before.norm())


def test_the_change_is_the_closed_form_gradients():
    generator = torch.Generator().manual_seed(0)
    n = 200
    out = torch.randn(n, 1, dtype=torch.float64, generator=generator)
    y = torch.randn(n, 1, dtype=torch.float64, generator=generator)
    paired = target_pairing(F.mse_loss, out, y)
    expected = _roll_change(2 * (out - y) / n, 2 * (out - y.roll(1, 0)) / n)
    assert paired.change == pytest.approx(expected, rel=1e-12)
    assert paired.change > 0.5

    logits = torch.randn(n, 10, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    probabilities = logits.softmax(1)
    gradient = (probabilities - F.one_hot(labels, 10)) / n
    moved = (probabilities - F.one_hot(labels.roll(1, 0), 10)) / n
    assert target_pairing(F.cross_entropy, logits, labels).change == pytest.approx(_roll_change(gradient, moved),
                                                                                    rel=1e-12)

    # broadcast: the gradient at output i is 2/N² Σ_j (o_i - y_j), unchanged by any order of the targets
    broadcast = target_pairing(F.mse_loss, out, y[:, 0])
    assert broadcast.change <= 1e3 * torch.finfo(torch.float64).eps
    assert broadcast.outputs == (1,) and broadcast.targets == ()  # one sample's
    written_out = target_pairing(lambda o, t: ((o - t) ** 2).mean(), out.float(), y[:, 0].float())
    assert written_out.change <= UNPAIRED  # float32: rounding alone, ~1e-7
    half = target_pairing(F.mse_loss, out.bfloat16(), y[:, 0].bfloat16())
    assert half.change <= UNPAIRED  # read in float32: bfloat16's rounding would blur it


def test_what_cannot_be_read_is_none():
    out = torch.randn(8, 1)
    assert target_pairing(F.mse_loss, out, torch.ones(8, 1)) is None  # every target alike: nothing moves
    assert target_pairing(F.mse_loss, out[:1], torch.zeros(1, 1)) is None  # one sample
    assert target_pairing(lambda o, t: torch.tensor(1.0), out, torch.randn(8, 1)) is None  # no gradient
    assert target_pairing(F.mse_loss, (out,), torch.randn(8, 1)) is None  # outputs not a tensor
    assert target_pairing(F.mse_loss, torch.zeros(8, 1), torch.zeros(8, 1) + torch.arange(8.0)[:, None]) is not None


def _diabetes():
    data = load_diabetes()
    X = torch.tensor(data.data, dtype=torch.float32)
    X = (X - X.mean(0)) / X.std(0)
    y = torch.tensor(data.target, dtype=torch.float32)
    return X, (y - y.mean()) / y.std()


def _run(X, y, steps=60):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    monitor = StallMonitor(F.mse_loss, (X, y), optimizer=optimizer, batch_size=64, remedies=True)
    generator = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = F.mse_loss(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        monitor.update(step, loss.detach(), model)
    return monitor, model


@pytest.mark.filterwarnings("ignore:Using a target size")
def test_a_broadcast_loss_is_named_with_the_shapes_and_nothing_to_try():
    X, y = _diabetes()
    monitor, model = _run(X, y)
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    assert stall.verdict == "unscaled_inputs"
    assert "(outputs (N, 1) against targets (N,))" in stall.remedy and stall.trials is None
    assert stall.evidence["layers"]["pairing"]["change"] <= UNPAIRED
    with torch.no_grad():  # the broadcast loss's floor: min over a constant c of mean_j (c - y_j)², var(y)
        floor = float(((y - y.mean()) ** 2).mean())
        assert float(F.mse_loss(model(X), y)) >= floor
    paired, model = _run(X, y[:, None])
    assert not any((s.evidence.get("layers") or {}).get("pairing", {}) and
                   s.evidence["layers"]["pairing"]["change"] <= UNPAIRED for s in paired.stalls)
    with torch.no_grad():
        assert float(F.mse_loss(model(X), y[:, None])) < 0.8 * floor  # paired, the same loop learns
