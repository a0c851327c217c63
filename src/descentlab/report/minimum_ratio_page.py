"""The report page of a ``minimum-ratio`` study (Dauphin et al. 2014; the lecture's evidence).

Reads only the run directory: ``config.json``, ``summary.json`` and ``points.csv`` (one row
per searched point). Draws the training loss of the critical points against their minimum
ratio (points that are not critical in a panel apart), a histogram of the critical points'
ratios, the count of strict minima, and states the finding in one sentence computed from the
rows, whatever it is, beside the lecture's claim.
"""

from __future__ import annotations

import math

from descentlab.rundir import RunDir
from descentlab.report.html import Page
from descentlab.report.stats import spearman

__all__ = ["build", "finding"]

_KINDS = {  # kind of a critical point -> (marker, colour, label)
    "local_min": ("o", "#2ca02c", "local minimum"),
    "saddle": ("X", "#ff7f0e", "saddle"),
    "local_max": ("^", "#d62728", "local maximum"),
    "flat": ("s", "#7f7f7f", "flat"),
}
_NOT_CRITICAL = {  # status -> (marker, colour, label)
    "gradient-flat": ("^", "#e39b22", "gradient-flat (||Hg||/||g|| small, g not 0)"),
    "not converged": ("x", "#9a9a9a", "not converged"),
}


def _rows(run: RunDir) -> list[dict]:
    rows = []
    for r in run.read_csv("points.csv"):
        row = dict(r)
        for key in ("loss", "objective", "start_loss", "grad_norm", "gradient_flat", "minimum_ratio",
                    "min_eigenvalue", "max_eigenvalue", "distance", "lr"):
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


