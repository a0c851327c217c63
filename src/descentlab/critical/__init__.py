"""Critical points and stalls: classify a point from the Hessian's spectrum, escape a saddle,
find a nearby critical point by Newton's method, watch a training loop for plateaus and say
why it stopped (:class:`StallMonitor`)."""

from descentlab.critical.classify import CriticalPoint, classify
from descentlab.critical.escape import Escape, escape
from descentlab.critical.monitor import StallMonitor
from descentlab.critical.newton import L2Objective, NewtonSearch, newton_to_critical
from descentlab.critical.options import DiagnosisOptions
from descentlab.critical.stall import Stall
from descentlab.critical.verdicts import VERDICTS

__all__ = ["CriticalPoint", "classify", "DiagnosisOptions", "Escape", "escape", "L2Objective", "NewtonSearch",
           "newton_to_critical", "Stall", "StallMonitor", "VERDICTS"]
