"""GradientNoise's standard normal numbers on CPU: a counter-based stream, added in one pass.

torch's CPU ``normal_`` is one serial Mersenne-Twister stream plus a Box-Muller transform
(≈ 3.9 ns a number on one core here; its ``log``, ``sin`` and ``cos`` alone take ≈ 1.8 ns an
element each), so drawing the noise cost more than the optimizer step it perturbs. Here
element ``j`` of a step's noise is a function of the step's seed ``s`` and ``j`` only:

* pair ``q = j // 2`` hashes its counter: ``w = splitmix64(s + (q + 1) · 0x9E3779B97F4A7C15)``
  (Vigna's mixer, 64-bit wrap-around), and takes two 24-bit integers ``k1 = w >> 40`` and
  ``k2 = (w >> 16) & 0xFFFFFF``;
* ``u = (k1 + 1) / 2^24`` in (0, 1], ``r = sqrt(-2 ln u)``; the angle is
  ``θ = c · π/2 + x`` with quadrant ``c = k2 >> 22`` and ``x = (f - 1/2) · π/2``,
  ``f = (k2 mod 2^22) / 2^22`` (uniform on the circle);
* element ``2q`` is ``r cos θ`` and element ``2q + 1`` is ``r sin θ`` (Box-Muller), in float32,
  with ``ln``, ``sin`` and ``cos`` from Cephes' single-precision polynomials, each operation
  rounded in the written order (no fused multiply-add), so the numba kernel and the torch
  version here give the same bits.

The numba kernel adds ``std · z`` to the gradients in the same pass, split over torch's
thread count in fixed work items, so neither the numbers nor the sums depend on the thread
count. Without numba, :func:`normals_torch` computes the same numbers with torch ops.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from descentlab.optim import cpu_kernels
from descentlab.optim._pool import run_split

__all__ = ["normals_torch", "box_muller_torch", "add_normals", "fill_normals"]

_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB

# Cephes single precision: logf on [sqrt(1/2), sqrt(2)), sinf and cosf on [-pi/4, pi/4]
_LOG = tuple(np.float32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                                     1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                                     3.3333331174e-1))
_LN2_LO, _LN2_HI = np.float32(-2.12194440e-4), np.float32(0.693359375)
_SIN = tuple(np.float32(c) for c in (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1))
_COS = tuple(np.float32(c) for c in (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2))
_SQRT2 = np.float32(math.sqrt(2.0))
_HALF_PI = np.float32(math.pi / 2)


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def normals_torch(seed: int, start: int, n: int) -> torch.Tensor:
    """Elements ``start .. start + n - 1`` of the stream of ``seed`` (float32), with torch ops."""
    q = torch.arange(start // 2, (start + n + 1) // 2, dtype=torch.int64)  # the pairs that hold the elements
    w = (q + 1) * _signed(_GAMMA) + _signed(seed % (1 << 64))
    w = (w ^ ((w >> 30) & ((1 << 34) - 1))) * _signed(_MIX1)  # logical shifts of a wrapping int64
    w = (w ^ ((w >> 27) & ((1 << 37) - 1))) * _signed(_MIX2)
    w = w ^ ((w >> 31) & ((1 << 33) - 1))
    pairs = box_muller_torch((w >> 40) & 0xFFFFFF, (w >> 16) & 0xFFFFFF)
    offset = start - 2 * (start // 2)
    return pairs.reshape(-1)[offset : offset + n]


def box_muller_torch(k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """``(m, 2)`` float32: ``(r cos θ, r sin θ)`` from the 24-bit integers ``k1``, ``k2`` (int64)."""
    f32 = torch.float32
    # ln u = ln(k1 + 1) - 24 ln 2, from exponent and mantissa of the float k1 + 1 (exact)
    bits = (k1 + 1).to(f32).view(torch.int32)
    e = (bits >> 23) - 127
    mant = ((bits & 0x7FFFFF) | 0x3F800000).view(f32)
    big = mant > _SQRT2
    mant = torch.where(big, mant * np.float32(0.5), mant)
    ee = (e + big.to(torch.int32) - 24).to(f32)
    x = mant - np.float32(1.0)
    zz = x * x
    y = x * _LOG[0]
    for c in _LOG[1:]:
        y = (y + c) * x
    y = y * zz
    y = y + ee * _LN2_LO
    y = y - zz * np.float32(0.5)
    ln_u = (x + y) + ee * _LN2_HI
    # torch's float32 sqrt is not correctly rounded on CPU; the float64 one rounded to float32 is
    r = torch.sqrt(torch.clamp_min(ln_u * np.float32(-2.0), 0.0).double()).to(f32)
    # sin and cos of x in [-pi/4, pi/4), then the quadrant's quarter turns
    quadrant = k2 >> 22
    t = (k2 & 0x3FFFFF).to(f32) * np.float32(2.0 ** -22) - np.float32(0.5)
    x = t * _HALF_PI
    z = x * x
    s = ((z * _SIN[0] + _SIN[1]) * z + _SIN[2]) * z * x + x
    c = ((z * _COS[0] + _COS[1]) * z + _COS[2]) * z * z - z * np.float32(0.5) + np.float32(1.0)
    swap = (quadrant & 1) == 1
    a, b = torch.where(swap, s, c), torch.where(swap, c, s)
    cos_t = torch.where((quadrant == 1) | (quadrant == 2), -a, a)
    sin_t = torch.where(quadrant >= 2, -b, b)
    return torch.stack([r * cos_t, r * sin_t], dim=1)


@functools.cache
def _bitcasts():
    """numba intrinsics: float32 <-> int32 bits (what ``Tensor.view`` does above)."""
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def float_bits(typingctx, x):
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], context.get_value_type(types.int32))
        return types.int32(types.float32), codegen

    @intrinsic
    def bits_float(typingctx, x):
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], context.get_value_type(types.float32))
        return types.float32(types.int32), codegen

    return float_bits, bits_float


@functools.cache
def _pair_function():
    """The compiled ``(seed, q) -> (r cos θ, r sin θ)`` of the module docstring."""
    numba = cpu_kernels._numba()
    float_bits, bits_float = _bitcasts()
    u64, i32, f32 = np.uint64, np.int32, np.float32
    gamma, mix1, mix2 = u64(_GAMMA), u64(_MIX1), u64(_MIX2)
    p0, p1, p2, p3, p4, p5, p6, p7, p8 = _LOG
    s0, s1, s2 = _SIN
    c0, c1, c2 = _COS
    ln2_lo, ln2_hi, sqrt2, half_pi = _LN2_LO, _LN2_HI, _SQRT2, _HALF_PI
    half, one, minus_two, zero, inv22 = f32(0.5), f32(1.0), f32(-2.0), f32(0.0), f32(2.0 ** -22)

    # no fastmath: every float32 operation rounds in the written order, as the torch version does
    @numba.njit(inline="always", nogil=True, error_model="numpy")
    def pair(seed, q):
        w = seed + (q + u64(1)) * gamma
        w = (w ^ (w >> u64(30))) * mix1
        w = (w ^ (w >> u64(27))) * mix2
        w = w ^ (w >> u64(31))
        k1 = i32(w >> u64(40))
        k2 = i32((w >> u64(16)) & u64(0xFFFFFF))
        bits = float_bits(f32(k1 + i32(1)))
        e = (bits >> i32(23)) - i32(127)
        mant = bits_float((bits & i32(0x7FFFFF)) | i32(0x3F800000))
        big = mant > sqrt2
        mant = mant * half if big else mant
        ee = f32(e + i32(big) - i32(24))
        x = mant - one
        zz = x * x
        y = x * p0
        y = (y + p1) * x
        y = (y + p2) * x
        y = (y + p3) * x
        y = (y + p4) * x
        y = (y + p5) * x
        y = (y + p6) * x
        y = (y + p7) * x
        y = (y + p8) * x
        y = y * zz
        y = y + ee * ln2_lo
        y = y - zz * half
        ln_u = (x + y) + ee * ln2_hi
        r = np.sqrt(max(ln_u * minus_two, zero))
        quadrant = k2 >> i32(22)
        t = f32(k2 & i32(0x3FFFFF)) * inv22 - half
        x = t * half_pi
        z = x * x
        s = ((z * s0 + s1) * z + s2) * z * x + x
        c = ((z * c0 + c1) * z + c2) * z * z - z * half + one
        swap = (quadrant & i32(1)) == i32(1)
        a = s if swap else c
        b = c if swap else s
        cos_t = -a if (quadrant == i32(1)) | (quadrant == i32(2)) else a
        sin_t = -b if quadrant >= i32(2) else b
        return r * cos_t, r * sin_t

    return pair


@functools.cache
def _kernel(np_dtype, add: bool):
    """``g[i] += std · z[j0 + i]`` (``add``) or ``g[i] = z[j0 + i]`` over work items."""
    numba = cpu_kernels._numba()
    as_pointer = cpu_kernels._as_pointer(np_dtype)
    pair = _pair_function()
    u64 = np.uint64

    @numba.njit(nogil=True, cache=True, error_model="numpy")
    def kernel(items, first, last, seed, std):
        for item in range(first, last):
            n = items[item, 1]
            j0 = items[item, 2]
            g = numba.carray(as_pointer(items[item, 0]), n)
            i = 0
            if j0 % 2 == 1:  # the item starts on a pair's second element
                _, z1 = pair(seed, u64(j0 // 2))
                g[0] = g[0] + std * z1 if add else z1
                i = 1
            q0 = (j0 + i) // 2
            n_pairs = (n - i) // 2
            for p in range(n_pairs):
                z0, z1 = pair(seed, u64(q0 + p))
                k = i + 2 * p
                if add:
                    g[k] = g[k] + std * z0
                    g[k + 1] = g[k + 1] + std * z1
                else:
                    g[k] = z0
                    g[k + 1] = z1
            if (n - i) % 2 == 1:  # ... and ends on a pair's first element
                z0, _ = pair(seed, u64(q0 + n_pairs))
                g[n - 1] = g[n - 1] + std * z0 if add else z0

    return kernel


def _run(tensors: Sequence[torch.Tensor], starts: Sequence[int], seed: int, std: float, add: bool) -> None:
    np_dtype = cpu_kernels._DTYPES[tensors[0].dtype]
    items = cpu_kernels._work_items([tensors], starts=np.asarray(starts, dtype=np.int64))
    kernel = _kernel(np_dtype, add)
    seed, std = np.uint64(seed % (1 << 64)), np_dtype(std)
    run_split(lambda first, last: kernel(items, first, last, seed, std), items[:, 1].tolist())
    cpu_kernels._written(list(tensors))


def add_normals(grads: Sequence[torch.Tensor], starts: Sequence[int], seed: int, std: float) -> None:
    """``g += std · z`` for every gradient, ``z`` the stream of ``seed`` from element
    ``starts[i]`` on for ``grads[i]``. All must satisfy ``cpu_kernels.available``."""
    _run(grads, starts, seed, std, add=True)


def fill_normals(out: Sequence[torch.Tensor], starts: Sequence[int], seed: int) -> None:
    """Write the stream of ``seed`` into ``out`` (from element ``starts[i]`` on for ``out[i]``)."""
    _run(out, starts, seed, 0.0, add=False)
