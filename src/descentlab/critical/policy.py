"""What the monitor does after a diagnosis: the remedy policy.

By default only a saddle is acted on: the monitor steps out of it along the most negative
eigenvector (``DiagnosisOptions.escape``), unless the optimizer's weight decay holds the run
there (the step would be pulled back: the remedy says to lower the decay); every other verdict
leaves the run as it is and is only reported. With ``apply_remedy`` the remedy trials' winner
(the best trial that lowered the loss, by orders of magnitude of loss per second) is continued with instead:
its escape step, if it has one, is made by the monitor, and its change to the model, the
optimizer, the rate or the batches is *requested* from the training loop
(:class:`~descentlab.engine.Control`), which makes it with
:func:`~descentlab.engine.apply_change`. A change to the model's modules (a swapped activation,
standardized inputs) is requested only from a loop that says it takes one
(``LoopState.changes_modules``: ``train()`` does); elsewhere it needs the user's own code, the
stall says so, and the best remedy the loop can take is continued with. A verdict whose remedy
no trial can measure (:data:`~descentlab.critical.remedies.IMPOSED`: a loop that never zeroes
its gradients, which every trial's loop does) gets that remedy requested as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from descentlab.critical.options import DiagnosisOptions
from descentlab.critical.remedies import IMPOSED, Remedy
from descentlab.critical.stall import Stall
from descentlab.critical.verdicts import held_by_decay

__all__ = ["Action", "decide_action"]


@dataclass(frozen=True)
class Action:
    """What to do after a diagnosis.

    Attributes:
        escape: step along the most negative eigenvector now.
        remedy: the remedy to continue with (its change is requested from the loop), or ``None``.
        skipped: the trials' winner when the loop cannot take it (it changes the model's modules).
    """

    escape: bool
    remedy: Remedy | None = None
    skipped: str | None = None


def decide_action(stall: Stall, options: DiagnosisOptions, *, changes_modules: bool = False) -> Action:
    """The action the policy of the module docstring takes at ``stall``. A loop that cannot take
    changes to the model's modules (``changes_modules=False``: a swapped activation, an input
    transform, which a ``state_dict`` does not record) continues with the best trial it can
    take that lowered the loss; the winner it could not take is named in ``skipped``."""
    if options.apply_remedy and stall.verdict in IMPOSED:  # no trial can measure it: made as it is
        return Action(escape=False, remedy=IMPOSED[stall.verdict])
    result = stall.trial_result
    if options.apply_remedy and result is not None and result.winner is not None:
        takes = [result.get(name) for name in result.ranking]
        takes = [t for t in takes if t.decrease > 0 and (changes_modules or not t.remedy.change.changes_modules)]
        skipped = result.winner if not takes or takes[0].remedy.name != result.winner else None
        if takes:
            remedy = takes[0].remedy
            return Action(escape=remedy.escape and stall.point is not None, remedy=remedy, skipped=skipped)
        return Action(escape=_escapes(stall, options), skipped=skipped)
    return Action(escape=_escapes(stall, options))


def _escapes(stall: Stall, options: DiagnosisOptions) -> bool:
    """A saddle is escaped by default, unless the optimizer's weight decay holds the run there
    (:func:`~descentlab.critical.verdicts.held_by_decay`: the step would be pulled back)."""
    return (options.escape and stall.verdict == "saddle" and stall.point is not None
            and not held_by_decay(stall.evidence or {}))
