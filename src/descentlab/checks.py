"""The argument checks every layer uses (torch.optim's style of message).

Each check raises ``ValueError`` whose message starts with the argument's name and says what
was expected, so a caller (or the CLI) can tell at once which argument is wrong:
``ValueError: lr must be a number in [0, inf), got -1.0``. Booleans are refused where a
number is expected (``True`` is an ``int`` to Python, never a learning rate to a person).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["check_number", "check_int", "check_choice"]


def check_number(name: str, value: Any, *, low: float = 0.0, high: float = math.inf,
                 low_open: bool = False, high_open: bool = True) -> float:
    """``value`` as a float, or ``ValueError`` naming ``name`` unless it lies in the interval
    from ``low`` to ``high`` (closed at ``low`` and open at ``high`` by default; NaN never lies in it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if math.isnan(value) or below or above:
        raise ValueError(f"{name} must be a number in {_interval(low, high, low_open, high_open)}, got {value!r}")
    return value


def check_int(name: str, value: Any, *, low: int = 1, high: float = math.inf) -> int:
    """``value`` as an int in ``[low, high]``, or ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        where = f">= {low}" if high == math.inf else f"in [{low}, {high:g}]"
        raise ValueError(f"{name} must be an integer {where}, got {value!r}")
    return int(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, or ``ValueError`` naming ``name`` and listing them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
