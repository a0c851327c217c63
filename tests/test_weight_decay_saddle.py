"""A saddle held by weight decay: the curvature along the escape direction of the function the
optimizer descends (the loss plus ½ Σ d_i θ_i²) against the exact float64 Hessian's lowest
eigenpair, the remedy that says to lower the decay, and no escape step where it would be pulled
back; a decay too weak to hold it, and AdamW's decoupled one, change nothing."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.options import DiagnosisOptions
from descentlab.critical.policy import decide_action
from helpers import loss_of_flat


def _origin():
    """A tanh net 3-4-2 at the origin (every parameter 0) on balanced classes: the gradient is
    exactly 0 there (the output bias's too), and the weights of the two layers meet in a saddle."""
    torch.manual_seed(0)
    X = torch.randn(64, 3, dtype=torch.float64)
    y = torch.tensor([0, 1] * 32)  # balanced: the output bias's gradient is 0 too
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model, X, y


def _exact_lowest(model, X, y):
    loss, theta = loss_of_flat(model, F.cross_entropy, X, y)
    values, vectors = torch.linalg.eigh(torch.autograd.functional.hessian(loss, theta))
    return float(values[0]), vectors[:, 0]


def _stall(model, X, y, optimizer):
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, budget=None, method="exact")
    return monitor.diagnose(model, step=0)


@pytest.mark.parametrize("first_only", [False, True], ids=["every-parameter", "first-layer-only"])
def test_the_decays_curvature_along_the_escape_against_the_exact_hessian(first_only):
    model, X, y = _origin()
    lowest, v = _exact_lowest(model, X, y)
    assert lowest < -0.05
    first, rest = list(model[0].parameters()), list(model[2].parameters())
    optimizer = torch.optim.SGD([{"params": first, "weight_decay": 2.0},
                                 {"params": rest, "weight_decay": 0.0 if first_only else 2.0}], lr=0.1)
    # the flat order is the model's: 0.weight (12), 0.bias (4), 2.weight (8), 2.bias (2)
    decay = torch.cat([torch.full((16,), 2.0), torch.full((10,), 0.0 if first_only else 2.0)]).double()
    expected = lowest + float((decay * v * v).sum())
    if first_only:  # the escape direction mixes both layers: the first layer's decay alone curves it less
        assert expected < lowest + 2.0 - 0.1
    stall = _stall(model, X, y, optimizer)
    assert stall.verdict == "saddle"
    assert stall.evidence["curvature"]["decayed_escape"] == pytest.approx(expected, abs=1e-8)
    assert stall.evidence["curvature"]["decay"] == 2.0 and expected > 0  # held
    assert "lower the weight decay below" in stall.remedy and "held by weight decay 2" in stall.summary()
    assert not decide_action(stall, DiagnosisOptions()).escape  # the step would be pulled back


def test_a_decay_weaker_than_the_negative_curvature_leaves_the_saddle_to_its_escape():
    model, X, y = _origin()
    lowest, _ = _exact_lowest(model, X, y)
    stall = _stall(model, X, y, torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01))
    assert stall.verdict == "saddle"
    assert stall.evidence["curvature"]["decayed_escape"] == pytest.approx(lowest + 0.01, abs=1e-8)
    assert "weight decay" not in stall.remedy and decide_action(stall, DiagnosisOptions()).escape


def test_adamws_decoupled_decay_is_not_read_as_a_term_of_the_loss():
    model, X, y = _origin()
    stall = _stall(model, X, y, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0))
    assert stall.verdict == "saddle" and "decayed_escape" not in stall.evidence["curvature"]


def test_the_adam_trial_says_it_drops_the_runs_weight_decay():
    """The ``adam`` remedy is a new optimizer at Adam's defaults (torch's weight decay 0): where the
    run had a decay, its sentence says it is not carried over."""
    from descentlab.critical.remedies import remedies_for
    from descentlab.engine import Change, apply_change

    model = nn.Linear(3, 2)
    for decay, said in ((0.5, "Adam at lr 1e-3, without the run's weight decay 0.5"), (0.0, "Adam at lr 1e-3")):
        sgd = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=decay)
        adam = {r.name: r for r in remedies_for("slow", {}, sgd, batch_size=None, n_data=10, trial_steps=5)}["adam"]
        assert adam.text == said
        applied = apply_change(adam.change, sgd, model=model)
        assert isinstance(applied.optimizer, torch.optim.Adam)
        assert [g["weight_decay"] for g in applied.optimizer.param_groups] == [0]
