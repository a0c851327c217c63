"""Analytic surfaces, the kind rule, and every surface's critical points found and named."""

import functools
import math

import pytest
import sympy as sp
import torch

from descentlab.critical.rules import classify_eigenvalues, probe_directions, zero_mask
from descentlab.critical.surface_points import compare_with_known, find_critical_points
from descentlab.errors import UserInputError
from descentlab.problems.surfaces import SURFACES, get_surface

f64 = torch.float64


@functools.lru_cache(maxsize=None)
def _found(name):
    """find_critical_points is deterministic: several tests share one search per surface."""
    return find_critical_points(SURFACES[name])


# -- surfaces ----------------------------------------------------------------------------------

def test_rosenbrock_hessian_at_its_minimum():
    hessian = get_surface("rosenbrock").hessian(torch.tensor([1.0, 1.0], dtype=f64))
    assert torch.equal(hessian, torch.tensor([[802.0, -400.0], [-400.0, 200.0]], dtype=f64))


def test_batched_gradient_and_hessian_match_autograd_functional():
    points = torch.randn(3, 2, dtype=f64)
    for surface in SURFACES.values():
        gradient, hessian = surface.gradient_and_hessian(points)
        for i, p in enumerate(points):
            assert torch.allclose(gradient[i], torch.func.grad(surface.fn)(p), atol=1e-10)
            assert torch.allclose(hessian[i], torch.autograd.functional.hessian(surface.fn, p), atol=1e-9)


def test_himmelblau_gradient_matches_hand_derivative():
    x, y = 0.7, -1.3
    by_hand = [4 * x * (x**2 + y - 11) + 2 * (x + y**2 - 7), 2 * (x**2 + y - 11) + 4 * y * (x + y**2 - 7)]
    got = get_surface("himmelblau").gradient(torch.tensor([x, y], dtype=f64))
    assert torch.allclose(got, torch.tensor(by_hand, dtype=f64), atol=1e-12)


def test_known_points_are_critical_and_in_the_window():
    for surface in SURFACES.values():
        for known in surface.critical_points:
            p = torch.tensor(known.location, dtype=f64)
            # tabulated values have about six decimals
            assert float(surface.gradient(p).norm()) < 1e-3 * max(1.0, float(surface.hessian(p).norm())), surface.name
            assert bool(surface.in_window(p)), surface.name


def test_unknown_surface_lists_the_valid_ones():
    with pytest.raises(UserInputError, match="himmelblau"):
        get_surface("nope")


# -- the rule ----------------------------------------------------------------------------------

@pytest.mark.parametrize("values, kind", [
    ([1.0, 2.0], "local_min"), ([-1.0, -3.0], "local_max"), ([-2.0, 2.0], "saddle"), ([-1.0, 0.5, 4.0], "saddle"),
])
def test_second_order_test(values, kind):
    verdict = classify_eigenvalues(values)
    assert verdict.kind == kind and not verdict.degenerate and verdict.decided_by == "second-order"
    assert verdict.minimum_ratio == sum(v > 0 for v in values) / len(values)


def test_zero_tolerance_is_relative_to_the_spectral_radius():
    assert zero_mask([1e-7, 1.0], 1e-6).tolist() == [True, False]
    assert zero_mask([1e-4, 1e3], 1e-6).tolist() == [True, False]  # 1e-4 <= 1e-6 * 1e3
    assert zero_mask([1e-4, 1.0], 1e-6).tolist() == [False, False]
    with pytest.raises(ValueError, match="eig_tol"):
        zero_mask([1.0], -1.0)
    with pytest.raises(ValueError, match="eigenvalues"):
        classify_eigenvalues([])


def test_degenerate_without_a_probe_keeps_the_nonzero_signs():
    verdict = classify_eigenvalues([0.0, 2.0])
    assert (verdict.kind, verdict.degenerate, verdict.decided_by) == ("local_min", True, "eigenvalues only")
    assert classify_eigenvalues([0.0, 0.0]).kind == "flat"


@pytest.mark.parametrize("loss, kind", [
    (lambda p: p[0] ** 4 + p[1] ** 2, "local_min"),     # flat along x, rises
    (lambda p: -(p[0] ** 4) - p[1] ** 2, "local_max"),  # flat along x, falls
    (lambda p: p[0] ** 3 + p[1] ** 2, "saddle"),        # falls along -x
    (lambda p: p[0] ** 3 - 3 * p[0] * p[1] ** 2, "saddle"),  # monkey: both directions flat
])
def test_probe_decides_degenerate_points(loss, kind):
    origin = torch.zeros(2, dtype=f64)
    hessian = torch.autograd.functional.hessian(loss, origin)
    values, vectors = torch.linalg.eigh(hessian)
    verdict = classify_eigenvalues(values, eigenvectors=vectors, loss=loss, point=origin)
    assert (verdict.kind, verdict.degenerate, verdict.decided_by) == (kind, True, "probe")


def test_probe_along_the_lecture_curve_only_rises():
    # at (2, 1/2) on w1*w2 = 1 the flat direction is (w1, -w2): L = t^4 u1^2 u2^2 along it
    loss = get_surface("lecture").fn
    point = torch.tensor([2.0, 0.5], dtype=f64)
    probe = probe_directions(loss, point, torch.tensor([2.0, -0.5], dtype=f64))
    assert (probe.rises, probe.falls, probe.flat) == (2, 0, 0)
    with pytest.raises(ValueError, match="radii"):
        probe_directions(loss, point, torch.tensor([1.0, 0.0], dtype=f64), radii=(0.0,))


