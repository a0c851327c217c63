"""Extreme eigenpairs of a symmetric operator by thick-restart Lanczos, written in torch.

The solver builds a Krylov basis V = [v_1 … v_j] of span{v_1, Hv_1, …, H^{j-1}v_1}, each new
vector projected against all the others (classical Gram-Schmidt), keeps the products W = HV
with their coefficients in the basis, W = VC + f e_jᵀ, and takes Ritz pairs from the
projection T = VᵀHV = GC (Rayleigh-Ritz), where the Gram matrix G = VᵀV is *measured* as the
basis grows. That costs half a pass over the basis per product (each block of the new
direction is multiplied by the block of V still in cache), and buys two passes:

* rounding that takes V a little off orthonormal costs nothing (the Ritz pairs solve the
  pencil Ts = θGs), so the second Gram-Schmidt pass, which keeping V orthonormal to working
  precision needs whenever more than 1/√2 of a product's norm cancels (52-95 % of the
  products on the 1.1M-parameter MLP of bench/hessian.py), runs only where the cancellation
  reaches √ε;
* the coefficients Vᵀw of a new product need no pass either: by symmetry vᵢᵀHv_j = Cᵢᵀ
  G[:, j] for the old vectors, and only v_jᵀHv_j is a new dot product.

On that model the solver's own work per product went from 11-24 ms (the coefficients'
pass, the projection, half the time a second pass of both) to about 10 ms.
When the basis reaches ``ncv`` vectors without convergence it restarts *thick* (Wu & Simon
2000, "Thick-restart Lanczos method for large symmetric eigenvalue problems", SIAM J. Matrix
Anal. Appl. 22(2)): it keeps the wanted Ritz vectors Y = VS and their products WS (no new
products), and continues from the residual direction f = H v_j − V G⁻¹VᵀH v_j, so the Krylov
information is never thrown away. How many Ritz vectors it keeps decides how fast a clustered
end converges: for the largest eigenvalues the split is chosen at each restart, for the most
progress the next cycle promises the lowest wanted value not yet converged (a Chebyshev bound,
:func:`_largest_kept`). When a Krylov space closes (an invariant subspace: a repeated eigenvalue
shows once per start direction), it continues from a fresh random direction and, as ARPACK
does, judges convergence only with the basis full; ``repeated=True`` does the same after
convergence, until a fresh direction finds no further copy.

A pair (θ, y) is converged when its Ritz *residual* satisfies

    ||H y − θ y|| <= tol · max(|θ|, φ ||T||),      φ = max(ε^{2/3}, 100 ε / tol),

(the floor keeps exact zeros reachable; ε is the dtype's machine epsilon; ε^{2/3} as in
ARPACK, and never a residual below 100 ε ||T||, which rounding in the products would prevent:
in float32 at tol 1e-3, ARPACK's floor alone asks a near-zero eigenvalue of a layer's block
for 2e-8 ||T||, under the products' own noise, and 3,000 products did not reach it). The
residual is computed explicitly from W and V, not from the recurrence estimate.

Everything runs on the operator's device and dtype. In float32 every product carries rounding
noise of roughly 1e-7·||H||, so a relative residual much below 1e-7·||H||/|λ| cannot be reached:
the default ``tol`` follows the dtype (:func:`default_tol`: 1e-6 in float64, 1e-3 in float32,
where eigenvalue errors, about the residual squared over the gap, still come out near 1e-6).
A float32 ResNet-like model (174k parameters) ran 1,000 products without converging at 1e-6
and converged in 25 at 1e-3.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from descentlab.checks import check_choice, check_int, check_number
from descentlab.errors import AdviceWarning
from descentlab.curvature.linop import as_operator

__all__ = ["Eigenpairs", "lanczos", "WHICH", "default_tol"]

#: ``which`` values: largest algebraic, smallest algebraic, largest magnitude, both ends.
WHICH = ("LA", "SA", "LM", "BE")


def default_tol(dtype: torch.dtype) -> float:
    """The residual tolerance :func:`lanczos` uses when given none: 1e-6 in float64 (and
    wider), 1e-3 in float32, 1e-2 in half precision: a few hundred times the relative rounding
    of one product (≈ √n·ε), so it is reached, and small enough that eigenvalues (error ≈
    residual² · |λ| / gap) come out near 1e-6 in float32."""
    eps = torch.finfo(dtype).eps
    if eps <= 1e-15:
        return 1e-6
    return 1e-3 if eps <= 1e-6 else 1e-2


@dataclass(frozen=True, eq=False, repr=False)
class Eigenpairs:
    """Eigenpairs found by :func:`lanczos`.

    Attributes:
        values: ``(k,)`` eigenvalues, ordered by ``which``: ``"LA"`` descending, ``"SA"``
            ascending (most negative first), ``"LM"`` by descending magnitude, ``"BE"`` ascending.
        vectors: ``(n, k)`` orthonormal eigenvectors, column i belongs to ``values[i]``; the
            sign is fixed so that each column's largest-magnitude entry is positive.
        residuals: ``(k,)`` relative Ritz residuals ||H v − λ v|| / max(|λ|, φ ||H||) (φ in the
            module docstring).
        n_matvecs: operator products used (``op @ v`` columns).
        which: the ``which`` that was asked for.
        converged: every residual is at most ``tol``.
        n_restarts: thick restarts done.
    """

    values: torch.Tensor
    vectors: torch.Tensor
    residuals: torch.Tensor
    n_matvecs: int
    which: str = "LA"
    converged: bool = True
    n_restarts: int = 0

    def __repr__(self) -> str:
        vals = ", ".join(f"{v:.6g}" for v in self.values.tolist())
        worst = f"{self.residuals.max().item():.1e}" if self.residuals.numel() else "-"
        return (
            f"Eigenpairs(which={self.which!r}, values=[{vals}], vectors={tuple(self.vectors.shape)}, "
            f"max_residual={worst}, n_matvecs={self.n_matvecs}, converged={self.converged}, "
            f"n_restarts={self.n_restarts})"
        )


def lanczos(
    op: Any,
    k: int = 10,
    which: str = "LA",
    tol: float | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    *,
    ncv: int | None = None,
    v0: torch.Tensor | None = None,
    stop: Callable[[torch.Tensor, torch.Tensor], bool] | None = None,
    repeated: bool = False,
) -> Eigenpairs:
    """The ``k`` extreme eigenpairs of a symmetric operator (thick-restart Lanczos).

    Args:
        op: a :class:`~descentlab.curvature.HessianOperator`, a dense symmetric tensor, or
            anything with ``shape`` and ``@``.
        k: how many eigenpairs (1 <= k <= n).
        which: ``"LA"`` largest, ``"SA"`` smallest (most negative), ``"LM"`` largest
            magnitude, ``"BE"`` both ends (``k // 2`` smallest and ``k - k // 2`` largest).
        tol: relative Ritz residual at which a pair counts as converged; ``None`` (default):
            by the operator's dtype, :func:`default_tol`.
        max_iter: most operator products (default ``max(50 * ncv, 1000)``); when reached
            the result is returned with ``converged=False`` and a warning.
        seed: seeds the start vector (a CPU generator, so results do not depend on device).
        ncv: Krylov basis size before a restart (default ``max(2k + 1, 20)`` for ``LA``/``LM``,
            ``max(8k, 60)`` for ``SA``/``BE``, where the wanted end of a Hessian spectrum is
            usually a cluster near zero; capped at n).
        v0: the start vector (a warm start, e.g. an eigenvector found at a nearby point);
            ``None``: a seeded random vector. A matrix of columns is summed into one vector.
        stop: an early exit for callers that need less than converged pairs (e.g. only the sign
            of the lowest eigenvalue): called after each product, once the basis holds ``k``
            vectors, with every current Ritz value (ascending) and its estimated relative
            residual; when it returns True the wanted pairs are returned as they stand, without
            a warning (``converged`` says whether they also met ``tol``). Each returned value is
            the Rayleigh quotient of its vector, so the lowest one still bounds λ_min from above
            and the highest bounds λ_max from below.
        repeated: also find every copy of a repeated eigenvalue. The Krylov space of one start
            vector holds one vector of each eigenspace, so an eigenvalue of multiplicity m shows
            once (as in ARPACK's ``eigsh``) unless that space closes; with ``repeated=True``,
            once the pairs converge the search goes on from a fresh random direction for one
            more full basis (``ncv - k`` products, at least 10: an ``ncv`` barely above ``k``
            leaves a pass little room), and again after every pass that changed a wanted value.

    Returns:
        :class:`Eigenpairs`.
    """
    A = as_operator(op)
    n = A.n
    check_choice("which", which, WHICH)
    check_int("k", k, high=n)
    tol = default_tol(A.dtype) if tol is None else check_number("tol", tol, low_open=True)
    if ncv is None:
        ncv = max(2 * k + 1, 20) if which in ("LA", "LM") else max(8 * k, 60)
    m = min(int(ncv), n)
    if m < min(k + 1, n):
        raise ValueError(f"ncv must be > k (at least {k + 1}), got {ncv}")
    max_iter = max(50 * m, 1000) if max_iter is None else check_int("max_iter", max_iter)

    dtype, device = A.dtype, A.device
    eps = torch.finfo(dtype).eps
    gen = torch.Generator().manual_seed(int(seed))

    def random_vector() -> torch.Tensor:
        # drawn on the CPU in float64 or float32 (6x faster to draw; half precision is drawn
        # in float32), so the start does not depend on the device
        wide = torch.float64 if dtype == torch.float64 else torch.float32
        return torch.randn(n, generator=gen, dtype=wide).to(device, dtype)

    # stored as rows and used through transposed views, so that every basis vector and every
    # product V[:, j], W[:, j] is contiguous in memory (columns of an (n, m) array are not)
    # (only the first j columns are ever read, so they need no zeroing: 90 MB each at 1M x 21)
    V = torch.empty(m, n, dtype=dtype, device=device).T
    W = torch.empty(m, n, dtype=dtype, device=device).T
    # W = V C + f rᵀ: the products' coefficients C in the basis (each product's Gram-Schmidt
    # coefficients, the next vector's row filled when it joins), r the pending coupling of
    # f (``None``: e_j; after a restart the last row of the kept S); and the Gram matrix
    # G = VᵀV as measured; small, in float64. Rayleigh-Ritz takes the pencil (GC, G)
    C = torch.zeros(m, m, dtype=torch.float64, device=device)
    G = torch.eye(m, dtype=torch.float64, device=device)
    r: torch.Tensor | None = None
    coef = torch.empty(m, dtype=torch.float64, device=device)
    # the next direction f, orthogonal to V[:, :j] once j > 0, with g = Vᵀf measured, and a
    # buffer of its size: per product no vector-sized tensor is allocated (a fresh one costs
    # its page faults, ~2 ms for 4.5 MB, beside the 5-6 ms of a pass over the basis)
    f = random_vector() if v0 is None else _start(v0, n, dtype, device).clone()
    spare = torch.empty_like(f)
    g = torch.zeros(0, dtype=torch.float64, device=device)
    beta = f.norm()
    scale = 0.0  # the largest ||Hv|| so far, ≈ ||H||
    # the largest |vᵢᵀv_j| measured: while it stays at rounding level (10 ε), G is I to working
    # precision and its factorisation is skipped (small models in float64 never leave this)
    drift = 0.0
    j = 0
    restarts = 0
    exhausted = False
    invariant = False  # a Krylov space closed, or a fresh direction joined: eigenvalues may be repeated
    # repeated=True: continue from a fresh direction (after convergence), the wanted values at the
    # last convergence, and the products the fresh direction gets before they may be final
    fresh_start, found, checked_at = False, None, 0
    start = A.n_matvecs

    while True:
        # ---- expand the basis up to m vectors; H V = V C + f e_jᵀ (C = G⁻¹T) holds
        # throughout, so the residual of a Ritz pair (θ, Vs) is ||f|| · |s_j|, checked after
        # every product
        estimated = stopped = False
        ritz = None
        while j < m:
            if j and (fresh_start or beta.item() <= 1e3 * eps * scale):
                # invariant subspace, or converged pairs that may have copies elsewhere: continue
                # with a fresh direction, unless none is left (after convergence, dropping f's
                # coupling changes the Ritz problem by at most the converged residuals, and the
                # residuals returned are explicit)
                invariant, fresh_start = True, False
                fresh = random_vector()
                f, spare, g, beta, _, _ = _orthogonalize_into(spare, f, fresh, V[:, :j], _factor(G, j, drift, eps),
                                                              (V[:, :j].T @ fresh).to(torch.float64))
                r = torch.zeros(j, dtype=torch.float64, device=device)  # W no longer couples to f
                drift = max(drift, g.abs().max().item() / max(beta.item(), 1e-300))
                if beta.item() <= 1e3 * eps * math.sqrt(n):
                    exhausted = True
                    break
            torch.div(f, beta, out=V[:, j])
            if j:
                G[:j, j] = G[j, :j] = g / beta
                if r is None:
                    C[j, j - 1] = beta
                else:
                    C[j, :j] = beta * r
            r = None
            W[:, j] = A @ V[:, j]
            # Vᵀw without a pass over the basis: for the old vectors vᵢᵀHv_j = (Hvᵢ)ᵀv_j =
            # (VCᵢ)ᵀv_j = Cᵢᵀ G[:, j] by symmetry (rounding and H's own asymmetry, which leave a
            # component along V, are measured in g and so enter G); only v_jᵀw is a new dot
            torch.mv(C[: j + 1, :j].T, G[: j + 1, j], out=coef[:j])
            coef[j] = torch.dot(V[:, j], W[:, j])
            j += 1
            L = _factor(G, j, drift, eps)
            f, spare, g, beta, C[:j, j - 1], norm_w = _orthogonalize_into(f, spare, W[:, j - 1], V[:, :j], L,
                                                                          coef[:j])
            scale = max(scale, norm_w)
            drift = max(drift, g.abs().max().item() / max(beta.item(), 1e-300))
            if j >= n:
                exhausted = True
                break
            if j >= k and A.n_matvecs - start >= max_iter:
                break
            # checked after every product, or, once a Krylov space has closed (a repeated
            # eigenvalue shows once per start direction), only with the basis full, as ARPACK
            # does: by then fresh directions have shown the other copies
            if j >= k and (j == m or not invariant):
                ritz = _ritz(C, G, L, j, k, which)
                estimated, estimates = _estimate(ritz, k, tol, eps, beta)
                stopped = stop is not None and not estimated and bool(stop(ritz[0], estimates))
                if estimated or stopped:
                    break

        # the loop's last estimate, when it was made at this j (restart, converged, stopped)
        if ritz is None or ritz[1].shape[0] != j:
            ritz = _ritz(C, G, _factor(G, j, drift, eps), j, k, which)
        theta, S, pick = ritz
        used = A.n_matvecs - start
        last = exhausted or used >= max_iter or stopped
        # ---- the wanted Ritz vectors Y = VS and their products HY = WS, formed in place as
        # the first rows of the bases (for a thick restart, a few more kept after them), and
        # the explicit residuals of Y where the cheap estimate says converged, or at the end
        # (should those fail, the restart keeps only Y)
        keep = pick if estimated or last else _restart_set(theta, pick, _estimate(ritz, k, tol, eps, beta)[1], tol,
                                                           j, k, m, which)
        p = keep.numel()
        Sk = S[:, keep]
        _combine_rows_(V.T, Sk.to(dtype))
        _combine_rows_(W.T, Sk.to(dtype))
        # in the kept basis VSₖ: Gram matrix SₖᵀGSₖ (I but for rounding), coefficients
        # (SₖᵀGSₖ)⁻¹ SₖᵀGCSₖ (Θ but for rounding), Vᵀf = Sₖᵀg, coupling Sₖᵀr: no pass over V
        kept_G = Sk.T @ G[:j, :j] @ Sk
        kept_C = torch.linalg.solve(kept_G, Sk.T @ G[:j, :j] @ C[:j, :j] @ Sk)
        g, r = Sk.T @ g, Sk[j - 1].clone()  # the coupling was e_j
        C.zero_()
        G.zero_()
        G.diagonal().fill_(1.0)
        C[:p, :p], G[:p, :p] = kept_C, (kept_G + kept_G.T) / 2
        j = p
        if estimated or last:
            values, res, norms = _ritz_residuals(V.T[: pick.numel()], W.T[: pick.numel()], theta[pick],
                                                 theta.abs().max().item(), tol, eps)
            if last or bool((res <= tol).all().item()):
                unchanged = found is not None and torch.allclose(values, found, rtol=tol, atol=0)
                if last or not repeated or (unchanged and used >= checked_at):
                    break
                if not unchanged:  # a first convergence, or a fresh direction found more
                    found, fresh_start, checked_at = values, True, used + max(m - p, 10)
        # ---- thick restart: continue from f, which is orthogonal to the old basis and so to the new
        restarts += 1

    # each vector's largest-magnitude entry made positive (amax and amin: one pass each, where
    # abs().argmax() writes and reads a copy) and its norm 1 (in float32 on a large model the
    # measured G, and so ||VS||, is 1 only to the dot products' rounding, ~ε√n); a copy, not a
    # view, so the bases are freed
    rows = V.T[: pick.numel()]
    signs = torch.where(rows.amax(dim=1) >= -rows.amin(dim=1), 1.0, -1.0).to(norms)
    vectors = (rows * (signs / norms).to(dtype)[:, None]).T
    values, res = values.to(dtype), res.to(dtype)
    converged = bool((res <= tol).all().item())
    if not converged and not exhausted and not stopped:
        warnings.warn(AdviceWarning(
            f"lanczos: {which} k={k} did not reach tol={tol:g} in {used} products "
            f"(worst residual {res.max().item():.1e})", "raise max_iter or ncv, or loosen tol"),
            stacklevel=2,
        )
    if exhausted:
        converged = converged or bool((res <= max(tol, math.sqrt(eps))).all().item())
    return Eigenpairs(values, vectors, res, used, which, converged, restarts)


def _start(v0: torch.Tensor, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A warm start as one flat vector of the operator's dtype (columns are summed)."""
    v = torch.as_tensor(v0).to(device, dtype)
    if v.ndim == 2:
        v = v.sum(dim=1)
    if v.shape != (n,) or not torch.isfinite(v).all() or v.norm() == 0:
        raise ValueError(f"v0 must be a finite, non-zero vector of length {n} (or an (n, j) matrix), "
                         f"got shape {tuple(v.shape)}")
    return v


#: Columns per block of :func:`_orthogonalize_into`: a block of the basis is read from memory
#: once and from cache a second time.
_ORTHOGONALIZE_BLOCK = 32768


def _orthogonalize_into(out: torch.Tensor, spare: torch.Tensor, w: torch.Tensor, V: torch.Tensor,
                        L: torch.Tensor | None, coef: torch.Tensor):
    """Gram-Schmidt of ``w`` against the columns of V, whose Gram matrix G = VᵀV = LLᵀ is
    known (``L`` its Cholesky factor, ``None`` where G is I), given ``coef`` = Vᵀw in float64: ``f = w - V c`` with
    ``c = G⁻¹Vᵀw``, written into ``out`` (or ``spare``). Returns ``(f, the other buffer,
    g = Vᵀf in float64, ||f||, c, ||w||)``; a second pass adds its coefficients to ``c``.

    Each block of f is made and, while the block of V is still in cache, multiplied by it, so
    g costs about half a pass over the basis. With g known, V need not be orthonormal (its
    Gram matrix enters the Ritz problem), so a second pass, which full reorthogonalisation
    (Daniel, Gragg, Kaufman & Stewart 1976: "twice is enough") runs whenever more than 1/√2
    of the norm cancels, is needed only where rounding in f would be amplified beyond √ε:
    ||f|| < √ε ||w||. On the 1.1M-parameter MLP of bench/hessian.py that was 52-95 % of the
    products, each a further 11 ms pass against 3.5 ms for g."""
    n, eps = w.shape[0], torch.finfo(w.dtype).eps
    source, total = w, None
    for _ in range(2):
        c = coef if L is None else torch.cholesky_solve(coef[:, None], L)[:, 0]
        total = c if total is None else total + c
        # ||w||² = ||V c||²_G + ||f||² = cᵀ coef + ||f||²
        projected = float(torch.dot(c, coef))
        step = c.to(w.dtype)
        parts = []
        for c0 in range(0, n, _ORTHOGONALIZE_BLOCK):
            c1 = min(n, c0 + _ORTHOGONALIZE_BLOCK)
            block = V[c0:c1]
            torch.addmv(source[c0:c1], block, step, alpha=-1, out=out[c0:c1])
            parts.append(block.T @ out[c0:c1])
        g = (parts[0] if len(parts) == 1 else torch.stack(parts)).to(torch.float64)
        g = g if len(parts) == 1 else g.sum(dim=0)
        norm = out.norm()
        squared = float(norm) ** 2
        if source is w:
            norm_w = math.sqrt(projected + squared)
        if squared >= eps * (projected + squared):
            break
        # the second pass projects f itself (Vᵀf = g is known) into the other buffer
        source, out, spare, coef = out, spare, out, g
    return out, spare, g, norm, total, norm_w


#: Columns per block of :func:`_combine_rows_`: its scratch (p x block) stays small, and a block
#: is long enough that one GEMM call per block costs nothing next to its work.
_COMBINE_BLOCK = 16384


def _combine_rows_(rows: torch.Tensor, S: torch.Tensor) -> None:
    """``rows[:p] = Sᵀ rows[:j]`` in place, for a (j, p) S, block by block along the rows.

    The basis is kept as rows (each vector contiguous), so the combination is a GEMM whose
    output has the rows' layout. Written as ``V @ S`` on the (n, j) transposed view, torch's
    GEMM produces an (n, p) result that must then be transposed into place; on the 1.1M-
    parameter MLP of bench/hessian.py (j = 21, p = 15, 1 thread) that took 96 ms + 70 ms per
    basis against 29 ms here, and a restart combines two bases. Blocks need no (p, n) copy: a
    block's new rows depend only on that block's old ones."""
    (j, p), n = S.shape, rows.shape[1]
    St = S.T.contiguous()
    block = min(n, _COMBINE_BLOCK)
    scratch = torch.empty(p * block, dtype=rows.dtype, device=rows.device)
    for c0 in range(0, n, block):
        width = min(block, n - c0)
        out = scratch[: p * width].view(p, width)  # contiguous for the last, narrower block too
        torch.mm(St, rows[:j, c0 : c0 + width], out=out)
        rows[:p, c0 : c0 + width] = out


def _pick(theta: torch.Tensor, count: int, which: str) -> torch.Tensor:
    """Indices of the ``count`` most wanted Ritz values, in the output order of ``which``."""
    count = min(count, theta.numel())
    if which == "LA":
        return torch.argsort(theta, descending=True)[:count]
    if which == "SA":
        return torch.argsort(theta)[:count]
    if which == "LM":
        return torch.argsort(theta.abs(), descending=True)[:count]
    order = torch.argsort(theta)
    low = count // 2
    high = count - low
    return torch.cat([order[:low], order[order.numel() - high :]])


# Fractions of the spare basis (ncv - k) kept at a restart by the fixed rule (every ``which`` but
# "LA"): from the far end, and extra wanted ones. For "SA" the far end of a Hessian is a few large
# outliers, whose deflation shrinks the spread the wanted cluster near zero fights against
# (bench/RESULTS.md, hessian: up to 18x fewer products than ARPACK with half the spare basis).
_KEEP = {"SA": (0.5, 0.25)}
_KEEP_TWO_SIDED = (0.0, 0.25)
#: "LA": the fewest new directions per cycle, as a fraction of the spare basis (and at least 3):
#: keeping more pays a little per product but restarts more often, and a restart costs about
#: two products on a large model (it rewrites both bases).
_LEAST_NEW = 1 / 3


def _restart_set(theta: torch.Tensor, pick: torch.Tensor, estimates: torch.Tensor, tol: float, j: int, k: int,
                 m: int, which: str) -> torch.Tensor:
    """Ritz vectors kept at a restart, the wanted ones (``pick``) first: the most wanted ones
    and, for one-sided searches, a few from the far end. Keeping those (they converge first)
    deflates the far end from the continued Krylov space, which shrinks the spread the wanted
    end has to fight against. For "LA" the split is chosen per restart (:func:`_largest_kept`),
    for the others it is a fixed fraction of the basis."""
    if which == "LA":
        keep = _largest_kept(theta, estimates, tol, j, k, m)
    else:
        far, extra = _KEEP.get(which, _KEEP_TWO_SIDED)
        room = max(2, math.ceil((m - k) * (1 - far - extra)))  # new directions per cycle
        p = max(min(j - room, k + int((m - k) * extra)), min(k, j - 1))
        keep = _pick(theta, p, which)
        if far > 0:
            q = min(j - room - p, int((m - k) * far))
            if q > 0:  # only "SA" keeps a far end: its top
                keep = torch.cat([keep, _pick(theta, q, "LA")])
    rest = keep[~torch.isin(keep, pick)]
    return torch.cat([pick, rest])


def _largest_kept(theta: torch.Tensor, estimates: torch.Tensor, tol: float, j: int, k: int, m: int) -> torch.Tensor:
    """For "LA": keep the top p >= k Ritz vectors and the bottom q, the split that promises the
    wanted end the most progress in the next cycle (after TRLan's "maximum reduction" restart:
    Yamazaki, Bai, Simon, Wang & Wu 2010, "Adaptive projection subspace dimension for the
    thick-restart Lanczos method", ACM TOMS 37(3)).

    The next cycle's ``m - p - q`` new directions act on the discarded Ritz values [lo, hi]
    like a Chebyshev polynomial of that degree, which grows by about
    ``exp((m - p - q) · acosh(1 + 2γ))``, γ = (θ_t − hi) / (hi − lo), at the target θ_t, the
    lowest wanted Ritz value not yet converged. Keeping more of the wanted end (larger p) moves
    hi away from θ_t, which is what a clustered top needs (a fixed split keeps too few there);
    at least a third of the spare basis stays new, so that restarts, which rewrite both bases,
    stay rare. Returns indices into ``theta``, most wanted first."""
    order = torch.argsort(theta, descending=True)
    t = theta[order].to(torch.float64)
    unconverged = (estimates[order[:k]] > tol).nonzero()
    target = t[int(unconverged[-1]) if unconverged.numel() else k - 1]
    least = min(max(3, math.ceil((m - k) * _LEAST_NEW)), m - k)
    p = torch.arange(k, j, device=t.device)[:, None]  # kept from the top
    q = torch.arange(0, j - k, device=t.device)[None, :]  # kept from the bottom
    new = m - p - q
    allowed = (p + q < j) & (new >= least)  # p = k, q = 0 always is
    hi, lo = t[p.clamp(max=j - 1)], t[(j - 1 - q).clamp(min=0)]
    gamma = ((target - hi) / (hi - lo).clamp_min(1e-300)).clamp_min(0)
    merit = torch.where(allowed, new * torch.acosh(1 + 2 * gamma), -1.0)
    best = int(torch.argmax(merit))  # the first maximum: the fewest kept
    kept_top, kept_bottom = best // q.shape[1] + k, best % q.shape[1]
    return torch.cat([order[:kept_top], order[j - kept_bottom :]]) if kept_bottom else order[:kept_top]


def _floor(eps: float, tol: float) -> float:
    """φ: the relative size below which an eigenvalue is measured against φ ||T|| instead."""
    return max(eps ** (2 / 3), 100 * eps / tol)


def _estimate(ritz, k, tol, eps, beta) -> tuple[bool, torch.Tensor]:
    """Cheap convergence test from the Lanczos relation, residual_i = ||f|| · |s_{j,i}|
    (``beta`` = ||f||), on :func:`_ritz`'s output: ``(every wanted pair converged, each Ritz
    value's relative residual estimate)``."""
    theta, S, pick = ritz
    floor = _floor(eps, tol) * max(theta.abs().max().item(), 1e-300)
    res = beta * S[-1].abs() / theta.abs().clamp_min(floor)
    return bool((res[pick] <= tol).all().item()), res


def _factor(G: torch.Tensor, j: int, drift: float, eps: float) -> torch.Tensor | None:
    """The Cholesky factor of G[:j, :j], or ``None`` while the measured drift from
    orthonormal is at rounding level (then G is I to working precision)."""
    return None if drift <= 10 * eps else torch.linalg.cholesky(G[:j, :j])


def _ritz(C, G, L, j, k, which):
    """Rayleigh-Ritz on the first j basis vectors, the pencil (T, G) with T = GC = VᵀW, by the
    Cholesky factor L of G (``None``: G is I): Ritz values θ, eigenvectors S (G-orthonormal,
    so the Ritz vectors VS are orthonormal), the wanted indices."""
    if L is None:
        T = C[:j, :j]
        theta, S = torch.linalg.eigh((T + T.T) / 2)
        return theta, S, _pick(theta, k, which)
    T = G[:j, :j] @ C[:j, :j]
    X = torch.linalg.solve_triangular(L, (T + T.T) / 2, upper=False)
    # L⁻¹TL⁻ᵀ, symmetric but for rounding: eigh reads its lower triangle
    theta, Z = torch.linalg.eigh(torch.linalg.solve_triangular(L, X.T, upper=False))
    S = torch.linalg.solve_triangular(L.T, Z, upper=True)
    return theta, S, _pick(theta, k, which)


#: Columns per block of :func:`_ritz_residuals`: its temporaries stay in cache.
_RESIDUAL_BLOCK = 32768


def _ritz_residuals(Y: torch.Tensor, HY: torch.Tensor, theta: torch.Tensor, scale: float, tol: float,
                    eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Rayleigh quotients, relative residuals, norms)`` of Ritz vectors given as rows ``Y`` with
    their products ``HY`` (no new products) and Ritz values ``theta``; ``scale`` ≈ ||H||
    (the floor φ·scale of small eigenvalues, see the module docstring).

    The quotients yᵀHy / yᵀy are the values returned: in float32 the Ritz values of T = VᵀW
    carry the rounding that matrix-vector products accumulate over n terms (the 1.1M-parameter
    MLP's top 10 came out to 2e-5-6e-5 whatever the tolerance, 3e-6-7e-6 this way), while a
    quotient's error is second order in its vector's. Sums run block by block (torch's
    cascaded sums within a block, float64 across blocks), in one pass over Y and HY."""
    k, n = Y.shape
    sums = torch.zeros(3, k, dtype=torch.float64, device=Y.device)  # yᵀy, yᵀHy, ||Hy - θy||²
    theta_col = theta[:, None].to(Y.dtype)
    for c0 in range(0, n, _RESIDUAL_BLOCK):
        y, hy = Y[:, c0 : c0 + _RESIDUAL_BLOCK], HY[:, c0 : c0 + _RESIDUAL_BLOCK]
        r = torch.addcmul(hy, y, theta_col, value=-1)
        sums += torch.stack([(y * y).sum(dim=1), (y * hy).sum(dim=1), (r * r).sum(dim=1)]).to(torch.float64)
    floor = _floor(eps, tol) * max(scale, 1e-300)
    res = (sums[2] / sums[0]).sqrt().to(theta.dtype) / theta.abs().clamp_min(floor)  # per unit vector
    return (sums[1] / sums[0]).to(theta.dtype), res, sums[0].sqrt()
