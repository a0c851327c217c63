"""Whether a model's Hessian-vector products are its Hessian's.

Double backward through a module whose backward is not itself differentiated (a custom
``torch.autograd.Function`` under ``@once_differentiable``, a backward computed outside autograd)
gives products that silently leave out every second-order term through it, and raises nothing: a
digits ReLU MLP whose ReLU is such a Function gives ‖Hv‖ 3.96 where its plain twin gives 5.23, and
its plateau waited for a Lanczos estimate that never settled ("skipped (budget)" with the budget
unspent). Before the first curvature of a run the products are checked against what they claim to
be, the change of the gradient: the central difference (∇L(θ + εv) - ∇L(θ - εv)) / 2ε along a
random unit v on a float64 copy of the model and of a few samples, ε a millionth of ‖θ‖ (float64's
rounding then ~1e-10 of the product), at a point a thousandth of ‖θ‖ off θ in a random direction:
at θ itself a ReLU may sit exactly on its kink (the shrunken ResNet of ``bench/scale.py`` at its
start, a zero-padded border through convolutions without bias into batch-norm at its initial
statistics: its gradient jumps there, and the difference read 1 off at every ε), and a thousandth
away no ReLU on these samples moves across its kink within ±ε. A model whose products are right
agrees to ~1e-8; the once-differentiable ReLU MLP is 0.72 off.

torch's own ``weight_norm`` is such a module: its fused kernel's double backward reads the saved
norms of the weights as constants, so the second derivatives along the direction parameter leave
out how the norm moves with it (97 % off on a small layer, against the same normalisation written
``v * (g / v.norm(dim=1, keepdim=True))``; :func:`weight_normed` names its modules).

Products that are off have a second cause: a model that is no one function of its parameters (it
draws random numbers outside torch's generator, which the data layer seeds alike at every
evaluation: Python's ``random``, NumPy's). Its gradient read twice at one point differs
(:func:`gradient_unsteady`), which tells the two apart.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from descentlab.curvature import HessianOperator

__all__ = ["check_products", "product_error", "gradient_unsteady", "weight_normed", "PRODUCTS_AGREE", "CHECK_SAMPLES",
           "CHECK_MOST_PARAMS"]

#: Products this far from the gradient's change (relative) are not the Hessian's.
PRODUCTS_AGREE = 0.01
#: The samples the check reads (the first of the tracked ones): the question is the model's code.
CHECK_SAMPLES = 2
#: Models with more parameters than this are not checked: their float64 copy would hold 8 bytes
#: each (80 MB here) beside the model.
CHECK_MOST_PARAMS = 10_000_000


def _float64_operator(model: nn.Module, loss_fn: Any, data: Any) -> HessianOperator | None:
    """The Hessian of ``loss_fn`` over ``data`` on a float64 copy of ``model`` in eval mode; ``None``
    where the model has more than :data:`CHECK_MOST_PARAMS` parameters or cannot be copied."""
    if sum(p.numel() for p in model.parameters()) > CHECK_MOST_PARAMS:
        return None
    try:
        model64 = copy.deepcopy(model).double()
    except (RuntimeError, TypeError):  # a module that cannot be copied: nothing to check against
        return None
    return HessianOperator(model64, loss_fn, data, eval_mode=True)


def check_products(model: nn.Module, loss_fn: Any, data: Any, *, seed: int = 0) -> tuple[float | None, float | None]:
    """``(error, unsteady)``: :func:`product_error`, and where it exceeds :data:`PRODUCTS_AGREE`,
    :func:`gradient_unsteady` (which tells the two causes apart), on one float64 copy of ``model``.
    An error past :data:`PRODUCTS_AGREE` is measured again at a second point and direction (seed
    ``seed + 1``), and the smaller kept: products that leave out second derivatives are off at every
    point, while a ReLU that crosses its kink within ±ε of the one point read throws the central
    difference off there alone (the ResNet of ``bench/scale.py`` at batch 4: 1 off at step 230 of
    its run, 5e-9 at the second point; 1e-8 at both, every 10 steps from 200 to 420)."""
    op = _float64_operator(model, loss_fn, data)
    if op is None:
        return None, None
    error = _error_of(op, seed)
    if error is not None and error > PRODUCTS_AGREE:
        again = _error_of(op, seed + 1)
        error = error if again is None else min(error, again)
    return error, (_unsteadiness_of(op) if error is not None and error > PRODUCTS_AGREE else None)


def gradient_unsteady(model: nn.Module, loss_fn: Any, data: Any) -> float | None:
    """How far two reads of the gradient of ``loss_fn`` over ``data`` at the same point differ
    (relative, on the float64 copy :func:`product_error` reads): ~1e-16 for a model that is one
    function of its parameters. ``None`` where it cannot be read (as :func:`product_error`)."""
    op = _float64_operator(model, loss_fn, data)
    return None if op is None else _unsteadiness_of(op)


def product_error(model: nn.Module, loss_fn: Any, data: Any, *, seed: int = 0) -> float | None:
    """The relative difference between a Hessian-vector product of ``loss_fn`` over ``data`` and
    the central difference of its gradient along the same vector, on a float64 copy of ``model``
    in eval mode (the model itself is only read). ``None`` where neither is measurably nonzero (a
    loss flat along the vector), the copy cannot be made or the model has more than
    :data:`CHECK_MOST_PARAMS` parameters."""
    op = _float64_operator(model, loss_fn, data)
    return None if op is None else _error_of(op, seed)


def _unsteadiness_of(op: HessianOperator) -> float | None:
    first, again = op.loss_and_gradient()[1], op.at(op.point).loss_and_gradient()[1]
    scale = max(float(first.norm()), float(again.norm()))
    return float((first - again).norm()) / scale if scale > 0 else None


def _error_of(op: HessianOperator, seed: int) -> float | None:
    generator = torch.Generator().manual_seed(seed)
    v, away = (torch.randn(op.n_params, generator=generator, dtype=torch.float64) for _ in range(2))
    v, away = (v / v.norm()).to(op.device), (away / away.norm()).to(op.device)
    size = float(op.point.norm())
    size = size if size > 0 else 1.0  # relative: near the origin the curvature moves on θ's own scale
    # off θ by a thousandth: a ReLU whose input is exactly 0 there (a zero-padded border through a
    # layer without bias, batch-norm at its initial statistics) has a gradient that jumps at θ itself
    op = op.at(op.point + 1e-3 * size * away)
    eps = 1e-6 * size
    _, ahead = op.at(op.point + eps * v).loss_and_gradient()
    _, behind = op.at(op.point - eps * v).loss_and_gradient()
    change = (ahead - behind) / (2 * eps)
    product = op @ v
    scale = max(float(change.norm()), float(product.norm()))
    if not scale > 1e-12:
        return None
    return float((product - change).norm()) / scale


def weight_normed(model: nn.Module) -> list[str]:
    """The modules of ``model`` under torch's ``weight_norm``, new style (a parametrization) or old
    (its ``weight_g`` and ``weight_v``)."""
    found = []
    for name, module in model.named_modules():
        parametrizations = getattr(module, "parametrizations", None)
        new_style = parametrizations is not None and any(
            type(p).__name__ == "_WeightNorm" for plist in parametrizations.values() for p in plist)
        if new_style or (hasattr(module, "weight_g") and hasattr(module, "weight_v")):
            found.append(name)
    return found
