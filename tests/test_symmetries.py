"""Hidden-unit symmetries: a network and its permuted / sign-flipped copies are one point, others are not."""

import itertools

import pytest
import torch
from torch import nn

from descentlab.experiments.minimum_ratio import measure_points, merge_points
from descentlab.experiments.symmetries import canonical, hidden_units_of, merge_duplicates, orbit_distance
from descentlab.params import flatten

D = torch.float64


def _net(activation=nn.Tanh, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), activation(), nn.Linear(4, 2)).double()


def _copy(net, perm, signs):
    """``net`` with hidden unit j taking unit perm[j]'s weights, times signs[j] (in, bias and out)."""
    other = _net(type(net[1]))
    s = torch.tensor(signs, dtype=D)
    with torch.no_grad():
        other[0].weight.copy_(net[0].weight[perm] * s[:, None])
        other[0].bias.copy_(net[0].bias[perm] * s)
        other[2].weight.copy_(net[2].weight[:, perm] * s)
        other[2].bias.copy_(net[2].bias)
    return other


X = torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=D)


def test_a_permuted_sign_flipped_tanh_copy_is_the_same_point():
    net = _net()
    copy = _copy(net, [2, 0, 3, 1], [1, -1, -1, 1])
    torch.testing.assert_close(copy(X), net(X), rtol=0, atol=1e-14)  # the same function: the premise
    units = hidden_units_of(net)
    a, b = flatten(net), flatten(copy)
    assert float((a - b).norm()) > 1.0
    assert orbit_distance(a, b, units) == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(canonical(a, units), canonical(b, units), rtol=0, atol=0)
    assert merge_duplicates(torch.stack([a, b, flatten(_net(seed=5))]), units, 1e-6) == [[0, 1], [2]]


def test_orbit_distance_is_the_minimum_over_every_permutation_and_sign():
    # oracle: brute force over all 4! permutations and 2^4 sign patterns
    a, b = flatten(_net(seed=2)), flatten(_net(seed=3))
    units = hidden_units_of(_net())
    best = min(float((a - flatten(_copy(_net(seed=3), list(p), list(s)))).norm())
               for p in itertools.permutations(range(4)) for s in itertools.product((1.0, -1.0), repeat=4))
    assert orbit_distance(a, b, units) == pytest.approx(best, rel=1e-12)
    assert 0 < best < float((a - b).norm())


def test_sign_flips_are_no_symmetry_of_relu():
    net = _net(nn.ReLU)
    flipped = _copy(net, [0, 1, 2, 3], [-1, 1, 1, 1])
    assert not torch.allclose(flipped(X), net(X))  # not the same function
    units = hidden_units_of(net)
    assert not units.odd
    assert orbit_distance(flatten(net), flatten(flipped), units) > 0.1
    permuted = _copy(net, [3, 2, 1, 0], [1, 1, 1, 1])
    assert orbit_distance(flatten(net), flatten(permuted), units) == pytest.approx(0.0, abs=1e-12)


def test_other_models_have_no_known_symmetry():
    assert hidden_units_of(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(),
                                         nn.Linear(4, 1))) is None
    a, b = torch.zeros(5, dtype=D), torch.ones(5, dtype=D)
    assert orbit_distance(a, b, None) == pytest.approx(5 ** 0.5)


def test_the_study_merges_measured_copies_and_keeps_different_points_apart():
    net, other = _net(), _net(seed=7)
    copy = _copy(net, [1, 0, 3, 2], [-1, 1, 1, -1])
    y = torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=D)
    flat = torch.stack([flatten(net), flatten(other), flatten(copy)])
    reports = measure_points(net, nn.functional.mse_loss, (X, y), flat, grad_tol=1e3)  # all "critical"
    # the copy has the same loss and spectrum (a symmetry is an isometry of the parameters)
    assert reports[2].loss == pytest.approx(reports[0].loss, rel=1e-12)
    torch.testing.assert_close(reports[2].eigenvalues, reports[0].eigenvalues, rtol=0, atol=1e-12)
    merged = merge_points(reports, hidden_units_of(net), 1e-6)
    assert [p.group for p in merged] == [0, 1, 0] or [p.group for p in merged] == [1, 0, 1]
    assert sorted(p.copies for p in merged) == [0, 1, 2]
