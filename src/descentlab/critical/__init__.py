"""Critical points and stalls: classify a point from the Hessian's spectrum, escape a saddle,
watch a training loop for plateaus and say why it stopped (:class:`StallMonitor`)."""

from descentlab.critical.classify import CriticalPoint, classify
from descentlab.critical.escape import Escape, escape
from descentlab.critical.monitor import StallMonitor
from descentlab.critical.stall import Stall
from descentlab.critical.verdicts import VERDICTS

__all__ = ["CriticalPoint", "classify", "Escape", "escape", "Stall", "StallMonitor", "VERDICTS"]
