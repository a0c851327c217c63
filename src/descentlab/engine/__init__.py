"""One way to run training steps, and the protocol between a loop and its callbacks.

``callbacks``: :class:`~descentlab.engine.callbacks.Callback` (events), :class:`LoopState`
(the loop's live objects), :class:`Control` (a callback's requests, applied by the loop in
one call); ``changes``: a change to a run as data (:class:`~descentlab.engine.changes.Change`)
and :func:`~descentlab.engine.changes.apply_change`, the one function that makes it, its
rate a torch scheduler (:class:`~descentlab.engine.changes.RemedyLR`).
"""

from descentlab.engine.callbacks import Callback, Control, LoopState, Request
from descentlab.engine.changes import Applied, Change, RemedyLR, apply_change

__all__ = ["Callback", "Control", "LoopState", "Request", "Applied", "Change", "RemedyLR", "apply_change"]
