"""``StallMonitor``: notice when training stops improving, say where it is stuck, step out of a saddle.

Plug it into any training loop as a callback::

    monitor = StallMonitor(loss_fn, (X_train, y_train))
    for step, (x, y) in enumerate(batches, start=1):
        ...
        optimizer.step()
        monitor.update(step, loss.item(), model)

**Plateau test.** With ``w = window``, after at least ``2w`` losses since the last stall,
compare the means of the last two windows, m_prev and m_cur: a plateau is
``(m_prev - m_cur) / |m_prev| < rel_tol``. Optionally (``grad_tol``) every ``w`` steps the
gradient of the full ``data`` loss is measured, and ``||g|| < grad_tol`` is a plateau too.

**Diagnosis.** At a plateau: :func:`descentlab.critical.classify` on ``data`` (extreme
Hessian eigenpairs, kind, minimum ratio), the loss along the eigenvector of the most
negative eigenvalue (a 1-D slice kept as data, for the report), and, when ``escape=True``
and there is negative curvature, :func:`descentlab.critical.escape` (a step along that
eigenvector that never raises the loss). Each finding is a :class:`Stall` in
``monitor.stalls`` and one line through ``log``.

**Budget.** The monitor times the training between its calls and itself. A diagnosis
starts only if ``spent + expected <= budget * training_time``, where ``expected`` is the
last diagnosis's cost (before the first one: the time of one full-data gradient times the
number of Hessian-vector products the classification will need, times 3 for a product's
cost). A stall that does not fit is recorded with ``status="skipped (budget)"``.
``budget=None`` means no cap. Because the budget reads the clock, a capped monitor may
decide differently on a slower machine; with ``budget=None`` everything is deterministic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

from descentlab.critical.classify import DENSE_THRESHOLD, classify
from descentlab.critical.escape import escape
from descentlab.curvature.batches import as_batches

__all__ = ["StallMonitor", "Stall", "full_loss_and_grad", "loss_slice"]


@dataclass(frozen=True)
class Stall:
    """One plateau: where it was noticed, what the Hessian said, what the escape did.

    Attributes:
        step: the training step at which the plateau was noticed.
        loss, grad_norm: full-data loss and gradient norm there.
        reason: ``"loss"`` (relative improvement over the window below ``rel_tol``) or ``"grad"``.
        status: ``"diagnosed"``, ``"skipped (budget)"`` or ``"failed: <message>"``.
        kind, degenerate, min_eigenvalue, max_eigenvalue, minimum_ratio: from ``classify``.
        eigenvalues: the extreme eigenvalues found (both ends of the spectrum).
        spectrum: every eigenvalue when ``classify`` formed the Hessian (its exact path), else ``None``.
        slice_t, slice_loss: the loss at θ + t·u along the most negative eigenvector u (unit norm;
            after an escape, signed as the step was taken, so the step is at t = ``escape_step``).
        escaped, escape_loss_before, escape_loss_after, escape_predicted, escape_step: the escape.
        seconds: wall time of this diagnosis.
    """

    step: int
    loss: float
    grad_norm: float
    reason: str
    status: str
    kind: str | None = None
    degenerate: bool | None = None
    min_eigenvalue: float | None = None
    max_eigenvalue: float | None = None
    minimum_ratio: float | None = None
    eigenvalues: tuple[float, ...] = ()
    spectrum: tuple[float, ...] | None = field(default=None, repr=False)
    slice_t: tuple[float, ...] = field(default=(), repr=False)
    slice_loss: tuple[float, ...] = field(default=(), repr=False)
    escaped: bool = False
    escape_loss_before: float | None = None
    escape_loss_after: float | None = None
    escape_predicted: float | None = None
    escape_step: float | None = None
    seconds: float = 0.0
    point: Any = field(default=None, repr=False, compare=False)
    escape: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers, strings and lists (JSON and ``weights_only`` checkpoints take it)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("point", "escape")}
        for key in ("eigenvalues", "spectrum", "slice_t", "slice_loss"):
            out[key] = None if out[key] is None else list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Stall":
        known = {f.name for f in fields(cls)} - {"point", "escape"}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("eigenvalues", "slice_t", "slice_loss"):
            values[key] = tuple(values.get(key) or ())
        if values.get("spectrum") is not None:
            values["spectrum"] = tuple(values["spectrum"])
        return cls(**values)

    def verdict(self) -> str:
        """One line: what was found and what escape achieved."""
        if self.status != "diagnosed":
            return f"step {self.step}: plateau at loss {self.loss:.4g}, {self.status}"
        kind = f"{self.kind}{' (degenerate)' if self.degenerate else ''}"
        text = (f"step {self.step}: plateau at loss {self.loss:.4g}, |g| {self.grad_norm:.2g}: {kind}, "
                f"lambda_min {self.min_eigenvalue:.3g}, lambda_max {self.max_eigenvalue:.3g}")
        if self.escaped:
            text += f"; escape lowered the loss {self.escape_loss_before:.4g} -> {self.escape_loss_after:.4g}"
        return text


def full_loss_and_grad(model: nn.Module, loss_fn: Callable, data: Any, *, grad: bool = True) -> tuple[float, float]:
    """(loss, gradient norm) of the sample-weighted mean loss over every batch of ``data``.

    The model's ``.grad`` fields are left untouched (``torch.autograd.grad``, not ``backward``).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    total, count = 0.0, 0
    grads = [torch.zeros_like(p) for p in params] if grad else []
    for X, y in as_batches(data):
        n = len(y)
        with torch.set_grad_enabled(grad):
            loss = loss_fn(model(X), y)
        if grad:
            for acc, g in zip(grads, torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    acc.add_(g, alpha=n)
        total += float(loss.detach()) * n
        count += n
    norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))) / count if grad and grads else 0.0
    return total / count, norm


