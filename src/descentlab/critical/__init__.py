"""Critical points: classify a point from the Hessian's spectrum, escape a saddle, and watch a
training loop for plateaus (:class:`StallMonitor`)."""

from descentlab.critical.classify import CriticalPoint, classify
from descentlab.critical.escape import Escape, escape
from descentlab.critical.monitor import Stall, StallMonitor

__all__ = ["CriticalPoint", "classify", "Escape", "escape", "Stall", "StallMonitor"]
