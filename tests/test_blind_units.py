"""Units whose signal faded in the layers below: half of them off is not dead units.

A plain ReLU MLP 20 layers deep (width 64) at PyTorch's default initialisation, SGD 0.01 momentum
0.9 on the digits: each layer scales the signal's variance by about 1/6 (weights uniform in
±1/√fan_in, variance 1/(3 fan_in), halved by the ReLU), so from the sixth layer on every unit sees
its bias alone, on or off alike for every sample: about half read "dead". The monitor said
``dead_units`` at step 30, its remedy LeakyReLU or the half-dead layers re-initialised (its trials:
LeakyReLU 1.75 after 50 steps, the rest 2.30; at lr 0.1 none moved the loss from chance); every layer
re-initialised reaches 1.56, and the same MLP Kaiming-initialised trains. Oracles:
the units' spread over the samples against their root-mean-square computed from the activations
directly, and the Kaiming-initialised counterpart.
"""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.layer_signals import measure_layers
from descentlab.critical.remedies import remedies_for
from descentlab.critical.verdicts import BLIND_VARIATION
from descentlab.curvature import EmpiricalLoss


def _digits():
    data = load_digits()
    return torch.tensor(data.data / 16, dtype=torch.float32), torch.tensor(data.target)


def _deep(depth=14, kaiming=False):
    torch.manual_seed(0)
    layers, width = [], 64
    for _ in range(depth):
        layers += [nn.Linear(width, 64), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(64, 10))
    if kaiming:
        for module in model:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
    return model


def test_the_variation_is_the_activations_own_spread_over_their_size():
    X, y = _digits()
    model = _deep()
    signals = measure_layers(EmpiricalLoss(model, F.cross_entropy, (X[:256], y[:256])))
    with torch.no_grad():
        h, expected = X[:256].double(), []
        for module in model.double():
            h = module(h)
            if isinstance(module, nn.ReLU):
                rms = h.pow(2).mean(0).sqrt()
                alive = rms > 0
                spread = h.std(0, unbiased=False)
                expected.append(float((spread[alive] / rms[alive]).median()))
    got = [u.variation for u in signals.units]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert abs(a - b) <= 1e-4 * b + 1e-12  # float32 forward against float64
    assert expected[0] > 0.3 and expected[-1] < 1e-4  # the fade, by the activations themselves


def _run(model, steps=40, remedies=True):
    X, y = _digits()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, remedies=remedies)
    generator = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        index = torch.randint(0, len(X), (64,), generator=generator)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        monitor.update(step, loss.detach(), model)
    with torch.no_grad():
        return monitor, float(F.cross_entropy(model(X), y)), optimizer


def test_a_faded_signal_is_named_vanishing_and_every_layer_re_initialised():
    model = _deep()
    monitor, _, optimizer = _run(model)
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    assert stall.verdict == "vanishing_gradient"
    units = stall.evidence["layers"]["units"]
    assert any(u["dead"] >= 0.5 for u in units)  # what the dead-units rule read alone
    assert all(u["variation"] <= BLIND_VARIATION for u in units if u["dead"] >= 0.5)
    assert "re-initialise every layer" in stall.remedy
    menu = remedies_for(stall.verdict, stall.evidence, optimizer, batch_size=64, n_data=1797, trial_steps=50)
    reinit = next(r for r in menu if r.name == "reinit")
    linear = tuple(name for name, module in model.named_modules() if isinstance(module, nn.Linear))
    assert reinit.change.reinit == linear
    assert stall.trials["ranking"][0] == "reinit"
    _, trained, _ = _run(_deep(kaiming=True), steps=300, remedies=False)
    _, left, _ = _run(_deep(), steps=300, remedies=False)
    assert trained < 0.5 * left  # the fix the remedy names, from the start
