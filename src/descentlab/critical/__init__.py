"""Critical points: classify a point from the Hessian's spectrum, and escape a saddle."""

from descentlab.critical.classify import CriticalPoint, classify  # noqa: E402
from descentlab.critical.escape import Escape, escape  # noqa: E402

from descentlab.critical.monitor import Stall, StallMonitor  # noqa: E402  (training-loop callback)
