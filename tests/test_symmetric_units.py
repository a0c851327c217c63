"""Units that are copies of each other: their share counted by hand, the verdict both ways, and a
loop started from a constant initialisation named at its first check and repaired (fresh weights
or gradient noise break the symmetry); the fresh weights against the modules' own
``reset_parameters``; the noise wrapper's kept norms against the gradients before the noise."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.critical.layer_signals import copied_share, copied_units
from descentlab.critical.remedies import remedies_for
from descentlab.critical.verdicts import decide, remedy
from descentlab.engine.model_changes import reinitialize
from descentlab.optim import GradientNoise
from helpers import digits_mlp_loop


def test_the_copied_share_counts_the_units_equal_to_another():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 3, generator=gen)
    assert copied_share(weight) == 0.0  # drawn at random: no two alike
    weight[1] = weight[2] = weight[0]
    weight[4] = weight[3]
    assert copied_share(weight) == pytest.approx(5 / 6)  # {0, 1, 2} and {3, 4}; 5 stands alone
    bias = torch.zeros(6)
    bias[2] = 0.5  # unit 2's bias tells it apart
    assert copied_share(weight, bias) == pytest.approx(4 / 6)
    assert copied_share(weight + 1e-3 * torch.randn(6, 3, generator=gen)) == 0.0  # 1e-3 apart: not copies
    assert copied_share(torch.zeros(4, 2)) == 1.0 and copied_share(torch.ones(1, 5)) == 0.0
    filters = torch.randn(4, 2, 3, 3, generator=gen)
    filters[3] = filters[1]
    assert copied_share(filters) == pytest.approx(0.5)  # a convolution's units are its filters


def test_copied_units_reads_the_trainable_weight_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    assert copied_units(model) == 0.0  # PyTorch's own initialisation
    with torch.no_grad():
        model[0].weight.fill_(0.5)  # an embedding's rows are tokens, not units
        model[3].weight[1] = model[3].weight[0]
        model[3].bias[1] = model[3].bias[0]
    assert copied_units(model) == pytest.approx(2 / 3)
    model[3].requires_grad_(False)  # frozen: no step changes it, nothing to repair
    assert copied_units(model) == 0.0
    with torch.no_grad():
        model[1].weight.fill_(0.05)
        model[1].bias.fill_(0.05)
    assert copied_units(model) == 1.0


def test_the_modules_own_initialisation_is_reset_parameters_from_a_seeded_copy_of_the_generator():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.GRU(6, 5), nn.Linear(5, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.05)
    expected = {n: p.clone() for n, p in model.named_parameters()}
    torch.manual_seed(7)
    model_oracle = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.GRU(6, 5), nn.Linear(5, 3))
    torch.manual_seed(3)  # one stream, in the order named
    model_oracle[0].reset_parameters()
    model_oracle[2].reset_parameters()
    torch.manual_seed(11)  # the test's own stream, which the remedy must not move
    for name in ("0.weight", "0.bias"):
        expected[name] = dict(model_oracle.named_parameters())[name]
    for name, p in model_oracle[2].named_parameters():
        expected[f"2.{name}"] = p
    optimizer = torch.optim.Adam(model.parameters())
    for p in model.parameters():
        optimizer.state[p] = {"step": torch.tensor(1.0)}
    before = torch.get_rng_state()
    reinitialize(model, ["0", "2"], "module", optimizer, seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # torch's own generator left where it was
    for name, p in model.named_parameters():
        assert torch.equal(p, expected[name]), name
    # their moments cleared, the untouched layer's kept
    assert {id(p) for p in optimizer.state} == {id(p) for p in model[3].parameters()}


def test_the_reinit_remedy_for_copies_draws_the_copies_and_the_layer_they_feed():
    evidence = _evidence(1.0)
    evidence["layers"]["layers"].append({"name": "4", "kind": "Linear", "relative": 0.1, "copies": 0.0})
    sgd = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    offered = {r.name: r for r in remedies_for("symmetric_units", evidence, sgd, batch_size=None, n_data=100,
                                               trial_steps=20)}
    # the units of "0" are copies, and so are the columns of "2" that read them: both drawn again
    assert offered["reinit"].change.reinit == ("0", "2") and offered["reinit"].change.init == "module"


def _evidence(copies, *, critical=False, kind="not_critical", value=2.3, ratio=5.0):
    return {"loss": {"value": value, "best": value, "initial": 2.31},
            "rate": {"lr": 0.1, "peak_lr": 0.1, "ratio": ratio, "largest_stable_lr": 0.02, "limit": 2.0},
            "gradient": {"norm": 0.4, "tolerance": 0.02, "critical": critical},
            "curvature": {"kind": kind},
            "layers": {"layers": [{"name": "0", "kind": "Linear", "relative": 0.1, "copies": copies},
                                  {"name": "2", "kind": "Linear", "relative": 0.1, "copies": 0.0}], "units": []}}


def test_copied_units_are_named_before_the_rate_but_not_at_a_saddle():
    assert decide(_evidence(1.0)) == "symmetric_units"  # even with the rate past its limit: it cannot help
    assert "100% of the units of '0'" in remedy("symmetric_units", _evidence(1.0))
    assert decide(_evidence(0.4)) == "unstable"  # under half of the units: the rate's verdict
    assert decide(_evidence(1.0, value=0.5)) == "unstable"  # not stuck high
    # the origin of a two-layer net: every unit equal and the gradient 0, a saddle the escape leaves
    assert decide(_evidence(1.0, critical=True, kind="saddle", ratio=0.1)) == "saddle"
    assert decide(_evidence(1.0, critical=True, kind="flat", ratio=0.1)) == "symmetric_units"


def test_the_noise_wrappers_kept_norms_are_the_gradients_before_the_noise():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = GradientNoise(torch.optim.SGD(model.parameters(), lr=0.1), generator=torch.Generator().manual_seed(1))
    F.mse_loss(model(torch.randn(8, 4)), torch.randn(8, 3)).backward()
    expected = [p.grad.norm() for p in model.parameters()]
    opt.step()
    assert [float(n) for n in opt.last_norms] == pytest.approx([float(n) for n in expected], rel=1e-6)
    assert float(model.weight.grad.norm()) > 2 * float(expected[0])  # .grad holds the noise too now


def _digits_loop(*, apply_remedy, constant=0.05):
    return digits_mlp_loop(lambda params: torch.optim.SGD(params, lr=0.1), fill=constant, remedies=apply_remedy)


def test_a_constant_initialisation_is_named_and_its_symmetry_broken_by_the_trials_winner():
    left, stalls = _digits_loop(apply_remedy=False)
    # the first check after the first steps: the copies outlived ten steps, no plateau to wait for
    assert [(s.step, s.verdict) for s in stalls] == [(10, "symmetric_units")]
    hidden = stalls[0].evidence["layers"]["layers"][0]
    assert hidden["name"] == "0" and hidden["copies"] == 1.0
    repaired, stalls = _digits_loop(apply_remedy=True)
    assert stalls[0].verdict == "symmetric_units" and stalls[0].remedy_applied in ("noise", "reinit")
    assert [s.verdict for s in stalls[1:]] == []  # the noise in .grad is not read as a summed gradient
    assert repaired < 0.25 * left
    default, stalls = _digits_loop(apply_remedy=False, constant=None)
    assert stalls == []  # PyTorch's own initialisation: no alarm
    assert repaired < 1.25 * default  # ten steps fewer from fresh weights, seed noise
