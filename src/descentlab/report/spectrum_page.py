"""The report page of a ``spectrum`` run: the Hessian's eigenvalues, its density, the verdict.

Reads only the run directory: ``config.json`` and ``spectrum.json`` (extreme eigenvalues, every
eigenvalue when the Hessian was formed, or an estimated density on a grid; the split of
lambda_min into its Gauss-Newton and residual parts; each parameter group's block with
``--per-layer``).
"""

from __future__ import annotations

import json

from descentlab.rundir import RunDir
from descentlab.report.html import Page
from descentlab.report.spectrum_plot import plot_layer_spectra

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
    split = result.get("split")
    if split:
        page.heading("Where the negative curvature lives")
        page.finding(f"Along the eigenvector u of lambda_min = {split['eigenvalue']:.4g}: u'Gu = {split['ggn']:.4g} "
                     f"(Gauss-Newton, never negative for a loss convex in the output) and u'Ru = "
                     f"{split['residual']:.4g} (the residual, weighted by the output gradients): the residual "
                     f"carries {100 * split['residual_share']:.0f}% of lambda_min.")
    layers = result.get("per_layer")
    if layers:
        page.heading("Per layer: each parameter group's Hessian block")
        page.table([{"group": r["group"], "parameters": r["n_params"], "lambda_min": r["min_eigenvalue"],
                     "lambda_max": r["max_eigenvalue"], "minimum ratio": r["minimum_ratio"],
                     "method": "exact" if r["exact"] else f"estimated +- {r['minimum_ratio_std_error']:.2g}"}
                    for r in layers])
        page.figure(plot_layer_spectra(layers), "Each group's block: its extreme eigenvalues (a negative one "
                    "proves a saddle: the block's spectrum lies inside the full Hessian's) and its minimum ratio.",
                    save_to=run.file("layers.png"))
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
    # outside the axes, right: the extreme eigenvalues' lines sit at both edges inside them
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig
