"""Samples a batch does not keep apart: a loss that compares every output with every target, a
model whose output for one sample depends on the others in its batch.

Diabetes regression, a ReLU MLP whose outputs are shaped (N, 1), the targets (N,): ``F.mse_loss``
broadcasts them to (N, N) (torch warns once; ``((out - y) ** 2).mean()`` does not), the loss falls
to the targets' variance and stays, and the monitor said ``vanishing_gradient`` at step 200. An
LSTM built without ``batch_first`` and fed ``(batch, rows, pixels)`` runs its recurrence along the
batch: ``noise_floor`` at step 450, "decay the rate". Oracles: the gradient of squared error at the
outputs in closed form (paired: ``2(o - y)/N``, each output's own target alone; broadcast:
``2/N² Σ_j (o_i - y_j)``, alike at every output), the broadcast loss's floor
``min_c mean_j (c - y_j)² = var(y)``, the same model run sample by sample, and the loops fixed.
"""

import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.mixing import sample_mixing
from descentlab.critical.pairing import target_pairing
from descentlab.critical.verdicts import MIXED, UNPAIRED
from descentlab.engine import LoopState


def test_the_leak_is_the_closed_form_gradients_change_where_the_targets_stayed():
    generator = torch.Generator().manual_seed(0)
    n = 200
    out = torch.randn(n, 1, dtype=torch.float64, generator=generator)
    y = torch.randn(n, 1, dtype=torch.float64, generator=generator)
    moved = torch.cat([y[n // 2:], y[n // 2:]])  # the first half given the second half's targets
    assert target_pairing(F.mse_loss, out, y).leak == 0.0  # 2(o_i - y_i)/N reads y_i alone
    logits = torch.randn(n, 10, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    assert target_pairing(F.cross_entropy, logits, labels).leak == 0.0
    # broadcast: 2/N² Σ_j (o_i - y_j) moves by the same amount at every output, so the change where the
    # targets stayed is as large as where they moved: a leak of sqrt(rest / moved) = 1
    broadcast = target_pairing(F.mse_loss, out, y[:, 0])
    delta = 2 / n ** 2 * float((y - moved).sum())
    assert broadcast.leak == pytest.approx(1.0, rel=1e-9) and abs(delta) > 0
    assert broadcast.outputs == (1,) and broadcast.targets == ()  # one sample's
    written_out = target_pairing(lambda o, t: ((o - t) ** 2).mean(), out.float() * 1e4, y[:, 0].float())
    assert written_out.leak >= UNPAIRED  # outputs far from the targets change nothing of it
    assert target_pairing(F.mse_loss, out * 1e6, y).leak == 0.0  # nor of a paired one (a diverging run)
    half = target_pairing(F.mse_loss, out.bfloat16(), y[:, 0].bfloat16())
    assert half.leak >= UNPAIRED  # read in float32
    weights = torch.rand(10, dtype=torch.float64, generator=generator) + 0.5
    weighted = target_pairing(lambda o, t: F.cross_entropy(o, t, weight=weights), logits, labels)
    assert 0 < weighted.leak < UNPAIRED  # its denominator reads every target: paired all the same


def test_what_cannot_be_read_is_none():
    out = torch.randn(8, 1)
    assert target_pairing(F.mse_loss, out, torch.ones(8, 1)) is None  # every target alike: nothing moves
    assert target_pairing(F.mse_loss, out[:3], torch.randn(3, 1)) is None  # too few samples
    assert target_pairing(lambda o, t: torch.tensor(1.0), out, torch.randn(8, 1)) is None  # no gradient
    assert target_pairing(F.mse_loss, (out,), torch.randn(8, 1)) is None  # outputs not a tensor


class _Rows(nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        self.rnn, self.head = nn.LSTM(8, 32, batch_first=batch_first), nn.Linear(32, 10)

    def forward(self, x):
        h, _ = self.rnn(x.view(-1, 8, 8))
        return self.head(h[:, -1])


def test_mixing_is_the_change_of_half_a_batchs_outputs_without_the_other_half():
    X = torch.randn(100, 64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    apart, mixing = _Rows(True).eval(), _Rows(False).eval()
    with torch.no_grad():
        assert sample_mixing(apart, X).change == 0.0  # each sample alone gives the same output
        whole, alone = mixing(X[:64]), mixing(X[32:64])
        expected = float((alone - whole[32:]).norm() / whole[32:].norm())
        found = sample_mixing(mixing, X)
    assert found.change == pytest.approx(expected, rel=1e-6) and found.change > MIXED and found.samples == 64
    softmax_over_batch = nn.Sequential(nn.Linear(64, 10), nn.LogSoftmax(dim=0))
    with torch.no_grad():
        assert sample_mixing(softmax_over_batch, X).change > MIXED
    assert sample_mixing(apart, X[:3]) is None  # too few samples to split

    class Sampling(nn.Module):  # a VAE's reparameterisation: noise drawn in eval mode too
        def __init__(self):
            super().__init__()
            self.encode, self.decode = nn.Linear(64, 8), nn.Linear(4, 10)

        def forward(self, x):
            mean, log_var = self.encode(x).chunk(2, dim=1)
            return self.decode(mean + torch.randn_like(mean) * (0.5 * log_var).exp())

    sampling = Sampling()
    state = torch.get_rng_state()
    with torch.no_grad():
        assert sample_mixing(sampling, X) is None  # its outputs differ run to run: nothing to read
    assert torch.equal(torch.get_rng_state(), state)  # and torch's generator is where it was


def _diabetes():
    data = load_diabetes()
    X = torch.tensor(data.data, dtype=torch.float32)
    X = (X - X.mean(0)) / X.std(0)
    y = torch.tensor(data.target, dtype=torch.float32)
    return X, (y - y.mean()) / y.std()


def _regression(X, y, steps=60):
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
    monitor, model = _regression(X, y)
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    assert stall.verdict == "mixed_samples" and stall.step <= 30
    assert "((N, 1) against (N,) broadcast" in stall.remedy and stall.trials is None
    with torch.no_grad():  # the broadcast loss's floor: min over a constant c of mean_j (c - y_j)², var(y)
        floor = float(((y - y.mean()) ** 2).mean())
        assert float(F.mse_loss(model(X), y)) >= floor
    paired, model = _regression(X, y[:, None])
    assert not any(s.verdict == "mixed_samples" for s in paired.stalls)
    with torch.no_grad():
        assert float(F.mse_loss(model(X), y[:, None])) < 0.8 * floor  # paired, the same loop learns


def _rows_run(batch_first, steps=200):
    data = load_digits()
    X, y = torch.tensor(data.data / 16, dtype=torch.float32), torch.tensor(data.target)
    torch.manual_seed(0)
    model = _Rows(batch_first)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loop = LoopState(model, optimizer, batch_size=64, n_train=len(X), total_steps=steps, changes_modules=True)
    monitor = StallMonitor(F.cross_entropy, (X, y), remedies=True, apply_remedy=True)
    monitor.on_train_start(loop)
    generator = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        loop.step = step
        monitor.on_step_end(loop, loss.detach())
        if monitor.control.pending:
            monitor.control.apply(loop)
    with torch.no_grad():
        return monitor, float(F.cross_entropy(model(X), y)), model


def test_a_recurrence_along_the_batch_is_named_at_once_and_set_batch_first():
    monitor, remedied, model = _rows_run(False)
    stall = monitor.stalls[0]
    assert stall.verdict == "mixed_samples" and stall.step <= 20
    assert stall.evidence["layers"]["mixing"]["batch_first_off"] == ["rnn"]
    assert stall.remedy_applied == "batch-first" and model.rnn.batch_first
    _, fixed, _ = _rows_run(True)
    assert remedied <= 1.1 * fixed  # as the LSTM built batch first from the start
