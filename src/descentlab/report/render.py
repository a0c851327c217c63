"""Render any run directory's ``report.html``, choosing the page by the run's ``kind``.

Each kind's page lives in its own module under :mod:`descentlab.report` and exposes
``build(run: RunDir) -> Page``; it reads only the run directory (data files it wrote) and
draws its figures from them, so ``descentlab report DIR`` can always re-render a run.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from descentlab.errors import UserInputError
from descentlab.rundir import RunDir

__all__ = ["render", "PAGES"]

# kind (config.json "kind") -> module under descentlab.report that builds its page
PAGES: dict[str, str] = {
    "diagnose": "diagnose_page",
    "spectrum": "spectrum_page",
    "landscape": "landscape_page",
    "minimum-ratio": "minimum_ratio_page",
    "surface": "surface_page",
    "compare": "compare_page",
    "batch-size": "batch_size_page",
    "normalization": "normalization_page",
}

REPORT = "report.html"


def render(path: str | os.PathLike | RunDir) -> Path:
    """(Re)build ``report.html`` of a run directory and return its path."""
    run = path if isinstance(path, RunDir) else RunDir.open(path)
    kind = run.kind
    if kind not in PAGES:
        known = ", ".join(sorted(PAGES)) or "none"
        raise UserInputError(f"no report page for run kind {kind!r} (known kinds: {known})")
    module = importlib.import_module(f"descentlab.report.{PAGES[kind]}")
    try:
        page = module.build(run)
    except FileNotFoundError as error:  # an interrupted or hand-edited run directory
        raise UserInputError(f"cannot render {run.path}: {Path(error.filename or '').name or error} is missing "
                             f"(an incomplete {kind} run?)") from None
    except json.JSONDecodeError as error:
        raise UserInputError(f"cannot render {run.path}: a JSON file in it is corrupt ({error})") from None
    return page.write(run.file(REPORT))
