"""The stability limit of an optimizer: how large the rate may be for the valley's curvature.

On a quadratic valley L(θ) = ½ θᵀHθ every optimizer below is linear in (θ, its state), and
along an eigenvector of (its preconditioned) H with eigenvalue λ it converges only while
``a = step · λ`` stays under a limit; above it the iterate oscillates with growing amplitude
across the valley. The *sharpness* of a run is that ``a`` for the largest λ; a stall where it
reaches the limit is not a critical point but the rate fighting the curvature.

==============================  ============================================  ==================
optimizer (torch's update)      sharpness a                                   stable while a <
==============================  ============================================  ==================
SGD, ``θ −= η g``               η λ_max(H)                                    2
heavy ball (``momentum`` β,     η (1 − τ) λ_max(H)                            2 (1 + β)
dampening τ): b = βb + (1−τ)g
Nesterov (torch's, τ = 0)       η λ_max(H)                                    2 (1 + β) / (1 + 2β)
RMSprop (``alpha``, momentum μ) η λ_max(D⁻¹H), D = diag(√v + ε)              2 (1 + μ)
Adagrad                         η_t λ_max(D⁻¹H), D = diag(√Σg² + ε)           2 (no bound on η)
Adam / AdamW / AMSGrad          η λ_max(D⁻¹H) / (1 − β₁ᵗ), D = diag(√v̂ + ε)  2 (1 + β₁) / (1 − β₁)
==============================  ============================================  ==================

Heavy ball: z² − (1 + β − a)z + β = 0 has its roots in the unit disc iff 0 < a < 2(1 + β)
(Polyak 1964). Nesterov, b_{t+1} = βb_t + g_t, θ −= η(g_t + βb_{t+1}): z² − (1 + β − a(1 + β))z
+ β(1 − a) = 0, whose root at z = −1 sets a < 2(1 + β)/(1 + 2β). Adam with its preconditioner
frozen is heavy ball with dampening 1 − β₁ on D⁻¹H, scaled by the bias correction: the limit
(2 + 2β₁)/(1 − β₁) (38 at β₁ = 0.9) is the one Cohen et al. measured for the *preconditioned
sharpness* (2022, "Adaptive gradient methods at the edge of stability", arXiv:2207.14484).
λ_max(D⁻¹H) is the top eigenvalue of the symmetric D^{-1/2} H D^{-1/2}, so Lanczos applies.
NAdam and RAdam are read as Adam (their own corrections are ignored; the rule says so).
Adagrad's limit is the rate's sharpness at its accumulator now, and bounds no rate: the accumulator
takes in each gradient before the step, so a rate above it grows ``D`` until it is under it
(:attr:`StabilityRule.bounded`).

Wrappers (Lookahead, gradient noise) are read through to the optimizer that steps. An
optimizer none of these describe gets plain SGD's rule, and its ``formula`` says so.

Below the limit a momentum method still need not settle soon: where heavy ball's roots are
complex, (1 − √β)² < a < (1 + √β)² (every direction but the flattest at β near 1), both have
modulus √β whatever the rate, so an oscillation loses only 1 − √β of its amplitude a step
(:func:`ring_half_life`; Adam's β₁ and RMSprop's momentum alike, Nesterov's roots √(β(1 − a)) at
most that). At β = 0.999 it halves every 1,386 steps: the iterate rings across the valley for
longer than most runs, and a lower rate does not damp it faster.

Every rule reads the *current* state of ``param_groups[0]`` (other groups are assumed to share
the momentum constants; their rates are used per parameter), and the run's rate is the largest of
its groups' (:func:`current_rate`): a group held at 0 beside others is frozen on purpose, not a
schedule that ended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from descentlab.curvature import lanczos

__all__ = ["StabilityRule", "stability_rule", "sharpness", "innermost", "current_rate", "awaits_state",
           "steps_per_coordinate", "maximizes", "momentum_option", "eps_bound_share", "stability_operator",
           "sharpness_of", "heavy_ball_limit", "nesterov_limit", "adam_limit", "ring_half_life"]

#: The option in a param group that marks an adaptive optimizer's kind, and the per-coordinate state
#: its rule reads (Adam's, RMSprop's, Adagrad's: :func:`stability_rule`).
_ADAPTIVE_STATE = {"betas": "exp_avg_sq", "alpha": "square_avg", "lr_decay": "sum"}


def heavy_ball_limit(beta: float) -> float:
    """2(1 + β): the largest stable ``η(1 − τ)λ`` of heavy-ball momentum (β = 0: plain GD's 2)."""
    return 2.0 * (1.0 + beta)


def nesterov_limit(beta: float) -> float:
    """2(1 + β)/(1 + 2β): the largest stable ``ηλ`` of torch's Nesterov momentum."""
    return 2.0 * (1.0 + beta) / (1.0 + 2.0 * beta)


def ring_half_life(momentum: float) -> float:
    """Steps in which a momentum method's oscillation halves where its roots are complex (modulus
    √β): 2 ln 2 / ln(1/β); 0 without momentum, ``inf`` at β = 1 (see the module docstring)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if momentum == 0.0:
        return 0.0
    return math.inf if momentum == 1.0 else 2.0 * math.log(2.0) / -math.log(momentum)


def adam_limit(beta1: float) -> float:
    """(2 + 2β₁)/(1 − β₁): the largest stable preconditioned sharpness of Adam (Cohen et al. 2022)."""
    return (2.0 + 2.0 * beta1) / (1.0 - beta1)


@dataclass(frozen=True)
class StabilityRule:
    """How one optimizer's step meets the curvature (see the module docstring).

    Attributes:
        name: ``"gd"``, ``"heavy-ball"``, ``"nesterov"``, ``"rmsprop"``, ``"adagrad"`` or ``"adam"``.
        lr: the current rate of the first parameter group.
        limit: the sharpness at which the rule stops being stable.
        scale: the factor between the rate and the step on the raw curvature (1 − τ for heavy
            ball, 1/(1 − β₁ᵗ) for Adam), so that ``sharpness = lr · scale · λ_max(...)``.
        formula: the rule in words, as a user reads it in the evidence.
        steps: per parameter (by name), the per-coordinate step ``η_group · scale / d`` of a
            preconditioned rule, or of plain rules whose groups have different rates; ``None``
            when one scalar ``lr · scale`` multiplies the plain Hessian.
        momentum: the rule's momentum coefficient (heavy ball's or Nesterov's β, Adam's β₁,
            RMSprop's momentum; 0 for gradient descent and Adagrad): :func:`ring_half_life`.
        unmodelled: the optimizer's class where no rule models it and gradient descent's is read
            instead (Rprop; ``None`` otherwise, and for an optimizer with no state yet).
        bounded: whether the limit bounds the rate. Not for Adagrad: its accumulator takes in each
            gradient before the step (``|Δθ| ≤ η`` per coordinate), so a larger rate, whose
            oscillation brings larger gradients, grows ``D`` until the sharpness is back under the
            limit. On a digits MLP stalled at 1e-5, rates 10 to 10,000 times the limit at the
            accumulator then (3.5e-5) ended lower after 200 steps the higher they were, none
            diverging (``tests/test_adagrad_rate.py``).
    """

    name: str
    lr: float
    limit: float
    scale: float
    formula: str
    steps: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)
    momentum: float = 0.0
    unmodelled: str | None = None
    bounded: bool = True

    @property
    def preconditioned(self) -> bool:
        """The sharpness is that of a rescaled Hessian, not ``lr · scale · λ_max(H)``."""
        return self.steps is not None

    def largest_stable_lr(self, sharpness_value: float) -> float | None:
        """The rate at which the measured sharpness would sit exactly at the limit (``None`` if none)."""
        if not (sharpness_value > 0 and math.isfinite(sharpness_value)) or self.lr <= 0:
            return None
        return self.lr * self.limit / sharpness_value


def innermost(optimizer: Any) -> Any:
    """The optimizer that takes the steps, through wrappers (``.base``)."""
    seen = 0
    while hasattr(optimizer, "base") and isinstance(getattr(optimizer, "base"), torch.optim.Optimizer) and seen < 8:
        optimizer = optimizer.base
        seen += 1
    return optimizer


def awaits_state(optimizer: Any) -> bool:
    """An adaptive optimizer (Adam's, RMSprop's or Adagrad's kind) before its first step: its rule
    reads the per-coordinate state that step writes, so there is no rule yet to hold a sharpness
    against (:func:`stability_rule` would fall back to gradient descent's, another quantity)."""
    inner = innermost(optimizer)
    return any(option in inner.param_groups[0] and not _has_state(inner, option) for option in _ADAPTIVE_STATE)


def steps_per_coordinate(optimizer: Any) -> bool:
    """An adaptive optimizer (Adam's, RMSprop's or Adagrad's kind): its step moves each coordinate a
    gradient reaches by about the rate, whatever the gradient's size (Adam's first step by the rate
    exactly, m̂/√v̂ = ±1), where plain SGD moves it by the rate times the gradient."""
    inner = innermost(optimizer)
    return any(option in group for group in inner.param_groups for option in _ADAPTIVE_STATE)


def momentum_option(optimizer: Any) -> float | None:
    """The largest ``momentum`` the optimizer's groups hold (SGD's, RMSprop's heavy ball), ``None``
    where it has no such option. Torch accepts any non-negative value; at 1 or more the velocity
    never decays, and no rate is stable."""
    inner = innermost(optimizer)
    values = [float(group["momentum"]) for group in inner.param_groups if "momentum" in group and group["params"]]
    return max(values) if values else None


def maximizes(optimizer: Any) -> bool:
    """The optimizer steps up the gradient (torch's ``maximize=True``, in any group holding a
    parameter): it climbs the loss it is given, where every stability rule here describes descent."""
    inner = innermost(optimizer)
    return any(group.get("maximize") and group["params"] for group in inner.param_groups)


def eps_bound_share(optimizer: Any) -> tuple[float, float] | None:
    """For Adam's kind (``betas``, ``eps`` and ``exp_avg_sq``): ``(eps, share)``, the share of
    the coordinates a gradient has reached (√v̂ > 0) whose √v̂ is at most ``eps``, where the
    denominator √v̂ + ε is mostly ε and the method steps as momentum SGD at ``lr / eps`` (ε = 1
    makes Adam SGD at its own small rate). ``None`` for other optimizers or before the first step."""
    inner = innermost(optimizer)
    if not all("betas" in group and "eps" in group for group in inner.param_groups):
        return None
    bound = total = 0
    for group in inner.param_groups:
        beta2 = float(group["betas"][1])
        for p in group["params"]:
            state = inner.state.get(p, {})
            if "exp_avg_sq" not in state:
                continue
            t = float(state["step"]) if "step" in state else float(group.get("step", 1.0))
            root = (state["exp_avg_sq"] / (1.0 - beta2 ** t)).sqrt()
            seen = root > 0  # a coordinate no gradient reached (an embedding row never looked up) steps 0 anyway
            bound += int((seen & (root <= float(group["eps"]))).sum())
            total += int(seen.sum())
    return (float(inner.param_groups[0]["eps"]), bound / total) if total else None


def _has_state(inner: Any, option: str) -> bool:
    """``inner`` holds the per-coordinate state of the adaptive kind marked by ``option``."""
    return any(_ADAPTIVE_STATE[option] in s for s in inner.state.values())


def current_rate(optimizer: Any) -> float:
    """The run's rate now: the largest of the optimizer's groups that hold parameters (one group:
    its rate). A body frozen at rate 0 under a head that trains, or discriminative rates, is a run
    at its largest rate; the rule's per-parameter steps carry each group's own."""
    groups = [g for g in innermost(optimizer).param_groups if g["params"]] or innermost(optimizer).param_groups
    return max(float(g["lr"]) for g in groups)


def stability_rule(optimizer: torch.optim.Optimizer, model: nn.Module, names: tuple[str, ...] | None = None) -> StabilityRule:
    """The :class:`StabilityRule` of ``optimizer`` (its current rate and state) for ``model``'s
    parameters ``names`` (default: every parameter that requires grad, in module order)."""
    inner = innermost(optimizer)
    groups = inner.param_groups
    group = groups[0]
    lr = current_rate(inner)
    named = dict(model.named_parameters())
    names = tuple(names) if names is not None else tuple(n for n, p in model.named_parameters() if p.requires_grad)
    name_of = {id(p): n for n, p in named.items()}
    group_of = {name_of[id(p)]: g for g in groups for p in g["params"] if id(p) in name_of}
    state = inner.state
    kind = type(inner).__name__

    def per_name(fn) -> dict[str, torch.Tensor] | None:
        """Per-parameter steps from ``fn(param, group)``; ``None`` when some parameter has no state yet."""
        out = {}
        for n in names:
            p, g = named[n], group_of.get(n, group)
            value = fn(p, g, state.get(p, {}))
            if value is None:
                return None
            out[n] = value.detach()
        return out

    uniform = all(float(g["lr"]) == lr for g in groups)

    def plain_steps(scale: float) -> dict[str, torch.Tensor] | None:
        if uniform:
            return None
        return {n: torch.full_like(named[n], float(group_of.get(n, group)["lr"]) * scale) for n in names}

    if "betas" in group and _has_state(inner, "betas"):
        beta1, beta2 = (float(b) for b in group["betas"])
        eps = float(group.get("eps", 1e-8))
        amsgrad = bool(group.get("amsgrad", False))

        def adam_step(p, g, s):
            if "exp_avg_sq" not in s:
                return None
            t = float(s["step"]) if "step" in s else float(g.get("step", 1.0))  # SWATS counts per group
            v = s["max_exp_avg_sq"] if amsgrad and "max_exp_avg_sq" in s else s["exp_avg_sq"]
            denom = (v / (1.0 - beta2 ** t)).sqrt() + eps
            return float(g["lr"]) / (1.0 - beta1 ** t) / denom

        steps = per_name(adam_step)
        t = max((float(s["step"]) for s in state.values() if "step" in s), default=float(group.get("step", 1.0)))
        note = "" if kind in ("Adam", "AdamW") else f" ({kind} read as Adam)"
        if steps is not None:
            return StabilityRule("adam", lr, adam_limit(beta1), 1.0 / (1.0 - beta1 ** t),
                                 f"lr * lambda_max(D^-1 H) / (1 - beta1^t) < 2(1 + beta1)/(1 - beta1) = "
                                 f"{adam_limit(beta1):.4g}, D = sqrt(v_hat) + eps{note}", steps, beta1)
    if "alpha" in group and _has_state(inner, "alpha"):
        momentum = float(group.get("momentum", 0.0))
        eps = float(group.get("eps", 1e-8))
        centered = bool(group.get("centered", False))

        def rms_step(p, g, s):
            if "square_avg" not in s:
                return None
            v = s["square_avg"]
            if centered and "grad_avg" in s:
                v = v - s["grad_avg"] ** 2
            return float(g["lr"]) / (v.clamp_min(0).sqrt() + eps)

        steps = per_name(rms_step)
        if steps is not None:
            return StabilityRule("rmsprop", lr, heavy_ball_limit(momentum), 1.0, f"lr * lambda_max(D^-1 H) < "
                                 f"2(1 + momentum) = {heavy_ball_limit(momentum):.4g}, D = sqrt(v) + eps", steps,
                                 momentum)
    if "lr_decay" in group and _has_state(inner, "lr_decay"):
        eps = float(group.get("eps", 1e-10))

        def adagrad_step(p, g, s):
            if "sum" not in s:
                return None
            t = float(s.get("step", 1.0))
            clr = float(g["lr"]) / (1.0 + (t - 1.0) * float(g.get("lr_decay", 0.0)))
            return clr / (s["sum"].sqrt() + eps)

        steps = per_name(adagrad_step)
        if steps is not None:
            return StabilityRule("adagrad", lr, 2.0, 1.0, "lr_t * lambda_max(D^-1 H) < 2, D = sqrt(sum g^2) + eps",
                                 steps, bounded=False)
    if isinstance(inner, torch.optim.SGD) or ("momentum" in group and "dampening" in group):
        beta = float(group.get("momentum", 0.0) or 0.0)
        dampening = float(group.get("dampening", 0.0) or 0.0)
        if beta > 0 and group.get("nesterov", False):
            return StabilityRule("nesterov", lr, nesterov_limit(beta), 1.0,
                                 f"lr * lambda_max < 2(1 + beta)/(1 + 2 beta) = {nesterov_limit(beta):.4g} "
                                 f"(Nesterov momentum {beta:g})", plain_steps(1.0), beta)
        if beta > 0:
            scale = 1.0 - dampening
            return StabilityRule("heavy-ball", lr, heavy_ball_limit(beta), scale,
                                 f"lr * {'(1 - dampening) * ' if dampening else ''}lambda_max < 2(1 + beta) = "
                                 f"{heavy_ball_limit(beta):.4g} (heavy-ball momentum {beta:g})", plain_steps(scale),
                                 beta)
        return StabilityRule("gd", lr, 2.0, 1.0, "lr * lambda_max < 2 (gradient descent)", plain_steps(1.0))
    why = "has no state yet" if not inner.state else "is not modelled"  # Adam before its first step; Rprop
    return StabilityRule("gd", lr, 2.0, 1.0, f"lr * lambda_max < 2 (plain gradient descent's rule: {kind} {why})",
                         plain_steps(1.0), unmodelled=kind if inner.state else None)


def stability_operator(rule: StabilityRule, op: Any) -> Any:
    """The operator whose largest eigenvalue is the rule's sharpness up to ``lr · scale``: the
    Hessian operator ``op`` itself for a plain rule, ``S^{1/2} H S^{1/2}`` (same spectrum as S·H,
    symmetric, so Lanczos applies) for a preconditioned one, S the per-coordinate steps."""
    if not rule.preconditioned:
        return op
    return _Preconditioned(op, op.flatten(rule.steps))


def sharpness_of(rule: StabilityRule, top_eigenvalue: float) -> float:
    """The rule's sharpness from the top eigenvalue of :func:`stability_operator`: ``lr · scale · λ``
    for a plain rule, ``λ`` itself for a preconditioned one (S already holds the rate)."""
    return float(top_eigenvalue) if rule.preconditioned else rule.lr * rule.scale * float(top_eigenvalue)


class _Preconditioned:
    """``S^{1/2} H S^{1/2}`` for a per-coordinate step vector S: symmetric, same spectrum as S·H."""

    def __init__(self, op: Any, steps: torch.Tensor) -> None:
        self.op = op
        self.root = steps.to(op.device, op.dtype).sqrt()
        self.shape = op.shape
        self.dtype, self.device = op.dtype, op.device

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        root = self.root if v.ndim == 1 else self.root[:, None]
        return root * (self.op @ (root * v))


def sharpness(rule: StabilityRule, op: Any, *, lambda_max: float | None = None, tol: float = 1e-2,
              max_matvecs: int = 200, seed: int = 0,
              stop: Callable[[], bool] | None = None) -> tuple[float, int, bool]:
    """(sharpness, Hessian-vector products spent, converged) of ``rule`` on the Hessian operator ``op``.

    A plain rule multiplies ``lambda_max`` (when the caller already has it, no product is
    spent); otherwise Lanczos runs on :func:`stability_operator` (``S^{1/2} H S^{1/2}`` for a
    preconditioned rule, S its per-coordinate steps) to relative residual ``tol`` (the sharpness
    is compared with a limit to two digits, not more). ``stop()``, asked after each product
    until then, ends it early (a budget spent): the value is then the Ritz value as it stands,
    a Rayleigh quotient, so a lower bound of the sharpness, and ``converged`` is ``False``.
    """
    if not rule.preconditioned and lambda_max is not None:
        return sharpness_of(rule, lambda_max), 0, True
    pairs = lanczos(stability_operator(rule, op), k=1, which="LA", tol=tol, max_iter=max_matvecs, seed=seed,
                    stop=None if stop is None else lambda values, residuals: stop())
    return sharpness_of(rule, pairs.values[0]), pairs.n_matvecs, bool(pairs.converged)
