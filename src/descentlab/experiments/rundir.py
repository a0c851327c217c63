"""Moved to :mod:`descentlab.rundir` (a low-level helper, so ``report/`` reads run directories
without importing ``experiments/``); kept so existing imports keep working."""

from descentlab.rundir import CONFIG, RunDir, default_run_path, staged_run

__all__ = ["RunDir", "staged_run", "default_run_path", "CONFIG"]
