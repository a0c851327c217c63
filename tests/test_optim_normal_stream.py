"""The counter-based normal stream: its float32 formulas against float64 numpy, exhaustively
over every 24-bit input, its numba kernel against its torch version, and its distribution."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from descentlab.optim import cpu_kernels, normal_stream


def test_box_muller_polynomials_match_float64_over_every_24_bit_input():
    # all 2^24 values of each integer (k1 drives ln u, k2 the angle), paired off in one sweep
    worst = 0.0
    for lo in range(0, 1 << 24, 1 << 21):
        k = torch.arange(lo, lo + (1 << 21), dtype=torch.int64)
        got = normal_stream.box_muller_torch(k, k.flip(0)).double().numpy()
        k1, k2 = k.numpy().astype(np.float64), k.flip(0).numpy()
        r = np.sqrt(-2 * np.log((k1 + 1) / 2 ** 24))
        theta = (k2 >> 22) * np.pi / 2 + ((k2 & 0x3FFFFF) / 2 ** 22 - 0.5) * np.pi / 2
        want = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
        worst = max(worst, float(np.abs(got - want).max()))
    # |z| <= 5.8; float32 rounding alone is ~3e-7 there
    assert worst < 2e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_numba_kernel_gives_the_torch_versions_bits_across_work_items(monkeypatch, dtype):
    pytest.importorskip("numba")
    monkeypatch.setattr(cpu_kernels, "CHUNK", 7)  # odd chunks: items start and end mid-pair
    seed = 0x0123456789ABCDEF
    sizes, starts = (1, 30, 6, 101), (3, 4, 34, 1000)
    out = [torch.empty(n, dtype=dtype) for n in sizes]
    normal_stream.fill_normals(out, starts, seed)
    for z, n, start in zip(out, sizes, starts):
        assert torch.equal(z, normal_stream.normals_torch(seed, start, n).to(dtype))
    grads = [torch.full((n,), 0.5, dtype=dtype) for n in sizes]
    normal_stream.add_normals(grads, starts, seed, 0.25)
    for g, z in zip(grads, out):
        torch.testing.assert_close(g, 0.5 + 0.25 * z, rtol=0, atol=1e-7 if dtype == torch.float32 else 1e-15)


def test_the_stream_is_standard_normal():
    z = normal_stream.normals_torch(2024, 0, 1_000_000).double().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 5 / math.sqrt(len(z))
    assert z.var() == pytest.approx(1.0, abs=5 * math.sqrt(2 / len(z)))
    # even and odd elements (cos and sin of one pair) are uncorrelated
    assert abs(np.corrcoef(z[0::2], z[1::2])[0, 1]) < 5 / math.sqrt(len(z) / 2)
    # one stream's stretches are the same numbers wherever a call starts
    assert torch.equal(normal_stream.normals_torch(2024, 5, 10), normal_stream.normals_torch(2024, 0, 15)[5:])


def test_with_or_without_numba_gradient_noise_adds_the_same_bits(monkeypatch):
    pytest.importorskip("numba")
    from descentlab.optim import noise_streams

    results = []
    for enabled in (True, False):
        monkeypatch.setattr(cpu_kernels, "enabled", enabled)
        grads = [torch.linspace(-1, 1, n, dtype=dtype) for n, dtype in ((33, torch.float32), (8, torch.float64),
                                                                         (1000, torch.float32))]
        noise_streams.add_noise_in_place(grads, 99, 0.3)
        results.append(grads)
    for a, b in zip(*results):
        assert torch.equal(a, b)
