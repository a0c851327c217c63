"""Spectral density, trace and minimum ratio against exact eigenvalues of dense matrices."""

import sys

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from descentlab.curvature import Density, minimum_ratio, spectral_density, trace

from helpers import F64, matrix_with_spectrum


def network_like_spectrum(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat(
        [torch.randn(n - 40, generator=g, dtype=F64) * 0.05, 1 + 4 * torch.rand(20, generator=g, dtype=F64),
         -0.5 * torch.rand(20, generator=g, dtype=F64)]
    )


def test_density_integrates_to_one_and_is_close_to_the_exact_spectrum_in_wasserstein_1():
    eig = network_like_spectrum()
    A = matrix_with_spectrum(eig)
    d = spectral_density(A, n_steps=40, n_probes=16, seed=0)
    assert isinstance(d, Density) and d.n_matvecs == 40 * 16
    torch.testing.assert_close(d.weights.sum(dim=1), torch.ones(16, dtype=F64), atol=1e-12, rtol=0)
    assert abs(np.trapezoid(d.values.numpy(), d.grid.numpy()) - 1) < 1e-3
    w1 = wasserstein_distance(
        d.nodes.ravel().numpy(), eig.numpy(), u_weights=d.weights.ravel().numpy() / 16
    )
    spread = (eig.max() - eig.min()).item()
    # bound tested: W1 <= 1% of the spectral range (measured 0.53% here); a uniform density
    # over the same range is at ~39%
    assert w1 <= 0.01 * spread, w1
    uniform = wasserstein_distance(np.linspace(eig.min(), eig.max(), 1000), eig.numpy())
    assert uniform > 10 * w1
    # extreme nodes converge to the extreme eigenvalues
    assert abs(d.nodes.max().item() - eig.max().item()) < 1e-4
    assert abs(d.nodes.min().item() - eig.min().item()) < 1e-4


def test_density_handles_krylov_exhaustion_and_is_deterministic():
    A = matrix_with_spectrum([1.0, 2.0, 2.0, 3.0, -1.0])
    d = spectral_density(A, n_steps=20, n_probes=4, seed=1)
    # the 5 x 5 operator (4 distinct eigenvalues) is exhausted after at most 4 steps: every
    # node that carries weight is then an exact eigenvalue
    assert d.nodes.shape[1] <= 5
    exact = torch.tensor([-1.0, 1.0, 2.0, 3.0], dtype=F64)
    heavy = d.nodes[d.weights > 1e-8]
    assert ((heavy[:, None] - exact).abs().min(dim=1).values < 1e-10).all()
    torch.testing.assert_close(d.weights.sum(dim=1), torch.ones(4, dtype=F64), atol=1e-12, rtol=0)
    again = spectral_density(A, n_steps=20, n_probes=4, seed=1)
    assert torch.equal(d.values, again.values)
    assert "Density(n_probes=4" in repr(d)


def test_density_is_drawn_by_the_report_layer():
    # curvature/ draws nothing (the import-linter contract in pyproject.toml forbids
    # matplotlib and report/ there); the figure comes from report.spectrum_plot
    from descentlab.report.spectrum_plot import plot_density

    d = spectral_density(matrix_with_spectrum(network_like_spectrum(60)), n_steps=20, n_probes=2)
    assert not hasattr(d, "plot")
    fig = plot_density(d, eigenvalues=[d.nodes.min(), d.nodes.max()])
    import matplotlib.figure
    import matplotlib.pyplot as plt

    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.lines) >= 3  # density, 2 marked eigenvalues, zero
    plt.close(fig)
    from descentlab.report.spectrum_plot import plot_eigenvalues

    fig = plot_eigenvalues(torch.tensor([-1.0, 2.0, 0.5]))
    assert isinstance(fig, matplotlib.figure.Figure)
    plt.close(fig)


def hutchinson_theory_variance(A):
    return 2 * ((A**2).sum() - (torch.diagonal(A) ** 2).sum()).item()


def test_hutchinson_error_follows_theory():
    A = matrix_with_spectrum(torch.linspace(-1, 3, 80))
    exact = torch.trace(A).item()
    for m in (4, 16):
        estimates = np.array([trace(A, n_probes=m, method="hutchinson", seed=s).value for s in range(400)])
        var = hutchinson_theory_variance(A) / m  # Var = 2(||A||_F^2 - sum A_ii^2) / m
        assert abs(estimates.mean() - exact) < 4 * (var / 400) ** 0.5
        assert 0.75 < estimates.var() / var < 1.3
    est = trace(A, n_probes=16, method="hutchinson", seed=0)
    assert est.n_matvecs == 16 and est.std_error > 0 and est.method == "hutchinson"


