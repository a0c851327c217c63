"""The stall monitor's defaults, one copy for the Python API and the CLI.

Kept free of torch so ``descentlab diagnose --help`` can show them without loading it.
"""

__all__ = ["DEFAULT_BUDGET", "DEFAULT_BUDGET_SECONDS", "SAMPLE_SIZE", "TRIAL_STEPS"]

#: The monitor may spend this fraction of the training time ...
DEFAULT_BUDGET = 0.25
#: ... or this many seconds in all, whichever is more (a short run still gets its first diagnosis).
DEFAULT_BUDGET_SECONDS = 5.0
#: Samples of the training data the monitor tracks the loss on and measures curvature and noise with.
SAMPLE_SIZE = 512
#: Steps of every remedy trial at a stall (equal lengths, so their loss decreases compare).
TRIAL_STEPS = 50
