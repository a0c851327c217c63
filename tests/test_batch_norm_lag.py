"""A model that trains batch-norm is tracked on its running statistics, which lag the batches' early
on: the healthy ResNet of ``bench/scale.py`` read 1.57 of its first 2.30 at its first looks for a
cause in the network, 0.45 as training computes it, and paid for two looks at a network that
trains. The stuck-high test before a look now reads the tracked samples' loss as training computes
it. Oracles: the same samples through a copy of the model in training mode, as one batch; the
user's buffers and torch's generator bit for bit; a network whose units are dead on every sample,
counted by hand, still named at its first look."""

import copy

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from helpers import update_steps

from descentlab.critical import StallMonitor
from descentlab.problems.zoo_models import ConvNet


def _digits(images: bool = False):
    digits = load_digits()
    X = torch.tensor(digits.data / 16, dtype=torch.float32)
    return (X.reshape(-1, 1, 8, 8) if images else X), torch.tensor(digits.target)


def _train(model, X, y, steps, lr=0.1, monitor=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    update_steps(model, optimizer, X, y, monitor, steps=steps, until_stall=True)
    return optimizer


def test_the_loss_as_trained_is_the_training_modes_loss_of_the_tracked_samples_and_moves_nothing():
    X, y = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32, momentum=0.01), nn.ReLU(), nn.Linear(32, 10))
    optimizer = _train(model, X, y, 30)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, total_steps=300)
    monitor.update(31, torch.tensor(1.0), model)  # builds the sample and sizes the tracked samples
    diagnoser = monitor.diagnoser
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    rng = torch.get_rng_state()

    value = diagnoser.loss_as_trained(model)

    Xs, ys = diagnoser.first(diagnoser.tracked_size)
    trained = copy.deepcopy(model).train()
    with torch.no_grad():
        expected = float(F.cross_entropy(trained(Xs), ys))
        running = float(F.cross_entropy(copy.deepcopy(model).eval()(Xs), ys))
    assert abs(value - expected) <= 1e-5 * expected
    assert abs(running - expected) > 0.1 * expected  # the lag the test reads past: running statistics of 0.01
    assert all(torch.equal(b, buffers[name]) for name, b in model.named_buffers())
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    model.eval()  # batch-norm not trained: the tracked loss is the loss a step reads
    assert diagnoser.loss_as_trained(model) is None
    assert diagnoser.loss_as_trained(nn.Sequential(nn.Linear(64, 10))) is None


def test_a_batch_norm_network_whose_units_are_all_dead_is_named_at_its_first_look():
    X, y = _digits(images=True)
    torch.manual_seed(0)
    model = ConvNet((8, 16), batchnorm=True, bn_bias=-10.0)
    with torch.no_grad():  # the oracle: every ReLU after a batch-norm is 0 on every sample, on batch statistics
        z = copy.deepcopy(model).train().features[:2](X)
    assert bool((z <= 0).all())
    monitor = StallMonitor(F.cross_entropy, (X, y), batch_size=64, total_steps=300)
    optimizer = _train(model, X, y, 300, monitor=monitor)
    assert optimizer is not None and len(monitor.stalls) == 1
    stall = monitor.stalls[0]
    assert stall.verdict == "dead_units" and stall.step <= monitor.window  # a look, not a proven plateau
    assert abs(stall.loss - torch.log(torch.tensor(10.0)).item()) < 0.01
