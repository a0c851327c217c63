"""The report page of a ``minimum-ratio`` study (Dauphin et al. 2014; the lecture's evidence).

Reads only the run directory: ``config.json``, ``summary.json`` and ``points.csv`` (one row
per network and variant: ``trained``, measured where training stopped, and ``refined``,
Newton-refined from there). Every statistic is over *distinct* critical points (merged up to
the network's symmetries; ``copies`` says how many raw points each stands for) and comes with
its 95 % interval (:mod:`descentlab.intervals`); a trend is stated only when its interval
excludes 0. The page sets the training loss against the minimum ratio, per variant and width,
and compares like with like: the Hessian of the unregularised training loss where training
stalled, the quantity the lecture names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from descentlab.intervals import Interval, bootstrap_interval, difference_interval, finding, mean_interval, \
    spearman_interval
from descentlab.report.html import Page
from descentlab.rundir import RunDir

__all__ = ["build", "statistics", "findings", "VARIANT_LABELS"]

#: How each variant is named on the page.
VARIANT_LABELS = {"trained": "trained points (where training stopped, as they are)",
                  "refined": "Newton-refined points (the critical point Newton finds from there)"}
_NOT_CRITICAL = ("not critical", "gradient-flat", "not converged", "diverged")
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _rows(run: RunDir) -> list[dict]:
    rows = []
    for r in run.read_csv("points.csv"):
        row = dict(r)
        for key in ("loss", "start_loss", "grad_norm", "gradient_flat", "minimum_ratio", "min_eigenvalue",
                    "max_eigenvalue", "distance", "lr"):
            row[key] = float(row[key]) if row.get(key, "") != "" else math.nan
        for key in ("index", "width", "n_positive", "n_negative", "n_zero", "newton_steps", "group", "copies"):
            row[key] = int(row[key])
        rows.append(row)
    return rows


def _share(flags: Sequence[bool]) -> Interval:
    """A share with its percentile-bootstrap interval (seeded)."""
    return bootstrap_interval([float(f) for f in flags], lambda xs: sum(xs) / len(xs) if xs else math.nan)


def statistics(rows: Sequence[Mapping[str, Any]], variant: str) -> dict[str, Any]:
    """The numbers the page states about one variant: counts, the share left out (not critical),
    distinct critical points and their multiplicities, the share of strict minima, the mean
    minimum ratio, and Spearman's rho of the ratio against the loss (pooled and per width), each
    with its 95 % interval. Empty when the variant has no rows."""
    points = [r for r in rows if r["variant"] == variant]
    if not points:
        return {}
    critical = [r for r in points if r["status"] == "critical"]
    distinct = [r for r in critical if r["copies"] > 0]
    widths = sorted({r["width"] for r in points})
    per_width = {}
    for width in widths:
        mine = [r for r in distinct if r["width"] == width]
        per_width[width] = {"points": sum(r["width"] == width for r in points),
                            "critical": sum(r["width"] == width for r in critical), "distinct": len(mine),
                            "rho": spearman_interval([r["loss"] for r in mine], [r["minimum_ratio"] for r in mine])}
    return {
        "points": len(points),
        "statuses": {s: sum(r["status"] == s for r in points) for s in ("critical", *_NOT_CRITICAL)
                     if any(r["status"] == s for r in points)},
        "critical": len(critical),
        "left_out": _share([r["status"] != "critical" for r in points]),
        "distinct": len(distinct),
        "largest_group": max((r["copies"] for r in distinct), default=0),
        "strict_minima": sum(r["minimum_ratio"] == 1.0 for r in distinct),
        "minima_share": _share([r["minimum_ratio"] == 1.0 for r in distinct]),
        "ratio": mean_interval([r["minimum_ratio"] for r in distinct]),
        "ratio_range": (min((r["minimum_ratio"] for r in distinct), default=math.nan),
                        max((r["minimum_ratio"] for r in distinct), default=math.nan)),
        "loss_range": (min((r["loss"] for r in distinct), default=math.nan),
                       max((r["loss"] for r in distinct), default=math.nan)),
        "rho": spearman_interval([r["loss"] for r in distinct], [r["minimum_ratio"] for r in distinct]),
        "per_width": per_width,
    }


def _refinement(rows: Sequence[Mapping[str, Any]]) -> tuple[Interval, Interval] | None:
    """Refined minus trained minimum ratio, paired over the networks critical in both variants,
    and the distance Newton moved every refined critical point (its median with a bootstrap interval)."""
    trained = {(r["width"], r["index"]): r for r in rows if r["variant"] == "trained" and r["status"] == "critical"}
    refined = {(r["width"], r["index"]): r for r in rows if r["variant"] == "refined" and r["status"] == "critical"}
    both = sorted(set(trained) & set(refined))
    if not refined:
        return None
    change = difference_interval([refined[k]["minimum_ratio"] for k in both],
                                 [trained[k]["minimum_ratio"] for k in both], paired=True)

    def median(xs: Sequence[float]) -> float:
        ordered = sorted(xs)
        return ordered[len(ordered) // 2] if len(ordered) % 2 else 0.5 * (ordered[len(ordered) // 2 - 1]
                                                                          + ordered[len(ordered) // 2])

    moved = bootstrap_interval([r["distance"] for r in refined.values()], median)
    return change, moved


def _trend(rho: Interval, points: Sequence[Mapping[str, Any]], what: str) -> str:
    """:func:`~descentlab.intervals.finding` for a rank correlation, or why there is none."""
    ratios = {r["minimum_ratio"] for r in points}
    if len(points) < 3:
        return f"{what}: fewer than 3 distinct points, no rank correlation."
    if len(ratios) == 1:
        return f"{what}: every minimum ratio is {ratios.pop():.3f}, no rank correlation to state."
    return finding(rho, what)


def findings(rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> list[str]:
    """The study's results, one sentence each, every number from ``rows`` with its interval; a trend
    is stated only when its interval excludes 0 (:func:`descentlab.intervals.finding`)."""
    out = []
    tolerances = {"trained": config.get("grad_tol"), "refined": config.get("newton_tol")}
    for variant in ("trained", "refined"):
        stats = statistics(rows, variant)
        if not stats:
            continue
        others = ", ".join(f"{n} {s}" for s, n in stats["statuses"].items() if s != "critical")
        head = (f"{variant.capitalize()} points: {stats['critical']} of {stats['points']} critical "
                f"(||grad L|| <= {tolerances[variant]:g}); left out: {others or 'none'} "
                f"(share {stats['left_out'].text()})")
        if not stats["distinct"]:
            out.append(head + "; no critical point, so no finding about minimum ratios.")
            continue
        low, high = stats["ratio_range"]
        out.append(
            f"{head}; up to symmetry they are {stats['distinct']} distinct "
            f"point{'s' if stats['distinct'] != 1 else ''} (the largest stands for "
            f"{stats['largest_group']} raw points), {stats['strict_minima']} of them strict minima (ratio 1; share "
            f"{stats['minima_share'].text()}); minimum ratio {low:.3f} to {high:.3f}, mean {stats['ratio'].text()}.")
        several = len(stats["per_width"]) > 1
        out.append(_trend(stats["rho"], [r for r in rows if r["variant"] == variant and r["copies"] > 0],
                          f"{variant.capitalize()}, " + ("all widths pooled (network sizes mixed: the like-with-like "
                                                         "trend is within one width)" if several else "all points")
                          + ": Spearman rho of minimum ratio on training loss (against 0)"))
        for width, numbers in stats["per_width"].items() if several else ():
            if numbers["distinct"] >= 3:
                mine = [r for r in rows if r["variant"] == variant and r["copies"] > 0 and r["width"] == width]
                out.append(_trend(numbers["rho"], mine, f"{variant.capitalize()}, width {width} "
                                                        f"({numbers['distinct']} distinct): Spearman rho"))
    refinement = _refinement(rows)
    if refinement is not None:
        change, moved = refinement
        if change.n:
            out.append(finding(change, "Minimum ratio, refined minus trained, same networks (paired)"))
        out.append(f"Newton moved each refined critical point a median {moved.text()} (parameter units) from where "
                   "training stopped.")
    return out


def _data_used(config: Mapping[str, Any]) -> str:
    samples = config.get("samples")
    if samples:
        return f"a seeded subset of at most {samples} training points (training, search and spectra alike)"
    return "the whole training set"


def _scatter(rows: Sequence[Mapping[str, Any]]):
    import matplotlib.pyplot as plt

    variants = [v for v in ("trained", "refined") if any(r["variant"] == v for r in rows)]
    widths = sorted({r["width"] for r in rows})
    fig, axes = plt.subplots(1, len(variants), figsize=(6.2 * len(variants), 4.6), squeeze=False, sharey=True)
    for ax, variant in zip(axes[0], variants):
        for colour, width in zip(_COLOURS * 4, widths):
            mine = [r for r in rows if r["variant"] == variant and r["width"] == width]
            distinct = [r for r in mine if r["copies"] > 0]
            left = [r for r in mine if r["status"] != "critical" and math.isfinite(r["loss"])]
            if distinct:
                ax.scatter([r["minimum_ratio"] for r in distinct], [r["loss"] for r in distinct],
                           s=[18 + 10 * math.sqrt(r["copies"]) for r in distinct], color=colour, alpha=0.8,
                           label=f"width {width}: {len(distinct)} distinct")
            if left:
                ax.scatter([r["minimum_ratio"] for r in left], [r["loss"] for r in left], marker="x", s=16,
                           color=colour, alpha=0.35)
        ax.set_yscale("log")
        ax.set_xlim(-0.02, 1.02)
        ax.axvline(1.0, color="#444", lw=0.8, ls=":")
        ax.set_xlabel("minimum ratio (fraction of positive eigenvalues of the Hessian of L)")
        ax.set_title(variant, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[0, 0].set_ylabel("training loss L")
    fig.tight_layout()
    return fig


def _histogram(rows: Sequence[Mapping[str, Any]]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for variant, colour in (("trained", "#2f7bd8"), ("refined", "#e3822b")):
        ratios = [r["minimum_ratio"] for r in rows if r["variant"] == variant and r["copies"] > 0]
        if ratios:
            ax.hist(ratios, bins=[i / 40 for i in range(41)], color=colour, alpha=0.6, label=variant,
                    edgecolor="white")
    ax.set_xlabel("minimum ratio")
    ax.set_ylabel("distinct critical points")
    ax.legend(fontsize=8)
    return fig


def _summary_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for variant in ("trained", "refined"):
        stats = statistics(rows, variant)
        for width, numbers in stats.get("per_width", {}).items():
            mine = [r for r in rows if r["variant"] == variant and r["width"] == width and r["copies"] > 0]
            table.append({"variant": variant, "width": width, "points": numbers["points"],
                          "critical": numbers["critical"], "distinct": numbers["distinct"],
                          "copies": " ".join(str(r["copies"]) for r in sorted(mine, key=lambda r: -r["copies"])),
                          "strict minima": sum(r["minimum_ratio"] == 1.0 for r in mine),
                          "mean ratio [95 %]": mean_interval([r["minimum_ratio"] for r in mine]).text(),
                          "Spearman rho [95 %]": numbers["rho"].text(2)})
    return table


def build(run: RunDir) -> Page:
    """The minimum-ratio page of ``run``."""
    config = run.config
    summary = run.read_json("summary.json")
    rows = _rows(run)
    page = Page(f"minimum-ratio study: {summary.get('workload', '')}")
    models = summary.get("models", {})
    n_params = summary.get("n_params", {})
    described = ", ".join(f"{models.get(str(w), w)} ({n_params.get(str(w))} parameters)"
                          for w in sorted({r["width"] for r in rows}))
    trained = int(config.get("train_steps", 0))
    decay = float(config.get("weight_decay") or 0.0)
    page.paragraph(
        f"{config.get('networks')} networks of each kind ({described}) were "
        + (f"trained for {trained} steps of {config.get('optimizer')} on {_data_used(config)}, each with its own seed "
           "and learning rate" if trained else f"left at their initial weights (scaled by {config.get('init_scale')})")
        + (f", with an L2 weight decay of {decay:g} in training only" if decay else "")
        + ". Every measurement is of the training loss L itself, without any L2 term: at each point its gradient, its "
        "exact Hessian and all the Hessian's eigenvalues. Two variants, never mixed: the trained point as it is "
        f"(critical when ||grad L|| <= {config.get('grad_tol')}), and the critical point that Newton-type iterations "
        "on grad L = 0 (a trust-region Levenberg-Marquardt method, the Newton step whenever it fits) reach from it "
        f"(critical when ||grad L|| <= {config.get('newton_tol')}). Critical points that are the same point up to "
        "the network's symmetries are merged; every statistic below is over distinct points, with its 95 % interval.")
    page.finding(" ".join(findings(rows, config)))
    symmetries = summary.get("symmetries", {})
    if symmetries:
        page.paragraph("Symmetries merged: " + "; ".join(f"width {w}: {s}" for w, s in symmetries.items())
                       + f" (within {config.get('merge_tol')} x max(1, ||theta||) after the best match of units).")
    page.paragraph(
        "The lecture's claim, compared like with like: networks trained until the gradient is tiny sit at points whose "
        "Hessian (of the training loss) has a minimum ratio well below 1 (about 0.5-0.6), and true local minima are "
        "almost never found; Dauphin et al. (2014) add that the higher the loss, the more negative directions. The "
        "trained variant measures exactly that quantity at the points where these small networks' training stalled. "
        "The networks here have tens of parameters, the lecture's many thousands: the comparison is of the trend and "
        "of whether minima are found, not of the level of the ratio.")
    page.heading("Per variant and width")
    page.table(_summary_table(rows))
    page.paragraph("copies: how many raw points each distinct critical point stands for, largest first. The rho "
                   "interval is a percentile bootstrap over the distinct points.")
    page.heading("Loss against minimum ratio")
    page.figure(_scatter(rows), "Distinct critical points (size grows with their copies), by width; crosses: points "
                "left out (not critical), drawn faintly, not part of any statistic.", save_to=run.file("scatter.png"))
    page.heading("Histogram of minimum ratios")
    page.figure(_histogram(rows), "Distinct critical points of each variant.", save_to=run.file("histogram.png"))
    page.heading("Every point")
    columns = ["variant", "width", "index", "lr", "start_loss", "loss", "grad_norm", "gradient_flat", "status",
               "kind", "minimum_ratio", "n_positive", "n_negative", "n_zero", "min_eigenvalue", "max_eigenvalue",
               "distance", "newton_steps", "group", "copies"]
    page.table(rows, [c for c in columns if not rows or c in rows[0]])
    page.heading("Configuration")
    page.code("\n".join(f"{key}: {value}" for key, value in sorted(config.items())))
    return page
