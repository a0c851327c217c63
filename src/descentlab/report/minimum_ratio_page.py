"""The report page of a ``minimum-ratio`` study (Dauphin et al. 2014; the lecture's evidence).

Reads only the run directory: ``config.json``, ``summary.json`` and ``points.csv`` (one row
per searched point). Draws the training loss against the minimum ratio, a histogram of the
ratios, the count of strict minima, and states the finding in one sentence computed from
the rows, whatever it is.
"""

from __future__ import annotations

import math

from descentlab.rundir import RunDir
from descentlab.report.html import Page

__all__ = ["build", "finding"]

_STYLE = {  # status -> (marker, colour, label)
    "critical": ("o", "#2f7bd8", "critical point (||g|| <= grad_tol)"),
    "gradient-flat": ("^", "#e39b22", "gradient-flat (||Hg||/||g|| small, g not 0)"),
    "not converged": ("x", "#9a9a9a", "not converged"),
}


def _rows(run: RunDir) -> list[dict]:
    rows = []
    for r in run.read_csv("points.csv"):
        row = dict(r)
        for key in ("loss", "trained_loss", "grad_norm", "gradient_flat", "minimum_ratio", "min_eigenvalue",
                    "max_eigenvalue", "lr"):
            if key in row and row[key] != "":
                row[key] = float(row[key])
        for key in ("index", "n_positive", "n_negative", "n_zero", "newton_steps"):
            if key in row and row[key] != "":
                row[key] = int(row[key])
        signed = row["n_positive"] + row["n_negative"]
        # the ratio among eigenvalues that are not zero: symmetries (softmax shifts, dead units)
        # add exact zeros that the lecture's ratio counts as "not positive"
        row["ratio_nonzero"] = row["n_positive"] / signed if signed else math.nan
        rows.append(row)
    return rows


def _spearman(x: list[float], y: list[float]) -> float:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:  # a constant has no rank correlation
        return math.nan
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return float(rho)


def finding(rows: list[dict], grad_tol: float) -> str:
    """The study's result in one sentence (counts, strict minima, and the loss-ratio trend)."""
    n = len(rows)
    critical = [r for r in rows if r["status"] == "critical"]
    flat = sum(r["status"] == "gradient-flat" for r in rows)
    strict = sum(r["minimum_ratio"] == 1.0 for r in critical)
    ratios = [r["minimum_ratio"] for r in rows]
    rho = _spearman([r["loss"] for r in rows], ratios)
    if math.isnan(rho):
        trend = "loss and ratio cannot be related (too few points, or one of them constant)"
    else:
        direction = "falls" if rho < 0 else "rises"
        trend = f"the minimum ratio {direction} as the loss grows (Spearman rho = {rho:.2f})"
    return (f"Of {n} searched points, {len(critical)} reached a critical point (||g|| <= {grad_tol:g}), {flat} "
            f"stopped in gradient-flat regions and {n - len(critical) - flat} did not converge; {strict} "
            f"{'was a strict minimum' if strict == 1 else 'were strict minima'} (ratio 1), the ratios span "
            f"{min(ratios):.3f} to {max(ratios):.3f}, and {trend}.")


def _data_used(config: dict) -> str:
    samples = config.get("samples")
    if samples:
        return f"a seeded subset of at most {samples} training points (training, search and spectra alike)"
    return "the whole training set"


def build(run: RunDir) -> Page:
    """The minimum-ratio page of ``run``."""
    import matplotlib.pyplot as plt

    config = run.config
    summary = run.read_json("summary.json")
    rows = _rows(run)
    page = Page(f"minimum-ratio study: {summary.get('workload', '')}")
    page.paragraph(
        f"{len(rows)} networks of {summary.get('n_params')} parameters were trained on "
        f"{_data_used(config)}, then each was driven toward a "
        "critical point by minimising ||grad L||^2 (Adam on Hessian-vector products, then Levenberg-Marquardt "
        "steps with each network's exact Hessian). At each point the exact Hessian's eigenvalues give the minimum ratio, "
        "the fraction of positive eigenvalues (1 = strict local minimum).")
    page.finding(finding(rows, float(config.get("grad_tol", summary.get("grad_tol", 0.0)))))

    fig, ax = plt.subplots(figsize=(7, 4.6))
    for status, (marker, colour, label) in _STYLE.items():
        chosen = [r for r in rows if r["status"] == status]
        if chosen:
            ax.scatter([r["minimum_ratio"] for r in chosen], [r["loss"] for r in chosen], marker=marker,
                       color=colour, s=28, label=f"{label}: {len(chosen)}")
    ax.set_xlabel("minimum ratio (fraction of positive Hessian eigenvalues)")
    ax.set_ylabel("training loss at the point")
    ax.set_xlim(-0.02, 1.02)
    ax.axvline(1.0, color="#444", lw=0.8, ls=":")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("training loss against minimum ratio")
    page.heading("Loss against minimum ratio")
    page.figure(fig, "Each marker is one network's searched point; ratio 1 (dotted line) would be a strict minimum.",
                save_to=run.file("scatter.png"))

    fig, ax = plt.subplots(figsize=(7, 3.6))
    bins = [i / 20 for i in range(21)]
    stacks = [[r["minimum_ratio"] for r in rows if r["status"] == s] for s in _STYLE]
    ax.hist(stacks, bins=bins, stacked=True, color=[c for _, c, _ in _STYLE.values()],
            label=list(_STYLE), edgecolor="white")
    ax.set_xlabel("minimum ratio")
    ax.set_ylabel("points")
    ax.legend(fontsize=8)
    ax.set_title("histogram of minimum ratios")
    page.heading("Histogram of minimum ratios")
    page.figure(fig, "Stacked by status.", save_to=run.file("histogram.png"))

    page.heading("How many points were strict minima")
    counts = [{"status": s, "points": sum(r["status"] == s for r in rows)} for s in _STYLE]
    counts.append({"status": "critical with ratio 1 (strict minima)",
                   "points": sum(r["status"] == "critical" and r["minimum_ratio"] == 1.0 for r in rows)})
    counts.append({"status": "critical and degenerate (zero eigenvalues)",
                   "points": sum(r["status"] == "critical" and r.get("degenerate") == "True" for r in rows)})
    page.table(counts)
    kinds = sorted({r["kind"] for r in rows if r["status"] == "critical"})
    if kinds:
        page.paragraph("Kinds of the critical points (second-order test, descentlab.critical.rules): " + ", ".join(
            f"{k}: {sum(r['kind'] == k and r['status'] == 'critical' for r in rows)}" for k in kinds) + ".")

    page.paragraph("ratio_nonzero is n_positive / (n_positive + n_negative): the same ratio with the zero "
                   f"eigenvalues (within eig_tol = {config.get('eig_tol')}, relative) left out.")
    page.heading("Every point")
    columns = ["index", "lr", "trained_loss", "loss", "grad_norm", "gradient_flat", "status", "kind",
               "minimum_ratio", "ratio_nonzero", "n_positive", "n_negative", "n_zero", "min_eigenvalue", "max_eigenvalue"]
    page.table(rows, [c for c in columns if c in rows[0]] if rows else columns)
    page.heading("Configuration")
    page.code("\n".join(f"{key}: {value}" for key, value in sorted(config.items())))
    return page
