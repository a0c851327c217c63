"""What the monitor does after a diagnosis: the remedy policy.

By default only a saddle is acted on: the monitor steps out of it along the most negative
eigenvector (``DiagnosisOptions.escape``); every other verdict leaves the run as it is and
is only reported. With ``apply_remedy`` the remedy trials' winner (the best trial that
lowered the loss, by loss decrease per second) is continued with instead: its escape step,
if it has one, is made by the monitor, and its change to the optimizer, the rate or the
batches is *requested* from the training loop (:class:`~descentlab.engine.Control`), which
makes it with :func:`~descentlab.engine.apply_change`.
"""

from __future__ import annotations

from dataclasses import dataclass

from descentlab.critical.options import DiagnosisOptions
from descentlab.critical.remedies import Remedy
from descentlab.critical.stall import Stall

__all__ = ["Action", "decide_action"]


@dataclass(frozen=True)
class Action:
    """What to do after a diagnosis.

    Attributes:
        escape: step along the most negative eigenvector now.
        remedy: the remedy to continue with (its change is requested from the loop), or ``None``.
    """

    escape: bool
    remedy: Remedy | None = None


def decide_action(stall: Stall, options: DiagnosisOptions) -> Action:
    """The action the policy of the module docstring takes at ``stall``."""
    result = stall.trial_result
    if options.apply_remedy and result is not None and result.winner is not None:
        remedy = result.get(result.winner).remedy
        return Action(escape=remedy.escape and stall.point is not None, remedy=remedy)
    return Action(escape=options.escape and stall.verdict == "saddle" and stall.point is not None)
