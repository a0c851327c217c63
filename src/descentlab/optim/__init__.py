"""Optimizers: torch.optim's classes where torch has the algorithm, ours where it does not.

Use :func:`make_optimizer` to get any of them by name, e.g. ``make_optimizer("adam", model.parameters(), lr=1e-3)``
or a wrapped one, ``make_optimizer("lookahead:adam", ...)``.
"""

from descentlab.optim.clipping import GradientClipping
from descentlab.optim.fresh_gradients import FreshGradients
from descentlab.optim.lookahead import Lookahead
from descentlab.optim.noise import GradientNoise
from descentlab.optim.registry import OPTIMIZERS, WRAPPERS, OptimizerSpec, is_elementwise, make_optimizer, parse_name
from descentlab.optim.sgdw import SGDW
from descentlab.optim.swats import SWATS, SwatsPhase
from descentlab.optim.wrapper import clear_state

__all__ = ["OPTIMIZERS", "WRAPPERS", "OptimizerSpec", "make_optimizer", "parse_name", "is_elementwise",
           "SGDW", "SWATS", "SwatsPhase", "Lookahead", "GradientNoise", "GradientClipping", "FreshGradients",
           "clear_state"]
