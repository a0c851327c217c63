"""One way to run training steps, and the protocol between a loop and its callbacks.

``callbacks``: :class:`~descentlab.engine.callbacks.Callback` (events), :class:`LoopState`
(the loop's live objects), :class:`Control` (a callback's requests, applied by the loop in
one call); ``changes``: a change to a run as data (:class:`~descentlab.engine.changes.Change`)
and :func:`~descentlab.engine.changes.apply_change`, the one function that makes it, its
rate a torch scheduler (:class:`~descentlab.engine.changes.RemedyLR`); ``steps``: the one
training loop, :func:`~descentlab.engine.steps.run_steps`, with hooks; ``stack``: K models as
one vmapped :class:`~descentlab.engine.stack.Stack`; ``timing``: the one step timer
(:func:`~descentlab.engine.timing.fastest`, :func:`~descentlab.engine.timing.seconds_per_step`).
"""

from descentlab.engine.callbacks import Callback, Control, LoopState, Request
from descentlab.engine.changes import Applied, Change, RemedyLR, apply_change
from descentlab.engine.stack import Stack, unstackable_reason
from descentlab.engine.steps import Joint, Outcome, StepInfo, run_steps
from descentlab.engine.timing import fastest, seconds_per_step

__all__ = ["Callback", "Control", "LoopState", "Request", "Applied", "Change", "RemedyLR", "apply_change",
           "Stack", "unstackable_reason", "Joint", "Outcome", "StepInfo", "run_steps", "fastest", "seconds_per_step"]
