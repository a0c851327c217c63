"""lanczos against torch.linalg.eigh and scipy.sparse.linalg.eigsh."""

import sys
import warnings

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch
from torch import nn

from descentlab.curvature import Eigenpairs, HessianOperator, lanczos

from helpers import F64, matrix_with_spectrum


def hessian_like(n=300, seed=0):
    """A few large outliers, a bulk near zero and a small negative cluster, like a network's."""
    g = torch.Generator().manual_seed(seed)
    bulk = torch.randn(n - 20, generator=g, dtype=F64) * 0.01
    top = 1 + 10 * torch.rand(10, generator=g, dtype=F64)
    neg = -0.05 - 0.2 * torch.rand(10, generator=g, dtype=F64)
    return matrix_with_spectrum(torch.cat([bulk, top, neg]), seed)


def expected(eig, k, which):
    if which == "LA":
        return eig.flip(0)[:k]
    if which == "SA":
        return eig[:k]
    if which == "LM":
        return eig[eig.abs().argsort(descending=True)][:k]
    return torch.cat([eig[: k // 2], eig[eig.numel() - (k - k // 2) :]])


def assert_vectors_match(A, pairs, eig, vecs, tol):
    for i, value in enumerate(pairs.values):
        j = int((eig - value).abs().argmin())
        overlap = torch.dot(pairs.vectors[:, i], vecs[:, j]).abs()
        assert overlap > 1 - tol, (i, overlap)
    residual = A @ pairs.vectors - pairs.vectors * pairs.values
    assert (residual.norm(dim=0) <= 1e-6 * pairs.values.abs() * 1.01).all()


@pytest.mark.parametrize("which", ["LA", "SA", "LM", "BE"])
def test_lanczos_matches_eigh(which):
    A = hessian_like()
    eig, vecs = torch.linalg.eigh(A)
    pairs = lanczos(A, k=6, which=which, tol=1e-6)
    assert isinstance(pairs, Eigenpairs) and pairs.converged
    assert pairs.values.shape == (6,) and pairs.vectors.shape == (300, 6)
    assert (pairs.residuals <= 1e-6).all()
    torch.testing.assert_close(pairs.values, expected(eig, 6, which), rtol=1e-6, atol=0)
    assert_vectors_match(A, pairs, eig, vecs, 1e-6)
    torch.testing.assert_close(pairs.vectors.T @ pairs.vectors, torch.eye(6, dtype=F64), atol=1e-10, rtol=0)
    assert 0 < pairs.n_matvecs < 300
    assert "Eigenpairs(which=" in repr(pairs)


def test_order_and_sign_when_the_negative_end_dominates():
    A = matrix_with_spectrum(torch.cat([torch.tensor([-5.0, -4.0]), torch.linspace(-1, 1, 98)]))
    lm = lanczos(A, k=3, which="LM")
    torch.testing.assert_close(lm.values, torch.tensor([-5.0, -4.0, 1.0], dtype=F64), rtol=1e-6, atol=0)
    sa = lanczos(A, k=2, which="SA")
    torch.testing.assert_close(sa.values, torch.tensor([-5.0, -4.0], dtype=F64), rtol=1e-6, atol=0)
    la = lanczos(A, k=2, which="LA")
    assert la.values[0] > la.values[1] > 0.9
    be = lanczos(A, k=3, which="BE")  # 1 from the bottom, 2 from the top, ascending
    torch.testing.assert_close(be.values[0], torch.tensor(-5.0, dtype=F64), rtol=1e-6, atol=0)
    assert be.values[1] < be.values[2] and be.values[1] > 0.9


def test_restarts_and_a_larger_k_than_the_basis_would_hold_without_them():
    A = hessian_like(seed=3)
    eig, _ = torch.linalg.eigh(A)
    pairs = lanczos(A, k=10, which="SA", ncv=20)
    assert pairs.n_restarts > 0 and pairs.converged
    torch.testing.assert_close(pairs.values, eig[:10], rtol=1e-6, atol=0)


@pytest.mark.parametrize("block", [7, 64])
def test_restarts_combine_the_basis_in_blocks_of_any_width(monkeypatch, block):
    """A restart rewrites the basis block by block (300 = 4 x 64 + 44: a narrower last block)."""
    monkeypatch.setattr(sys.modules["descentlab.curvature.lanczos"], "_COMBINE_BLOCK", block)
    A = hessian_like(seed=4)
    eig, vecs = torch.linalg.eigh(A)
    for which in ("LA", "SA"):
        pairs = lanczos(A, k=8, which=which, ncv=18, tol=1e-6)
        assert pairs.n_restarts > 0 and pairs.converged
        torch.testing.assert_close(pairs.values, expected(eig, 8, which), rtol=1e-6, atol=0)
        assert_vectors_match(A, pairs, eig, vecs, 1e-6)


@pytest.mark.parametrize("block", [7, 32768])
def test_gram_schmidt_projects_against_a_basis_that_is_not_orthonormal(monkeypatch, block):
    """f = (I - V(VᵀV)⁻¹Vᵀ) w for a basis 1e-3 off orthonormal, against least squares; and when
    w lies in span(V) but for 1e-10 of its norm, f is still orthogonal to V to rounding."""
    lanczos_module = sys.modules["descentlab.curvature.lanczos"]
    monkeypatch.setattr(lanczos_module, "_ORTHOGONALIZE_BLOCK", block)
    g = torch.Generator().manual_seed(0)
    n, j = 200, 6
    V = torch.linalg.qr(torch.randn(n, j, generator=g, dtype=F64))[0] + 1e-3 * torch.randn(n, j, generator=g, dtype=F64)
    buffers = torch.empty(n, dtype=F64), torch.empty(n, dtype=F64)
    for scale in (1.0, 1e-10):
        w = V @ torch.randn(j, generator=g, dtype=F64) + scale * torch.randn(n, generator=g, dtype=F64)
        f, _, gram_column, norm, c, norm_w = lanczos_module._orthogonalize_into(
            *buffers, w, V, torch.linalg.cholesky(V.T @ V), V.T @ w)
        least_squares = torch.linalg.lstsq(V, w[:, None]).solution[:, 0]
        projected = w - V @ least_squares
        # both sides carry rounding of order ε ||w||, however small f is
        torch.testing.assert_close(f, projected, atol=1e-13 * float(w.norm()), rtol=0)
        assert float((V.T @ f).abs().max()) <= 1e-13 * float(norm)
        torch.testing.assert_close(gram_column, V.T @ f, atol=1e-13 * float(norm), rtol=0)
        torch.testing.assert_close(norm, f.norm(), atol=0, rtol=1e-12)
        torch.testing.assert_close(c, least_squares, atol=1e-9, rtol=0)
        assert abs(norm_w - float(w.norm())) <= 1e-12 * float(w.norm())


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_float32_with_restarts_matches_eigh(which):
    """1,500 float32 parameters: the basis drifts from orthonormal by the products' rounding, which
    the measured Gram matrix absorbs; values and vectors as accurate as float32 products allow."""
    A = hessian_like(n=1500, seed=1)
    eig = torch.linalg.eigvalsh(A)
    pairs = lanczos(A.float(), k=10, which=which, tol=1e-4, ncv=24)
    assert pairs.converged and (pairs.residuals <= 1e-4).all()
    if which == "SA":
        assert pairs.n_restarts > 0
    # ε₃₂ ||A|| / |λ| ≤ 2.6e-5 bounds the products' rounding relative to these eigenvalues
    torch.testing.assert_close(pairs.values.double(), expected(eig, 10, which), rtol=1e-5, atol=0)
    Y = pairs.vectors.double()
    torch.testing.assert_close(Y.T @ Y, torch.eye(10, dtype=F64), atol=1e-5, rtol=0)


def test_repeated_eigenvalues_are_found_as_often_as_they_occur():
    """Each start direction sees a repeated eigenvalue once (its Krylov space closes after
    three products here); the fresh directions that follow must show the other copies."""
    A = matrix_with_spectrum(torch.cat([torch.full((40,), 5.0), torch.full((40,), 1.0), torch.full((20,), -2.0)]))
    for which, value in (("LA", 5.0), ("SA", -2.0)):
        pairs = lanczos(A, k=5, which=which)
        assert pairs.converged
        torch.testing.assert_close(pairs.values, torch.full((5,), value, dtype=F64), rtol=1e-10, atol=0)
        torch.testing.assert_close(pairs.vectors.T @ pairs.vectors, torch.eye(5, dtype=F64), atol=1e-10, rtol=0)
        torch.testing.assert_close(A @ pairs.vectors, value * pairs.vectors, atol=1e-10, rtol=0)


def clustered_top(n=400, seed=0, copies=False):
    """A top of 20 eigenvalues within 15 % of each other ([0.87, 1]) right above a bulk reaching
    0.85, like a wide network's at initialisation; ``copies``: 1 x5, 0.95 x5 and 0.9 x10 among
    them (bulk to 0.5)."""
    g = torch.Generator().manual_seed(seed)
    if copies:
        top = torch.cat([torch.full((5,), 1.0), torch.full((5,), 0.95), torch.full((10,), 0.9),
                         0.87 + 0.03 * torch.rand(5, generator=g, dtype=F64)]).to(F64)
        return torch.cat([top, 0.5 * torch.rand(n - 25, generator=g, dtype=F64)])
    return torch.cat([0.87 + 0.13 * torch.rand(20, generator=g, dtype=F64),
                      0.85 * torch.rand(n - 20, generator=g, dtype=F64)])


def assert_top_of(A, pairs, tol):
    """The pairs are A's top k to the residual tolerance, against eigh: values within tol (a
    residual r puts an eigenvalue within r of a Rayleigh quotient), orthonormal vectors, and a
    span within the Davis-Kahan bound ||R||_F / (θ_k - λ_{k+1}) of the top-k eigenspace."""
    k = pairs.values.numel()
    eig, vecs = torch.linalg.eigh(A)
    top = eig.flip(0)
    torch.testing.assert_close(pairs.values, top[:k], rtol=tol, atol=0)
    Y = pairs.vectors
    torch.testing.assert_close(Y.T @ Y, torch.eye(k, dtype=F64), atol=1e-10, rtol=0)
    residual = A @ Y - Y * pairs.values
    assert (residual.norm(dim=0) <= tol * pairs.values.abs() * 1.01).all()
    outside = vecs[:, : eig.numel() - k]  # the eigenvectors of all but the top k
    bound = float(residual.norm()) / float(pairs.values[-1] - top[k])
    assert float((outside.T @ Y).norm()) <= bound * 1.01 + 1e-12


@pytest.mark.parametrize("k", [1, 3, 5, 10, 20])
def test_a_clustered_top_matches_eigh(k):
    """Top-k inside a cluster of 20 within 15 % of each other, the bulk right under it."""
    A = matrix_with_spectrum(clustered_top(seed=k), k)
    pairs = lanczos(A, k=k, which="LA", tol=1e-6)
    assert pairs.converged
    assert_top_of(A, pairs, 1e-6)


@pytest.mark.parametrize("k", [3, 10, 20])
def test_repeated_eigenvalues_in_a_clustered_top_are_found_as_often_as_they_occur(k):
    """1 x5, 0.95 x5 and 0.9 x10 above a bulk: one start vector sees each of them once, so the
    copies need the fresh directions of repeated=True."""
    A = matrix_with_spectrum(clustered_top(seed=k, copies=True), k)
    pairs = lanczos(A, k=k, which="LA", tol=1e-6, repeated=True)
    assert pairs.converged
    eig = torch.linalg.eigvalsh(A)
    top = eig.flip(0)
    torch.testing.assert_close(pairs.values, top[:k], rtol=1e-6, atol=0)
    Y = pairs.vectors
    torch.testing.assert_close(Y.T @ Y, torch.eye(k, dtype=F64), atol=1e-10, rtol=0)
    assert ((A @ Y - Y * pairs.values).norm(dim=0) <= 1e-6 * pairs.values.abs() * 1.01).all()
    if top[k - 1] > top[k]:  # a whole eigenspace at the boundary: the span is the top-k one
        assert_top_of(A, pairs, 1e-6)


class Diagonal:
    """diag(d) as an operator: products cost one multiply, so n can be large."""

    def __init__(self, d):
        self.d, self.shape, self.dtype = d, (d.numel(), d.numel()), d.dtype

    def __matmul__(self, v):
        return self.d * v if v.ndim == 1 else self.d[:, None] * v


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_float32_on_300k_parameters_matches_the_known_spectrum(which):
    """At this size float32 dot products drift the basis from orthonormal (by ~5e-5 here, far
    above rounding), so the measured Gram matrix is what keeps Rayleigh-Ritz exact."""
    g = torch.Generator().manual_seed(0)
    n = 300_000
    d = torch.cat([torch.rand(n - 15, generator=g, dtype=F64), 1.2 + torch.rand(10, generator=g, dtype=F64),
                   -0.5 - torch.rand(5, generator=g, dtype=F64)])
    d = d[torch.randperm(n, generator=g)]
    pairs = lanczos(Diagonal(d.float()), k=5, which=which, tol=1e-4)
    assert pairs.converged
    # float32 products: relative rounding ~ ε₃₂ ||A|| / |λ| ≤ 5e-7 for these eigenvalues
    torch.testing.assert_close(pairs.values.double(), d.sort(descending=which == "LA").values[:5], rtol=2e-6, atol=0)
    Y = pairs.vectors.double()
    torch.testing.assert_close(Y.T @ Y, torch.eye(5, dtype=F64), atol=1e-5, rtol=0)


def test_rayleigh_ritz_solves_the_pencil_of_a_basis_that_is_not_orthonormal():
    """Ritz values and G-orthonormal vectors of (GC, G) against scipy's generalised eigh."""
    import scipy.linalg

    lanczos_module = sys.modules["descentlab.curvature.lanczos"]
    g = torch.Generator().manual_seed(1)
    j = 8
    B = torch.eye(j, dtype=F64) + 1e-2 * torch.randn(j, j, generator=g, dtype=F64)
    G = B.T @ B
    T = torch.randn(j, j, generator=g, dtype=F64)
    T = T + T.T
    C = torch.linalg.solve(G, T)  # the coefficients whose GC is T
    theta, S, pick = lanczos_module._ritz(C, G, torch.linalg.cholesky(G), j, 3, "LA")
    expected = scipy.linalg.eigh(T.numpy(), G.numpy(), eigvals_only=True)
    np.testing.assert_allclose(theta.numpy(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(S.T @ G @ S, torch.eye(j, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(T @ S, G @ S * theta, atol=1e-12, rtol=0)
    assert pick.tolist() == [7, 6, 5]


def test_small_operator_is_solved_exactly():
    A = matrix_with_spectrum([3.0, -1.0, 0.0, 2.0, 5.0])
    pairs = lanczos(A, k=5, which="LA")
    torch.testing.assert_close(pairs.values, torch.tensor([5.0, 3.0, 2.0, 0.0, -1.0], dtype=F64), atol=1e-12, rtol=0)


def test_same_values_as_scipy_eigsh_on_a_network_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 4)).to(F64)
    X, y = torch.randn(300, 6, dtype=F64), torch.randint(0, 4, (300,))
    op = HessianOperator(model, nn.functional.cross_entropy, (X, y))

    def matvec(v):
        return (op @ torch.from_numpy(np.asarray(v, dtype=np.float64).ravel())).numpy()

    linop = sla.LinearOperator(op.shape, matvec=matvec, dtype=np.float64)
    eig = torch.linalg.eigvalsh(op.dense())
    for which in ("LA", "SA"):
        ours = lanczos(op, k=4, which=which, tol=1e-8)
        theirs = np.sort(sla.eigsh(linop, k=4, which=which, tol=1e-10, v0=np.ones(op.n_params))[0])
        theirs = theirs[::-1] if which == "LA" else theirs
        np.testing.assert_allclose(ours.values.numpy(), theirs, rtol=1e-7)
        torch.testing.assert_close(ours.values, expected(eig, 4, which), rtol=1e-7, atol=0)


def test_runs_in_float32_and_is_deterministic():
    A = hessian_like().float()
    a = lanczos(A, k=3, which="LA", tol=1e-4, seed=5)
    b = lanczos(A, k=3, which="LA", tol=1e-4, seed=5)
    assert a.values.dtype == torch.float32
    assert torch.equal(a.values, b.values) and torch.equal(a.vectors, b.vectors)


def test_not_converging_warns():
    A = hessian_like()
    with pytest.warns(UserWarning, match="did not reach"):
        pairs = lanczos(A, k=5, which="SA", tol=1e-12, max_iter=25)
    assert not pairs.converged and pairs.n_matvecs <= 25 + 1


@pytest.mark.parametrize(
    "kwargs, name",
    [({"k": 0}, "k"), ({"k": 500}, "k"), ({"which": "XX"}, "which"), ({"tol": 0}, "tol"), ({"ncv": 3, "k": 5}, "ncv")],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        lanczos(hessian_like(), **kwargs)
    with pytest.raises(ValueError, match="op"):
        lanczos(torch.ones(3, 4))


def test_the_default_tolerance_follows_the_dtype():
    from descentlab.curvature import default_tol

    assert default_tol(torch.float64) == 1e-6 and default_tol(torch.float32) == 1e-3
    A = hessian_like()
    eig = torch.linalg.eigvalsh(A)
    # float32: residual 1e-6 is below the products' rounding for the smaller eigenvalues;
    # the default 1e-3 converges, and eigenvalues (error ~ residual² |λ| / gap) stay near 1e-6
    pairs = lanczos(A.float(), k=4, which="LA")
    assert pairs.converged and (pairs.residuals <= 1e-3).all()
    torch.testing.assert_close(pairs.values.double(), eig.flip(0)[:4], rtol=2e-5, atol=0)
    assert lanczos(A, k=4, which="LA").residuals.max() <= 1e-6


def test_stop_returns_rayleigh_quotients_that_bound_the_ends_without_a_warning():
    # a negative cluster just under zero: converging it takes many products, proving its sign few
    g = torch.Generator().manual_seed(3)
    spectrum = torch.cat([torch.rand(280, generator=g, dtype=F64) * 0.01, 1 + torch.rand(10, generator=g, dtype=F64),
                          -1e-3 - 1e-4 * torch.rand(10, generator=g, dtype=F64)])
    A = matrix_with_spectrum(spectrum, 3)
    full = lanczos(A, k=4, which="BE", tol=1e-6)
    calls = []

    def negative_found(theta, residuals):
        calls.append(theta.numel())
        return bool(theta[0] < -5e-4)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intended stop is not a convergence failure
        early = lanczos(A, k=4, which="BE", tol=1e-6, stop=negative_found)
    assert calls and early.n_matvecs < full.n_matvecs
    lowest, highest = float(spectrum.min()), float(spectrum.max())
    # every returned value is the Rayleigh quotient of its (unit) vector: inside [λ_min, λ_max]
    quotients = (early.vectors * (A @ early.vectors)).sum(0) / (early.vectors**2).sum(0)
    torch.testing.assert_close(early.values, quotients, rtol=1e-10, atol=1e-14)
    assert lowest <= float(early.values.min()) < -5e-4
    assert float(early.values.max()) <= highest