# -- critical points ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SURFACES))
def test_every_surface_recovers_its_known_list(name):
    surface = SURFACES[name]
    agreement = compare_with_known(surface, _found(name))
    assert agreement.exact, agreement
    assert len(agreement.matched) == len(surface.critical_points)


def test_himmelblau_nine():
    found = _found("himmelblau")
    kinds = [p.kind for p in found]
    assert (kinds.count("local_min"), kinds.count("local_max"), kinds.count("saddle")) == (4, 1, 4)
    assert len(found) == 9 and all(p.isolated and not p.degenerate for p in found)


def test_lecture_saddle_and_curve_of_minima():
    found = _found("lecture")
    isolated = [p for p in found if p.isolated]
    assert len(isolated) == 1
    saddle = isolated[0]
    assert saddle.kind == "saddle" and not saddle.degenerate and max(map(abs, saddle.location)) < 1e-9
    assert saddle.eigenvalues == pytest.approx((-2.0, 2.0))  # H = [[0, -2], [-2, 0]]
    curve = [p for p in found if not p.isolated]
    assert len(curve) >= 10
    assert {math.copysign(1, p.location[0]) for p in curve} == {-1.0, 1.0}  # both branches
    for p in curve:
        w1, w2 = p.location
        assert w1 * w2 == pytest.approx(1.0, abs=1e-9)
        assert (p.kind, p.degenerate) == ("local_min", True)
        assert p.eigenvalues == pytest.approx((0.0, 2 * (w1**2 + w2**2)), abs=1e-7)  # the lecture's formula


def test_monkey_saddle_is_a_degenerate_saddle():
    (point,) = _found("monkey")
    assert (point.kind, point.degenerate, point.isolated, point.decided_by) == ("saddle", True, True, "probe")
    assert max(map(abs, point.location)) < 1e-6 and max(map(abs, point.eigenvalues)) < 1e-5


def _polynomial_critical_points(expression, x, y):
    """Every real solution of grad = 0 of a polynomial: real roots of the resultant in x
    (isolated exactly by sympy), then the common real roots in y."""
    gx, gy = sp.expand(sp.diff(expression, x)), sp.expand(sp.diff(expression, y))
    resultant = sp.Poly(sp.resultant(gx, gy, y), x)
    points = []
    for factor, _ in sp.factor_list(resultant)[1]:
        for (a, b), _ in sp.Poly(factor, x).intervals(eps=sp.Rational(1, 10**12)):
            xv = float((a + b) / 2)
            # on Beale's line x = 0, dL/dy vanishes for every y: take the roots of dL/dx there
            first, second = (gy, gx) if not sp.Poly(gy.subs(x, xv), y).is_zero else (gx, gy)
            for root in sp.Poly(first.subs(x, xv), y).nroots(n=20):
                root = complex(root)
                if abs(root.imag) < 1e-7 and abs(float(second.subs({x: xv, y: root.real}))) < 1e-6:
                    if all(abs(xv - p[0]) + abs(root.real - p[1]) > 1e-6 for p in points):
                        points.append((xv, root.real))
    return sorted(points)


@pytest.mark.parametrize("name, build", [
    ("himmelblau", lambda x, y: (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2),
    ("camel", lambda x, y: (4 - sp.Rational(21, 10) * x**2 + x**4 / 3) * x**2 + x * y + (-4 + 4 * y**2) * y**2),
    ("beale", lambda x, y: (sp.Rational(3, 2) - x + x * y) ** 2 + (sp.Rational(9, 4) - x + x * y**2) ** 2
     + (sp.Rational(21, 8) - x + x * y**3) ** 2),
])
def test_polynomial_surfaces_against_a_resultant_oracle(name, build):
    x, y = sp.symbols("x y")
    oracle = _polynomial_critical_points(build(x, y), x, y)
    surface = get_surface(name)
    oracle = [p for p in oracle if bool(surface.in_window(torch.tensor(p, dtype=f64)))]
    found = sorted(p.location for p in _found(name))
    assert len(found) == len(oracle)
    for (fx, fy), (ox, oy) in zip(found, oracle):
        assert fx == pytest.approx(ox, abs=1e-6) and fy == pytest.approx(oy, abs=1e-6)


def test_rastrigin_points_are_products_of_one_dimensional_roots():
    # independent oracle: scipy's brentq on g'(x) = 2x + 20 pi sin(2 pi x) between its sign changes
    from scipy.optimize import brentq

    dg = lambda t: 2 * t + 20 * math.pi * math.sin(2 * math.pi * t)
    grid = [k / 400 for k in range(-900, 901)]
    roots = [0.0] + [brentq(dg, a, b) for a, b in zip(grid, grid[1:]) if dg(a) * dg(b) < 0 and a * b > 0]
    roots = sorted(r for r in roots if abs(r) < 2.25)
    found = sorted(p.location for p in _found("rastrigin"))
    assert len(found) == len(roots) ** 2 == 81
    expected = torch.tensor([(a, b) for a in roots for b in roots], dtype=f64)
    distance = torch.cdist(expected, torch.tensor(found, dtype=f64), compute_mode="donot_use_mm_for_euclid_dist")
    assert float(distance.min(dim=1).values.max()) < 1e-8 and float(distance.min(dim=0).values.max()) < 1e-8
