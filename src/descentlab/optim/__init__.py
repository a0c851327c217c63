"""Optimizers: torch.optim's classes where torch has the algorithm, ours where it does not.

Use :func:`make_optimizer` to get any of them by name, e.g. ``make_optimizer("adam", model.parameters(), lr=1e-3)``
or a wrapped one, ``make_optimizer("lookahead:adam", ...)``.
"""

from descentlab.optim.registry import OPTIMIZERS, OptimizerSpec, make_optimizer, parse_name

__all__ = ["OPTIMIZERS", "OptimizerSpec", "make_optimizer", "parse_name"]