def finding(rows: list[dict], grad_tol: float) -> str:
    """The study's result in one sentence: counts, strict minima, the ratios and their trend with the loss."""
    n = len(rows)
    critical = [r for r in rows if r["status"] == "critical"]
    others = ", ".join(f"{sum(r['status'] == s for r in rows)} {s}" for s in ("gradient-flat", "not converged",
                                                                              "diverged")
                       if any(r["status"] == s for r in rows))
    head = (f"Of {n} searched points, {len(critical)} reached a critical point (||g|| <= {grad_tol:g})"
            + (f" ({others})" if others else ""))
    if not critical:
        return head + "; no critical point, so no finding about minimum ratios."
    strict = sum(r["minimum_ratio"] == 1.0 for r in critical)
    ratios = sorted(r["minimum_ratio"] for r in critical)
    median = ratios[len(ratios) // 2] if len(ratios) % 2 else 0.5 * (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2])
    rho = spearman([r["loss"] for r in critical], [r["minimum_ratio"] for r in critical])
    if math.isnan(rho):
        trend = "loss and ratio cannot be related (too few points, or one of them constant)"
    else:
        direction = "falls" if rho < 0 else "rises"
        trend = f"the ratio {direction} as the loss grows (Spearman rho = {rho:.2f})"
    distances = sorted(r["distance"] for r in critical if "distance" in r and r["distance"] != "")
    near = (f"; median distance from the search's start (where training stopped) {distances[len(distances) // 2]:.3g}"
            if distances else "")
    return (f"{head}; {strict} {'is a strict minimum' if strict == 1 else 'are strict minima'} (ratio 1), "
            f"the critical points' ratios span {ratios[0]:.3f} to {ratios[-1]:.3f} (median {median:.3f}), "
            f"and {trend}{near}.")


def _data_used(config: dict) -> str:
    samples = config.get("samples")
    if samples:
        return f"a seeded subset of at most {samples} training points (training, search and spectra alike)"
    return "the whole training set"


def _scatter(rows: list[dict]):
    import matplotlib.pyplot as plt

    critical = [r for r in rows if r["status"] == "critical"]
    apart = [r for r in rows if r["status"] in _NOT_CRITICAL]
    fig, axes = plt.subplots(1, 2 if apart else 1, figsize=(10.5 if apart else 7, 4.6), squeeze=False,
                             gridspec_kw={"width_ratios": [2, 1]} if apart else None)
    ax = axes[0, 0]
    for kind, (marker, colour, label) in _KINDS.items():
        chosen = [r for r in critical if r["kind"] == kind]
        if chosen:
            ax.scatter([r["minimum_ratio"] for r in chosen], [r["loss"] for r in chosen], marker=marker,
                       color=colour, s=30, label=f"{label}: {len(chosen)}", alpha=0.8)
    ax.set_xlabel("minimum ratio (fraction of positive Hessian eigenvalues)")
    ax.set_ylabel("training loss at the critical point")
    ax.set_xlim(-0.02, 1.02)
    ax.axvline(1.0, color="#444", lw=0.8, ls=":")
    ax.grid(alpha=0.3)
    if critical:
        ax.legend(fontsize=8, loc="best")
    ax.set_title(f"critical points (||g|| <= grad_tol): {len(critical)}")
    if apart:
        side = axes[0, 1]
        for status, (marker, colour, label) in _NOT_CRITICAL.items():
            chosen = [r for r in apart if r["status"] == status]
            if chosen:
                side.scatter([r["minimum_ratio"] for r in chosen], [r["loss"] for r in chosen], marker=marker,
                             color=colour, s=26, label=f"{label}: {len(chosen)}")
        side.set_xlim(-0.02, 1.02)
        side.set_xlabel("minimum ratio")
        side.grid(alpha=0.3)
        side.legend(fontsize=7, loc="best")
        side.set_title("not critical (not part of the finding)", fontsize=9)
    page_caption = ("Each marker is one network's critical point; ratio 1 (dotted line) is a strict minimum. "
                    "Points the search did not bring to ||g|| <= grad_tol are drawn apart, on the right.")
    return fig, page_caption


def build(run: RunDir) -> Page:
    """The minimum-ratio page of ``run``."""
    import matplotlib.pyplot as plt

    config = run.config
    summary = run.read_json("summary.json")
    rows = _rows(run)
    grad_tol = float(config.get("grad_tol", 0.0))
    critical = [r for r in rows if r["status"] == "critical"]
    page = Page(f"minimum-ratio study: {summary.get('workload', '')}")
    model = summary.get("model") or "networks"
    decay = float(config.get("weight_decay") or 0.0)
    page.paragraph(
        f"{len(rows)} networks ({model}, {summary.get('n_params')} parameters) were trained on "
        f"{_data_used(config)}, each with its own seed and learning rate. From where each training stopped, "
        "Newton-type iterations on grad = 0 with the network's exact Hessian (a trust-region Levenberg-Marquardt "
        "method whose step is the Newton step whenever it fits) drove it to a nearby critical point of any kind; "
        "the exact Hessian's eigenvalues there give the minimum ratio, the fraction of positive eigenvalues "
        "(1 = strict local minimum)."
        + (f" The loss is the training loss plus {decay:g}/2 ||theta||^2 (the optimizer's weight decay), which "
           "makes the critical points isolated." if decay else ""))
    page.finding(finding(rows, grad_tol))
    page.paragraph("The lecture's claim: networks trained until the gradient is tiny sit at points whose minimum "
                   "ratio is about 0.5-0.6, and no point is near 1 (true local minima are almost never found). "
                   f"Here {sum(r['minimum_ratio'] >= 0.9 for r in critical)} of {len(critical)} critical points "
                   f"have a ratio of at least 0.9 and {sum(0.5 <= r['minimum_ratio'] <= 0.6 for r in critical)} "
                   "lie between 0.5 and 0.6.")

    fig, caption = _scatter(rows)
    page.heading("Loss against minimum ratio")
    page.figure(fig, caption, save_to=run.file("scatter.png"))

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist([r["minimum_ratio"] for r in critical], bins=[i / 40 for i in range(41)], color="#2f7bd8",
            edgecolor="white")
    ax.set_xlabel("minimum ratio")
    ax.set_ylabel("critical points")
    ax.set_title("histogram of the critical points' minimum ratios")
    page.heading("Histogram of minimum ratios")
    page.figure(fig, "Critical points only.", save_to=run.file("histogram.png"))

    page.heading("How many points were strict minima")
    counts = [{"status": s, "points": sum(r["status"] == s for r in rows)}
              for s in ("critical", *_NOT_CRITICAL, "diverged")]
    counts.append({"status": "critical with ratio 1 (strict minima)",
                   "points": sum(r["minimum_ratio"] == 1.0 for r in critical)})
    counts.append({"status": "critical and degenerate (zero eigenvalues)",
                   "points": sum(r.get("degenerate") == "True" for r in critical)})
    page.table(counts)
    kinds = sorted({r["kind"] for r in critical})
    if kinds:
        page.paragraph("Kinds of the critical points (second-order test, descentlab.critical.rules): " + ", ".join(
            f"{k}: {sum(r['kind'] == k for r in critical)}" for k in kinds) + ".")
    if critical and all("distance" in r for r in critical):  # runs written before distances were kept lack them
        distances = sorted(r["distance"] for r in critical)
        page.paragraph("Distance of the critical points from where training stopped (||theta - theta_trained||): "
                       f"median {distances[len(distances) // 2]:.3g}, largest {distances[-1]:.3g}.")

    page.paragraph("ratio_nonzero is n_positive / (n_positive + n_negative): the same ratio with the zero "
                   f"eigenvalues (within eig_tol = {config.get('eig_tol')}, relative) left out.")
    page.heading("Every point")
    columns = ["index", "lr", "start_loss", "loss", "objective", "grad_norm", "gradient_flat", "status", "kind",
               "minimum_ratio", "ratio_nonzero", "n_positive", "n_negative", "n_zero", "min_eigenvalue",
               "max_eigenvalue", "distance", "newton_steps"]
    page.table(rows, [c for c in columns if c in rows[0]] if rows else columns)
    page.heading("Configuration")
    page.code("\n".join(f"{key}: {value}" for key, value in sorted(config.items())))
    return page
