"""The one-pass CPU kernels against the formulas written out in numpy float64."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from descentlab.optim import cpu_kernels  # noqa: E402


def swats_adam_oracle(p, g, m, a, lr, b1, b2, eps, k):
    """Keskar & Socher's Adam-phase step and the two dot products, in float64."""
    m = b1 * m + (1 - b1) * g
    a = b2 * a + (1 - b2) * g * g
    step = -lr * math.sqrt(1 - b2 ** k) / (1 - b1 ** k) * m / (np.sqrt(a) + eps)
    return p + step, m, a, step @ g, step @ step


def tensors(sizes, dtype, seed):
    rng = np.random.default_rng(seed)
    out = []
    for scale in (1.0, 1.0, 0.1, 0.01):  # p, g, m, a (a >= 0)
        out.append([torch.tensor(np.abs(rng.normal(size=n)) * scale if scale == 0.01 else rng.normal(size=n) * scale,
                                 dtype=dtype) for n in sizes])
    return out


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_swats_adam_step_matches_the_formula_across_chunks_and_tensors(monkeypatch, dtype, rtol):
    monkeypatch.setattr(cpu_kernels, "CHUNK", 64)  # many work items, chunks that cut tensors
    sizes = (1, 200, 64, 1000)
    P, G, M, A = tensors(sizes, dtype, seed=0)
    flat = [torch.cat(x).double().numpy() for x in (P, G, M, A)]
    want_p, want_m, want_a, want_pg, want_pp = swats_adam_oracle(*flat, 1e-2, 0.9, 0.999, 1e-8, 7)
    pg, pp = cpu_kernels.swats_adam_step(P, G, M, A, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, step=7)
    for got, want in ((P, want_p), (M, want_m), (A, want_a)):
        np.testing.assert_allclose(torch.cat(got).double().numpy(), want, rtol=rtol, atol=rtol * 1e-3)
    assert pg == pytest.approx(want_pg, rel=rtol) and pp == pytest.approx(want_pp, rel=rtol)


def test_swats_adam_step_gives_the_same_bits_at_any_thread_count(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "CHUNK", 128)
    results = []
    for threads in (1, 2, 3):
        P, G, M, A = tensors((1000, 333, 2048), torch.float32, seed=1)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            dots = cpu_kernels.swats_adam_step(P, G, M, A, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=3)
        finally:
            torch.set_num_threads(before)
        results.append((dots, torch.cat(P)))
    for dots, p in results[1:]:
        assert dots == results[0][0]
        assert torch.equal(p, results[0][1])


def test_available_only_for_contiguous_cpu_tensors_of_one_float_dtype():
    x = torch.zeros(4, 4)
    assert cpu_kernels.available([x, torch.zeros(3)])
    assert not cpu_kernels.available([])
    assert not cpu_kernels.available([x.T])  # not contiguous
    assert not cpu_kernels.available([x, torch.zeros(3, dtype=torch.float64)])
    assert not cpu_kernels.available([x.half()])


def test_kernels_bump_autograd_versions_like_in_place_ops():
    P, G, M, A = tensors((100,), torch.float32, seed=2)
    before = [t._version for t in (P[0], M[0], A[0])]
    cpu_kernels.swats_adam_step(P, G, M, A, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=1)
    assert [t._version for t in (P[0], M[0], A[0])] == [v + 1 for v in before]
    bufs = []
    version = P[0]._version
    cpu_kernels.sgdw_step(P, G, bufs, lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False,
                          first_step=True)
    assert P[0]._version == version + 1 and torch.equal(bufs[0], G[0])


@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lookahead_sync_is_the_paper_update_across_chunks(monkeypatch, alpha, dtype):
    # oracle: phi <- phi + alpha (theta - phi); theta <- phi (Zhang et al. 2019), numpy float64;
    # alpha = 1 must give theta exactly (torch's lerp form for large weights)
    monkeypatch.setattr(cpu_kernels, "CHUNK", 64)
    slow, fast = tensors((1, 200, 64, 1000), dtype, seed=3)[:2]
    want = [s.double().numpy() + alpha * (f.double().numpy() - s.double().numpy()) for s, f in zip(slow, fast)]
    fast_before = [f.clone() for f in fast]
    cpu_kernels.lookahead_sync(slow, fast, alpha)
    rtol = 1e-15 if dtype == torch.float64 else 1e-6
    for s, f, w, f0 in zip(slow, fast, want, fast_before):
        np.testing.assert_allclose(s.double().numpy(), w, rtol=rtol, atol=rtol)
        assert torch.equal(s, f)
        if alpha == 1.0:
            assert torch.equal(f, f0)