@torch.no_grad()
def loss_slice(model: nn.Module, loss_fn: Callable, data: Any, direction: Sequence[torch.Tensor] | torch.Tensor,
               radius: float, n_points: int = 41) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The loss at θ + t·u for ``n_points`` values of t in [-radius, radius]; ``u`` is scaled to unit norm.

    ``direction`` is a flat vector over the trainable parameters (in ``model.parameters()``
    order) or a list of tensors shaped like them. The parameters are restored afterwards.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if isinstance(direction, torch.Tensor) and direction.ndim == 1:
        parts, offset = [], 0
        for p in params:
            parts.append(direction[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        direction = parts
    norm = math.sqrt(sum(float((d.to(p.dtype) ** 2).sum()) for p, d in zip(params, direction)))
    if norm == 0:
        raise ValueError("direction must be non-zero")
    saved = [p.detach().clone() for p in params]
    ts = torch.linspace(-radius, radius, n_points, dtype=torch.float64).tolist()
    losses = []
    was_training = model.training
    model.eval()
    try:
        for t in ts:
            for p, p0, d in zip(params, saved, direction):
                p.copy_(p0 + (t / norm) * d.to(device=p.device, dtype=p.dtype))
            losses.append(full_loss_and_grad(model, loss_fn, data, grad=False)[0])
    finally:
        for p, p0 in zip(params, saved):
            p.copy_(p0)
        model.train(was_training)
    return tuple(ts), tuple(losses)


class StallMonitor:
    """Plateau detector + diagnosis + optional saddle escape, for any training loop.

    Args:
        loss_fn: ``loss_fn(output, target)``, mean over a batch.
        data: the data the diagnosis uses: one ``(X, y)`` pair or a list of batches.
        window: steps per window of the plateau test (>= 1).
        rel_tol: relative improvement between two windows below which it is a plateau; ``None``: off.
        grad_tol: full-data gradient norm below which it is a plateau; ``None``: off.
        escape: step out of a saddle along negative curvature when one is found.
        budget: the most the monitor may spend, as a fraction of training time; ``None``: no cap.
        max_stalls: stop looking after this many stalls (``None``: never).
        classify_options: keyword arguments for ``classify`` (``grad_tol``, ``eig_tol``, ``k``).
        escape_options: keyword arguments for ``escape`` (``max_step``).
        slice_radius: half-width of the 1-D loss slice along the escape direction (0: no slice).
        log: where the one-line findings go (``print``, ``tqdm.write``; ``None``: nowhere).
    """

    def __init__(
        self,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        data: Any,
        *,
        window: int = 50,
        rel_tol: float | None = 1e-3,
        grad_tol: float | None = None,
        escape: bool = True,
        budget: float | None = 0.2,
        max_stalls: int | None = None,
        classify_options: Mapping[str, Any] | None = None,
        escape_options: Mapping[str, Any] | None = None,
        slice_radius: float = 2.0,
        log: Callable[[str], Any] | None = print,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        if rel_tol is None and grad_tol is None:
            raise ValueError("rel_tol and grad_tol cannot both be None: nothing would detect a plateau")
        if rel_tol is not None and not (math.isfinite(rel_tol) and rel_tol >= 0):
            raise ValueError(f"rel_tol must be a non-negative number or None, got {rel_tol!r}")
        if grad_tol is not None and not (math.isfinite(grad_tol) and grad_tol > 0):
            raise ValueError(f"grad_tol must be a positive number or None, got {grad_tol!r}")
        if budget is not None and not (math.isfinite(budget) and budget > 0):
            raise ValueError(f"budget must be a positive fraction or None, got {budget!r}")
        if max_stalls is not None and (not isinstance(max_stalls, int) or max_stalls < 0):
            raise ValueError(f"max_stalls must be a non-negative integer or None, got {max_stalls!r}")
        if not (math.isfinite(slice_radius) and slice_radius >= 0):
            raise ValueError(f"slice_radius must be a non-negative number, got {slice_radius!r}")
        self.loss_fn = loss_fn
        self.data = data
        self.window = window
        self.rel_tol = rel_tol
        self.grad_tol = grad_tol
        self.escape = bool(escape)
        self.budget = budget
        self.max_stalls = max_stalls
        self.classify_options = dict(classify_options or {})
        self.escape_options = dict(escape_options or {})
        self.slice_radius = float(slice_radius)
        self.log = log
        self.stalls: list[Stall] = []
        self.losses: list[float] = []  # the last 2 * window losses since the last stall
        self.since = 0  # steps since the last stall (or the start)
        self.spent = 0.0  # seconds inside the monitor's diagnoses
        self.train_time = 0.0  # seconds between calls, i.e. training
        self._last_cost: float | None = None
        self._last_return: float | None = None

    # ------------------------------------------------------------------ the plateau test
    def plateau(self, step: int, model: nn.Module) -> tuple[str, float, float] | None:
        """``(reason, loss, grad_norm)`` when the recent history is a plateau, else ``None``."""
        w = self.window
        reason = None
        if self.rel_tol is not None and len(self.losses) >= 2 * w:
            previous = sum(self.losses[-2 * w:-w]) / w
            current = sum(self.losses[-w:]) / w
            if (previous - current) / max(abs(previous), 1e-12) < self.rel_tol:
                reason = "loss"
        if reason is None and self.grad_tol is not None and self.since % w == 0:
            loss, grad_norm = full_loss_and_grad(model, self.loss_fn, self.data)
            if grad_norm < self.grad_tol:
                return "grad", loss, grad_norm
            return None
        if reason is None:
            return None
        loss, grad_norm = full_loss_and_grad(model, self.loss_fn, self.data)
        return reason, loss, grad_norm

    def update(self, step: int, loss: float, model: nn.Module) -> Stall | None:
        """Feed one step's loss; at a plateau diagnose (and maybe escape). Returns the new :class:`Stall` or ``None``."""
        now = time.perf_counter()
        if self._last_return is not None:
            self.train_time += now - self._last_return
        try:
            if self.max_stalls is not None and len(self.stalls) >= self.max_stalls:
                return None
            if not math.isfinite(loss):
                return None
            self.losses.append(float(loss))
            del self.losses[:-2 * self.window]  # the test looks at two windows, no further back
            self.since += 1
            t0 = time.perf_counter()
            found = self.plateau(step, model)
            if found is None:
                self.spent += time.perf_counter() - t0
                return None
            reason, full_loss, grad_norm = found
            self.losses.clear()
            self.since = 0
            gradient_seconds = time.perf_counter() - t0
            expected = self._last_cost if self._last_cost is not None else self._first_cost(model, gradient_seconds)
            if self.budget is not None and self.spent + expected > self.budget * self.train_time:
                self.spent += time.perf_counter() - t0
                stall = Stall(step, full_loss, grad_norm, reason, "skipped (budget)")
            else:
                stall = self._diagnose(step, model, reason, full_loss, grad_norm)
                cost = time.perf_counter() - t0
                self._last_cost = cost
                self.spent += cost
                stall = _replace(stall, seconds=cost)
            self.stalls.append(stall)
            if self.log is not None:
                self.log(stall.verdict())
            return stall
        finally:
            self._last_return = time.perf_counter()

    def _first_cost(self, model: nn.Module, gradient_seconds: float) -> float:
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        k = int(self.classify_options.get("k", 10))
        # classify's exact path: n products; its Lanczos path: the extremes plus the ratio estimate
        exact = n <= int(self.classify_options.get("dense_threshold", DENSE_THRESHOLD))
        products = n if exact else 2 * (3 * k + 40) + 1600
        return 3.0 * gradient_seconds * products

    # ------------------------------------------------------------------ diagnosis
    def _diagnose(self, step: int, model: nn.Module, reason: str, loss: float, grad_norm: float) -> Stall:
        try:
            point = classify(model, self.loss_fn, self.data, **self.classify_options)
        except Exception as error:  # a diagnosis must never kill the training run
            return Stall(step, loss, grad_norm, reason, f"failed: {type(error).__name__}: {error}")
        direction = _lowest_direction(point)
        slice_t, slice_loss = (), ()
        if direction is not None and self.slice_radius > 0:
            slice_t, slice_loss = loss_slice(model, self.loss_fn, self.data, direction, self.slice_radius)
        fields_ = dict(
            kind=point.kind, degenerate=bool(point.degenerate), min_eigenvalue=float(point.min_eigenvalue),
            max_eigenvalue=float(point.max_eigenvalue), minimum_ratio=_float(point.minimum_ratio),
            eigenvalues=_tuple(point.eigenpairs.values),
            spectrum=None if point.spectrum is None else _tuple(point.spectrum),
            slice_t=slice_t, slice_loss=slice_loss, point=point,
        )
        if self.escape and point.min_eigenvalue < 0:
            result = escape(model, self.loss_fn, self.data, point, **self.escape_options)
            if result.applied and result.direction is not None and direction is not None:
                # the slice is kept along the direction actually stepped (s*u, s = +-1): L(theta + t s u)
                if float(torch.dot(result.direction.to(direction), direction)) < 0:
                    fields_["slice_loss"] = tuple(reversed(slice_loss))
            fields_.update(
                escape=result, escaped=bool(result.applied), escape_loss_before=float(result.loss_before),
                escape_loss_after=float(result.loss_after), escape_predicted=float(result.predicted_decrease),
                escape_step=float(result.step_size),
            )
        return Stall(step, loss, grad_norm, reason, "diagnosed", **fields_)

    __call__ = update  # a monitor is itself a callback: ``callbacks=[monitor]``

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything the monitor's future decisions depend on (for a bit-for-bit resume)."""
        return {"losses": list(self.losses), "since": self.since, "stalls": [s.to_dict() for s in self.stalls], "spent": self.spent,
                "train_time": self.train_time, "last_cost": self._last_cost}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.losses = [float(x) for x in state["losses"]]
        self.since = int(state["since"])
        self.stalls = [Stall.from_dict(s) for s in state["stalls"]]
        self.spent, self.train_time = float(state["spent"]), float(state["train_time"])
        self._last_cost = state["last_cost"]
        self._last_return = None


def _replace(stall: Stall, **changes: Any) -> Stall:
    return replace(stall, **changes)


def _float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, tuple) and value:  # (value, how) pairs: keep the number
        value = value[0]
    if hasattr(value, "value"):
        value = value.value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _tuple(values: Any) -> tuple[float, ...]:
    if values is None:
        return ()
    return tuple(float(v) for v in torch.as_tensor(values).flatten().tolist())


def _lowest_direction(point: Any) -> torch.Tensor | None:
    """The eigenvector of the smallest eigenvalue among ``point.eigenpairs`` (``None`` if none)."""
    pairs = getattr(point, "eigenpairs", None)
    if pairs is None or pairs.vectors is None or len(pairs.values) == 0:
        return None
    values = torch.as_tensor(pairs.values)
    index = int(torch.argmin(values))
    return torch.as_tensor(pairs.vectors)[:, index]