def test_hutch_plus_plus_error_shrinks_like_one_over_m_on_a_decaying_spectrum():
    eig = 1.0 / torch.arange(1, 201, dtype=F64) ** 2
    A = matrix_with_spectrum(eig)
    exact = eig.sum().item()

    def rmse(method, m):
        est = np.array([trace(A, n_probes=m, method=method, seed=s).value for s in range(60)])
        return np.sqrt(((est - exact) ** 2).mean())

    plus_small, plus_large = rmse("hutch++", 9), rmse("hutch++", 36)
    hutch_small, hutch_large = rmse("hutchinson", 9), rmse("hutchinson", 36)
    assert plus_small / plus_large > 3.0  # ~4 for 1/m; Hutchinson's 1/sqrt(m) gives ~2
    assert 1.4 < hutch_small / hutch_large < 2.9
    assert plus_large < hutch_large / 5


def test_exact_trace_and_bad_arguments():
    A = matrix_with_spectrum([1.0, 2.0, -4.0])
    assert trace(A, method="exact").value == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="method"):
        trace(A, method="nope")
    with pytest.raises(ValueError, match="n_probes"):
        trace(A, n_probes=2, method="hutch++")
    with pytest.raises(ValueError, match="n_steps"):
        spectral_density(A, n_steps=0)


def test_minimum_ratio_exact_and_estimated():
    eig = torch.cat([torch.linspace(-2, -0.5, 120), torch.linspace(0.5, 3, 280)]).to(F64)
    A = matrix_with_spectrum(eig)
    exact = minimum_ratio(A)
    assert exact.exact and exact.method == "exact" and exact.value == pytest.approx(280 / 400)
    assert exact.std_error == 0
    est = minimum_ratio(A, method="estimated", n_steps=30, n_probes=16, seed=0)
    assert not est.exact and est.std_error > 0
    assert abs(est.value - 0.7) < max(4 * est.std_error, 0.02)
    # round-off zeros do not count as positive; a threshold moves the count
    B = matrix_with_spectrum([0.0, 0.0, 1.0, -1.0])
    assert minimum_ratio(B).value == pytest.approx(0.25)
    assert minimum_ratio(A, tol=1.0).value == pytest.approx(float((eig > 1.0).double().mean()))
    with pytest.raises(ValueError, match="method"):
        minimum_ratio(A, method="guess")


def test_minimum_ratio_bracket_covers_the_exact_count_when_eigenvalues_crowd_the_threshold():
    # 40% of the spectrum sits within 1e-3 of zero: the probes' standard error alone misses the
    # quadrature's bias there; the Chebyshev-Markov-Stieltjes bracket must contain the truth
    g = torch.Generator().manual_seed(3)
    near_zero = (torch.rand(160, generator=g, dtype=F64) - 0.5) * 2e-3
    eig = torch.cat([torch.linspace(-2, -0.1, 60, dtype=F64), near_zero, torch.linspace(0.1, 3, 180, dtype=F64)])
    A = matrix_with_spectrum(eig)
    tol = 1e-6 * 3.0
    truth = float((eig > tol).double().mean())
    est = minimum_ratio(A, tol=tol, method="estimated", n_steps=20, n_probes=16, seed=0)
    assert est.lower <= est.value <= est.upper
    assert est.lower - 2 * est.std_error <= truth <= est.upper + 2 * est.std_error
    assert est.upper - est.lower > 0.05  # the crowd at the threshold shows as a wide bracket
    exact = minimum_ratio(A, tol=tol)
    assert exact.lower == exact.upper == exact.value == pytest.approx(truth)


@pytest.mark.parametrize("spectrum, chosen", [
    (1.0 / torch.arange(1, 201, dtype=F64) ** 2, "hutch++"),  # decaying: deflation removes most
    (torch.linspace(-1, 3, 200, dtype=F64), "hutchinson"),   # flat: deflation removes little
])
def test_auto_trace_picks_the_estimator_with_the_smaller_error(spectrum, chosen):
    A = matrix_with_spectrum(spectrum)
    exact = spectrum.sum().item()

    def rmse(method):
        est = np.array([trace(A, n_probes=30, method=method, seed=s).value for s in range(40)])
        return np.sqrt(((est - exact) ** 2).mean())

    picks = {trace(A, n_probes=30, seed=s).method for s in range(10)}
    assert picks == {chosen}
    one = trace(A, n_probes=30, seed=0)
    assert one.n_matvecs == 30 and 0 <= one.deflated_share <= 1
    # the choice is the better one at this budget (40 seeds: RMSEs within ~15% of their truth)
    assert rmse("auto") <= 1.2 * min(rmse("hutch++"), rmse("hutchinson"))
