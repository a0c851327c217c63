"""The report page of a ``spectrum`` run: the Hessian's eigenvalues, its density, the verdict.

Reads only the run directory: ``config.json`` and ``spectrum.json`` (extreme eigenvalues, every
eigenvalue when the Hessian was formed, or an estimated density on a grid).
"""

from __future__ import annotations

import json

from descentlab.rundir import RunDir
from descentlab.report.html import Page

__all__ = ["build"]


def build(run: RunDir) -> Page:
    """The spectrum page of ``run``."""
    config = run.config
    result = run.read_json("spectrum.json")
    source = config.get("workload_description") or str(config.get("workload"))
    page = Page(f"spectrum: {source}")
    kind = result["kind"] + (" (degenerate)" if result["degenerate"] else "")
    page.finding(f"{kind}: lambda_min {result['min_eigenvalue']:.4g}, lambda_max {result['max_eigenvalue']:.4g}, "
                 f"gradient norm {result['grad_norm']:.3g} at loss {result['loss']:.5g}.")
    page.table([{"quantity": k, "value": result[k]} for k in
                ("n_params", "loss", "grad_norm", "min_eigenvalue", "max_eigenvalue", "minimum_ratio", "kind", "degenerate")])
    page.figure(_figure(result), "Hessian spectrum: every eigenvalue (histogram) when the Hessian was formed, else "
                "the estimated density; vertical lines: the extreme eigenvalues found at both ends.",
                save_to=run.file("spectrum.png"))
    page.heading("Configuration")
    page.code(json.dumps(config, indent=2, sort_keys=True))
    return page


def _figure(result: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 3.8))
    if result.get("spectrum"):
        values = np.asarray(result["spectrum"])
        ax.hist(values, bins=min(80, max(10, len(values) // 8)), color="#9bb7e0", edgecolor="#5a7fb8", log=True,
                label=f"all {len(values)} eigenvalues")
        ax.set_ylabel("count (log scale)")
    elif result.get("density"):
        ax.plot(result["density"]["grid"], result["density"]["density"], color="#2f7bd8", label="estimated density")
        ax.set_ylabel("density")
    extremes = np.asarray(result["extremes"])
    if extremes.size:
        ax.vlines(extremes, *ax.get_ylim(), colors=np.where(extremes < 0, "#d8542f", "#2a9d4b"), lw=1.2,
                  label="extreme eigenvalues")
    ax.axvline(0.0, color="#333", lw=0.8)
    ax.set_xlabel("Hessian eigenvalue")
    ax.legend(loc="best", fontsize=8)
    return fig
